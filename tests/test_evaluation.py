"""Perplexity and SMS accuracy against naive by-hand computations on a tiny model and a tiny tokenizer."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_model
from tiny_tokenizer import WORDS, tiny_tokenizer

from helpers.classification import draw_shots, sms_accuracy
from helpers.perplexity import (
    _JOINED_IDS,
    IGNORE,
    JOINED_IDS_KEPT,
    adds_bos,
    joined_ids,
    next_token_nll,
    perplexity,
    token_nll,
)
from helpers.pruning import prune_blocks, skip_blocks

TEXT_WORDS = [w for w in WORDS if not w.startswith("##")]


def sentences(n: int, seed: int = 0, length: tuple[int, int] = (3, 12)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(TEXT_WORDS, k=rng.randint(*length))) for _ in range(n)]


def log_probs(model, ids: list[int]) -> torch.Tensor:
    """Row t = log-probabilities of the token after position t, for one unpadded sequence."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)


def window_nll(model, ids: list[int], scored: range) -> float:
    """Sum of -log p(ids[t] | ids[:t]) over the positions t in ``scored``."""
    lp = log_probs(model, ids)
    return -sum(lp[t - 1, ids[t]].item() for t in scored)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def texts():
    return sentences(24)


# --- perplexity -------------------------------------------------------------------------------------------------


def test_next_token_nll_scores_each_label_from_the_position_before_it():
    # A vocabulary of 3 with exp(logits) = 1, 2, 3 at every position: probabilities 1/6, 2/6, 3/6.
    logits = torch.log(torch.tensor([1.0, 2.0, 3.0])).expand(2, 4, 3)
    labels = torch.tensor([[0, 2, IGNORE, 1], [1, 0, 0, IGNORE]])
    expected = torch.tensor([[math.log(2), 0.0, math.log(3)], [math.log(6), math.log(6), 0.0]])
    torch.testing.assert_close(next_token_nll(logits, labels), expected)
    torch.testing.assert_close(next_token_nll(logits, labels, "sum"), expected.sum())
    torch.testing.assert_close(next_token_nll(logits, labels, "mean"), expected.sum() / 4)  # 4 scored tokens
    # token_nll lines logits and targets up as given: no shift.
    torch.testing.assert_close(
        token_nll(logits[0], torch.tensor([2, 1, IGNORE, 0])),
        torch.tensor([math.log(2), math.log(3), 0.0, math.log(6)]),
    )


def test_non_overlapping_windows_match_a_naive_loop(model, texts):
    tok = tiny_tokenizer()
    ids = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    seq_len = 16
    expected = [window_nll(model, ids[s : s + seq_len], range(1, seq_len)) for s in range(0, len(ids) - 15, seq_len)]

    result = perplexity(model, tok, texts, seq_len=seq_len, batch_size=3, progress=False)

    assert len(expected) == len(ids) // seq_len  # the ragged tail is dropped
    np.testing.assert_allclose(result.window_nll, expected, rtol=1e-5)
    assert list(result.window_tokens) == [seq_len - 1] * len(expected)
    assert result.n_tokens == (seq_len - 1) * len(expected)
    assert result.nll == pytest.approx(sum(expected) / result.n_tokens, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(sum(expected) / result.n_tokens), rel=1e-5)

    first = perplexity(model, tok, texts, seq_len=seq_len, max_windows=2, progress=False)
    np.testing.assert_allclose(first.window_nll, expected[:2], rtol=1e-5)


def test_joined_ids_are_kept_per_tokenizer_and_handed_out_as_copies(texts):
    tok = tiny_tokenizer()
    expected = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]

    first = joined_ids(tok, texts)
    first[:] = 0  # the caller's copy: the kept ids must not change
    assert joined_ids(tok, texts).tolist() == expected
    assert joined_ids(tok, texts[:3]).tolist() == tok("\n\n".join(texts[:3]), add_special_tokens=False)["input_ids"]

    for n in range(4, 4 + JOINED_IDS_KEPT):
        joined_ids(tok, texts[:n])
    assert len(_JOINED_IDS[tok]) == JOINED_IDS_KEPT  # bounded: the oldest text sets were dropped

    tok.add_tokens(["zqzq"])  # a tokenizer that gains a token reads the same texts differently
    grown = [texts[0] + " zqzq", *texts[1:]]
    assert joined_ids(tok, grown).tolist() == tok("\n\n".join(grown), add_special_tokens=False)["input_ids"]
    assert len(tok) - 1 in joined_ids(tok, grown).tolist()


def test_sliding_window_scores_each_token_once_with_extra_context(model, texts):
    tok = tiny_tokenizer()
    texts = texts[:12]
    ids = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    seq_len, stride = 16, 6
    # The classic loop: each window scores the tokens after the previous window's end.
    expected, previous_end = [], 0
    for begin in range(0, len(ids) - seq_len + 1, stride):
        end = begin + seq_len
        new = end - previous_end
        expected.append(window_nll(model, ids[begin:end], range(max(1, seq_len - new), seq_len)))
        previous_end = end

    result = perplexity(model, tok, texts, seq_len=seq_len, stride=stride, batch_size=4, progress=False)

    np.testing.assert_allclose(result.window_nll, expected, rtol=1e-5)
    assert list(result.window_tokens) == [seq_len - 1] + [stride] * (len(expected) - 1)
    assert result.n_tokens == previous_end - 1  # every token but the very first, once


def test_bos_tokenizer_gets_bos_in_front_of_every_window(model, texts):
    tok = tiny_tokenizer(add_bos=True)
    assert adds_bos(tok) and not adds_bos(tiny_tokenizer())
    ids = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    seq_len, span = 12, 11
    expected = [
        window_nll(model, [tok.bos_token_id] + ids[s : s + span], range(1, seq_len))
        for s in range(0, len(ids) - span + 1, span)
    ]

    result = perplexity(model, tok, texts, seq_len=seq_len, progress=False)

    np.testing.assert_allclose(result.window_nll, expected, rtol=1e-5)
    assert list(result.window_tokens) == [span] * len(expected)  # all text tokens are scored


def test_skipping_blocks_gives_the_perplexity_of_the_pruned_copy(model, texts):
    tok = tiny_tokenizer()
    with skip_blocks(model, [1, 4]):
        skipped = perplexity(model, tok, texts, seq_len=16, progress=False)
    pruned = perplexity(prune_blocks(model, [1, 4]), tok, texts, seq_len=16, progress=False)
    full = perplexity(model, tok, texts, seq_len=16, progress=False)

    np.testing.assert_array_equal(skipped.window_nll, pruned.window_nll)
    assert full.ppl != pruned.ppl


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seq_len=1), "seq_len"),
        (dict(seq_len=16, stride=17), "stride"),
        (dict(seq_len=16, stride=0), "stride"),
        (dict(max_windows=0), "max_windows"),
        (dict(batch_size=0), "batch_size"),
        (dict(seq_len=129), r"seq_len=129 is longer than the 128 positions the model was built for"),
    ],
)
def test_perplexity_rejects_bad_arguments(model, texts, kwargs, message):
    with pytest.raises(ValueError, match=message):
        perplexity(model, tiny_tokenizer(), texts, progress=False, **kwargs)
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, tiny_tokenizer(), texts[:1], seq_len=64, progress=False)


@pytest.mark.parametrize("kwargs", [dict(seq_len=2.5), dict(stride=1.5), dict(max_windows="2"), dict(batch_size=2.0)])
def test_perplexity_rejects_wrong_types(model, texts, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(TypeError, match=rf"{name} must be an integer"):
        perplexity(model, tiny_tokenizer(), texts, progress=False, **kwargs)


def broken_model(block: int = 2):
    """The tiny llama with NaN weights in one block: every pass through that block gives NaN."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[block].mlp.down_proj.weight.fill_(float("nan"))
    return model


def test_nan_in_a_block_is_named_by_perplexity_and_sms_accuracy(texts):
    model, tok = broken_model(), tiny_tokenizer()
    with pytest.raises(FloatingPointError, match=r"perplexity is not finite: .* first produced by block 2\."):
        perplexity(model, tok, texts, seq_len=16, progress=False)
    frame, examples = sms_frame(4, seed=1), sms_frame(30, seed=3)
    for decision in ("argmax", "prior"):
        with pytest.raises(FloatingPointError, match=r"label scores of 4 message\(s\) is not finite: .* block 2\."):
            sms_accuracy(model, tok, frame, shots=2, examples=examples, decision=decision, progress=False)


def test_perplexity_rejects_a_single_string(model):
    with pytest.raises(TypeError, match="list of strings, not one string"):
        perplexity(model, tiny_tokenizer(), "one long text", progress=False)


# --- SMS accuracy -------------------------------------------------------------------------------------------------


def sms_frame(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    labels = ["spam" if rng.random() < 0.3 else "ham" for _ in range(n)]
    return pd.DataFrame({"text": sentences(n, seed, length=(1, 9)), "label": labels})


def label_log_likelihood(model, tok, prompt: str, label: str) -> float:
    context = tok(prompt)["input_ids"]
    continuation = tok(" " + label, add_special_tokens=False)["input_ids"]
    lp = log_probs(model, context + continuation)
    return sum(lp[len(context) - 1 + k, token].item() for k, token in enumerate(continuation))


def hand_prompt(text: str) -> str:
    return f"Message: {text}\nIs this message spam or ham?\nAnswer:"


@pytest.mark.parametrize("family, add_bos", [("llama", False), ("llama", True), ("gpt2", False)])
def test_zero_shot_scores_match_a_by_hand_log_likelihood(family, add_bos):
    model, tok, frame = tiny_model(family), tiny_tokenizer(add_bos), sms_frame(7, seed=1)
    assert len(tok(" spam", add_special_tokens=False)["input_ids"]) == 2  # labels of different lengths

    result = sms_accuracy(model, tok, frame, batch_size=3, progress=False)

    expected = pd.DataFrame(
        [[label_log_likelihood(model, tok, hand_prompt(t), y) for y in ("ham", "spam")] for t in frame["text"]],
        columns=["ham", "spam"],
    )
    np.testing.assert_allclose(result.scores.to_numpy(), expected.to_numpy(), rtol=1e-5)
    predicted = np.where(expected["spam"] > expected["ham"], "spam", "ham")
    assert list(result.predictions) == list(predicted)
    assert list(result.correct) == list(predicted == frame["label"])
    assert result.accuracy == pytest.approx(np.mean(predicted == frame["label"]))
    shares = frame["label"].value_counts(normalize=True)
    assert result.baseline == pytest.approx(shares.max()) and result.majority_label == shares.idxmax()


def test_prior_decision_and_auc_follow_the_score_differences():
    model, tok, frame = tiny_model("llama"), tiny_tokenizer(), sms_frame(12, seed=7)
    examples = pd.DataFrame({"text": ["x"] * 4, "label": ["spam", "ham", "ham", "ham"]})  # spam share 1/4

    result = sms_accuracy(model, tok, frame, examples=examples, decision="prior", batch_size=5, progress=False)

    prompts = [hand_prompt(t) for t in frame["text"]]
    difference = [
        label_log_likelihood(model, tok, p, "spam") - label_log_likelihood(model, tok, p, "ham") for p in prompts
    ]
    top3 = sorted(range(12), key=lambda i: -difference[i])[:3]  # 1/4 of 12 messages are called spam
    assert list(result.predictions) == ["spam" if i in top3 else "ham" for i in range(12)]
    spam = [d for d, y in zip(difference, frame["label"]) if y == "spam"]
    ham = [d for d, y in zip(difference, frame["label"]) if y == "ham"]
    pairs = [(s > h) + 0.5 * (s == h) for s in spam for h in ham]
    assert result.auc == pytest.approx(sum(pairs) / len(pairs))


def test_few_shot_prompts_hold_balanced_solved_examples_from_the_other_frame(model):
    tok, frame, examples = tiny_tokenizer(), sms_frame(4, seed=2), sms_frame(30, seed=3)
    examples = pd.concat([examples, frame.iloc[:2]], ignore_index=True)  # texts also in the evaluated frame

    result = sms_accuracy(model, tok, frame, shots=3, examples=examples, progress=False)

    shots = result.shots
    assert sorted(shots["label"]) == ["ham", "ham", "spam"]
    assert shots["text"].isin(examples["text"]).all() and not shots["text"].isin(frame["text"]).any()

    again = sms_accuracy(model, tok, frame, shots=3, examples=examples, progress=False)
    pd.testing.assert_frame_equal(again.shots, shots)


def solved_examples(shots: pd.DataFrame) -> str:
    return "".join(
        f"Message: {t}\nIs this message spam or ham?\nAnswer: {y}\n\n" for t, y in zip(shots["text"], shots["label"])
    )


def few_shot_by_hand(model, tok, frame: pd.DataFrame, shots: pd.DataFrame) -> np.ndarray:
    """Label log-likelihoods after each full few-shot prompt, one unpadded sequence at a time, no cache."""
    solved = solved_examples(shots)
    return np.array(
        [[label_log_likelihood(model, tok, solved + hand_prompt(t), y) for y in ("ham", "spam")] for t in frame["text"]]
    )


def forward_widths(model) -> tuple[list[tuple[int, int]], object]:
    """Record the (batch, length) of the token ids of every forward call; returns the list and the hook handle."""
    shapes: list[tuple[int, int]] = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: shapes.append(args[0].shape))
    return shapes, handle


# gemma2's sliding window (5 tokens) is far shorter than the prompts, so its cache keeps only the last tokens.
@pytest.mark.parametrize(
    "family, add_bos, reuse_prefix",
    [
        ("llama", False, True),
        ("llama", True, True),
        ("gpt2", False, True),
        ("gemma2", False, True),
        ("llama", False, False),
    ],
)
def test_few_shot_scores_with_the_cached_prefix_equal_full_prompts(family, add_bos, reuse_prefix):
    model, tok = tiny_model(family), tiny_tokenizer(add_bos)
    frame, examples = sms_frame(7, seed=1), sms_frame(30, seed=3)  # 1 to 9 words: right-padded batches

    shapes, handle = forward_widths(model)
    try:
        result = sms_accuracy(
            model, tok, frame, shots=3, examples=examples, batch_size=3, reuse_prefix=reuse_prefix, progress=False
        )
    finally:
        handle.remove()

    np.testing.assert_allclose(result.scores.to_numpy(), few_shot_by_hand(model, tok, frame, result.shots), atol=1e-4)
    n_solved = len(tok(solved_examples(result.shots))["input_ids"])
    assert n_solved > (getattr(model.config, "sliding_window", None) or 0)
    holding_the_shots = [shape for shape in shapes if shape[1] >= n_solved]
    if reuse_prefix:  # the shared tokens run once, alone; the 14 rows (" spam" is two tokens) run without them
        assert shapes[0][0] == 1 and holding_the_shots == [shapes[0]]
        assert sum(rows for rows, _ in shapes[1:]) == 2 * len(frame)
    else:
        assert len(holding_the_shots) == len(shapes)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_cached_prefix_inside_skip_blocks_scores_the_pruned_model(family):
    model, tok = tiny_model(family), tiny_tokenizer()
    frame, examples = sms_frame(5, seed=8), sms_frame(30, seed=3)

    with skip_blocks(model, [1, 4]):
        result = sms_accuracy(model, tok, frame, shots=4, examples=examples, batch_size=4, progress=False)

    expected = few_shot_by_hand(prune_blocks(model, [1, 4]), tok, frame, result.shots)
    np.testing.assert_allclose(result.scores.to_numpy(), expected, atol=1e-4)
    assert not np.allclose(few_shot_by_hand(model, tok, frame, result.shots), expected, atol=1e-2)


def test_few_shot_examples_from_the_evaluated_frame_are_refused(model):
    frame = sms_frame(20, seed=4)
    with pytest.raises(ValueError, match="do not occur in the evaluated frame"):
        sms_accuracy(model, tiny_tokenizer(), frame, shots=2, examples=frame, progress=False)


def test_max_examples_evaluates_the_first_rows(model):
    frame = sms_frame(9, seed=5)
    result = sms_accuracy(model, tiny_tokenizer(), frame, max_examples=4, progress=False)
    assert list(result.predictions.index) == [0, 1, 2, 3] and len(result.correct) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shots=2), "need examples"),
        (dict(shots=-1), "shots"),
        (dict(max_examples=0), "max_examples"),
        (dict(batch_size=0), "batch_size"),
        (dict(decision="threshold"), "decision must be one of 'argmax', 'prior'; got 'threshold'"),
        (dict(decision="prior"), "spam share"),
    ],
)
def test_sms_accuracy_rejects_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sms_accuracy(model, tiny_tokenizer(), sms_frame(3, seed=6), progress=False, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shots=1.5), "shots must be an integer"),
        (dict(max_examples=2.0), "max_examples must be an integer"),
        (dict(batch_size="8"), "batch_size must be an integer"),
        (dict(decision=None), r"decision must be one of 'argmax', 'prior'; got None \(NoneType\)"),
    ],
)
def test_sms_accuracy_rejects_wrong_types(model, kwargs, message):
    with pytest.raises(TypeError, match=message):
        sms_accuracy(
            model, tiny_tokenizer(), sms_frame(3, seed=6), examples=sms_frame(20, seed=3), progress=False, **kwargs
        )


def test_prior_with_empty_examples_is_a_clear_value_error(model):
    empty = sms_frame(20, seed=3).iloc[:0]
    with pytest.raises(
        ValueError,
        match=r"decision='prior' reads the spam share from examples, but examples has no "
        r"rows",
    ):
        sms_accuracy(model, tiny_tokenizer(), sms_frame(3, seed=6), examples=empty, decision="prior", progress=False)


def test_draw_shots_checks_shots_like_sms_accuracy():
    examples, evaluated = sms_frame(20, seed=3), sms_frame(3, seed=6)
    assert len(draw_shots(examples, 0, exclude=evaluated)) == 0
    with pytest.raises(ValueError, match=r"^shots must be at least 0; got -1$"):
        draw_shots(examples, -1, exclude=evaluated)
    with pytest.raises(TypeError, match=r"^shots must be an integer; got 2\.0 \(float\)$"):
        draw_shots(examples, 2.0, exclude=evaluated)


def test_sms_accuracy_rejects_unknown_labels(model):
    frame = pd.DataFrame({"text": ["hi"], "label": ["junk"]})
    with pytest.raises(ValueError, match="valid labels"):
        sms_accuracy(model, tiny_tokenizer(), frame, progress=False)


@pytest.mark.slow
def test_course_tokenizer_adds_no_bos_and_labels_are_single_tokens():
    from helpers.model import load_model

    _, tok = load_model()
    assert not adds_bos(tok)
    assert [len(tok(f" {y}", add_special_tokens=False)["input_ids"]) for y in ("ham", "spam")] == [1, 1]
