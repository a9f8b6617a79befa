"""Hostile calls to the criteria, evaluations and choosers: each gives a correct answer or a clear error, and the
caller's model and data are left as they were."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import VOCAB, tiny_inputs, tiny_model
from tiny_tokenizer import tiny_tokenizer

from helpers.benefits import greedy_decode, time_variants
from helpers.classification import sms_accuracy
from helpers.data import SMS_FILE, load_sms
from helpers.data_criteria import ppl_by_sample, ppl_scores, sleb_removal, taylor_scores
from helpers.generation import greedy_continuation
from helpers.lab import blocks_for_speedup, relative_update_scores
from helpers.perplexity import perplexity
from helpers.selection import select_blocks
from helpers.settings import DATA_ENV
from helpers.ties import tie_groups
from helpers.widgets import BlockChooser, LivePanel, block_explorer, importance_colours

TEXTS = ["hi see you at home later", "free cash now", "ok love you", "win a prize now call to claim"]
SCORES = pd.Series([3.0, 1.0, 4.0, 1.5, 9.0, 2.0], index=pd.RangeIndex(6, name="block"))


def padded(tokenizer, texts: list[str], side: str) -> list[dict[str, torch.Tensor]]:
    """One batch of ``texts`` padded on ``side`` by the tokenizer itself."""
    tokenizer.padding_side = side
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return [{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}]


CRITERIA = {
    "ppl": lambda model, batches: ppl_scores(model, batches, progress=False),
    "ppl naive": lambda model, batches: ppl_scores(model, batches, cached=False, progress=False),
    "taylor": lambda model, batches: taylor_scores(model, batches, progress=False),
    "sleb": lambda model, batches: sleb_removal(model, batches, 2, progress=False).astype(float),
}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_left_padding_gives_the_scores_of_right_padding_and_of_samples_alone(family, criterion):
    """Case 3: left-padded batches give the PPL, Taylor and SLEB scores of right-padded ones and of samples alone."""
    model, tokenizer = tiny_model(family), tiny_tokenizer()
    score = CRITERIA[criterion]
    left, right = padded(tokenizer, TEXTS, "left"), padded(tokenizer, TEXTS, "right")
    assert (left[0]["attention_mask"][:, 0] == 0).any()  # really left-padded
    alone = [padded(tokenizer, [text], "right")[0] for text in TEXTS]  # no padding at all
    given = {name: tensor.clone() for name, tensor in left[0].items()}
    by_left, by_right, by_alone = (np.asarray(score(model, b), dtype=float) for b in (left, right, alone))
    assert all(torch.equal(left[0][name], tensor) for name, tensor in given.items())  # the caller's batch is kept
    np.testing.assert_allclose(by_left, by_right, rtol=1e-6)
    np.testing.assert_allclose(by_right, by_alone, rtol=1e-4)


def test_left_padding_gives_each_sample_its_own_ppl_sums():
    """Case 3: the PPL criterion kept per sample gives each left-padded sample the NLL it has alone."""
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    alone = [ppl_by_sample(model, padded(tokenizer, [text], "right"), progress=False).sums for text in TEXTS]
    left = ppl_by_sample(model, padded(tokenizer, TEXTS, "left"), progress=False).sums
    np.testing.assert_allclose(left.to_numpy(), np.vstack([sums.to_numpy() for sums in alone]), rtol=1e-5)


@pytest.fixture
def dropout_model():
    """A tiny GPT-2 with dropout 0.5 everywhere, in train mode; its train-mode logits really are random."""
    model = tiny_model("gpt2")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    model.train()
    inputs = tiny_inputs()
    with torch.no_grad():
        assert not torch.equal(model(**inputs).logits, model(**inputs).logits)
    return model


SMS = pd.DataFrame({"text": TEXTS, "label": ["ham", "spam", "ham", "spam"]})
EVALUATIONS = {
    "perplexity": lambda m, tok: perplexity(m, tok, TEXTS * 3, seq_len=8, progress=False).window_nll,
    "sms_accuracy": lambda m, tok: sms_accuracy(m, tok, SMS, progress=False).scores.to_numpy(),
    "ppl": lambda m, tok: ppl_scores(m, padded(tok, TEXTS, "right"), progress=False).to_numpy(),
    "taylor": lambda m, tok: taylor_scores(m, padded(tok, TEXTS, "right"), progress=False).to_numpy(),
    "sleb": lambda m, tok: sleb_removal(m, padded(tok, TEXTS, "right"), 2, progress=False).to_numpy(float),
    "greedy_decode": lambda m, tok: greedy_decode(m, torch.tensor([[5, 9, 14, 20]]), 8)[0].numpy(),
    "greedy_continuation": lambda m, tok: greedy_continuation(m, tok, "hi see you", 8),
}


@pytest.mark.parametrize("evaluation", list(EVALUATIONS))
def test_train_mode_model_is_evaluated_in_eval_mode_and_left_in_train_mode(dropout_model, evaluation):
    """Case 7: every evaluation and criterion runs a train-mode model in eval mode and restores its mode."""
    tokenizer = tiny_tokenizer()
    result = EVALUATIONS[evaluation](dropout_model, tokenizer)
    assert dropout_model.training and all(module.training for module in dropout_model.modules())
    expected = EVALUATIONS[evaluation](dropout_model.eval(), tokenizer)
    np.testing.assert_array_equal(result, expected)


def test_time_variants_leaves_a_train_mode_model_in_train_mode(dropout_model):
    """Case 7: time_variants times the model in eval mode and restores its train mode."""
    time_variants(dropout_model, tiny_tokenizer(), {"full": []}, prompt_tokens=4, new_tokens=2, repetitions=1, warmup=0)
    assert dropout_model.training


def test_relative_update_scores_names_the_blocks_that_are_not_finite():
    """Case 12a: relative_update_scores raises naming the NaN blocks instead of returning NaN."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"block\(s\) \[2, 3, 4, 5\]"):
        relative_update_scores(model, [tiny_inputs()])


@pytest.mark.parametrize("bad", [None, 3.0])
def test_sms_accuracy_refuses_texts_that_are_not_strings(bad):
    """Case 13: sms_accuracy refuses a message that is not a string, naming its index."""
    frame = pd.DataFrame({"text": ["hi", bad, "ok"], "label": ["ham", "spam", "ham"]}, index=[10, 11, 12])
    before = frame.copy()
    with pytest.raises(TypeError, match=r"index 11.*must be strings"):
        sms_accuracy(tiny_model("llama"), tiny_tokenizer(), frame, progress=False)
    pd.testing.assert_frame_equal(frame, before)


def test_sms_loader_refuses_a_line_with_more_than_one_tab(monkeypatch, tmp_path):
    """Case 13: a 3-column SMS file is refused with the line number and the format label<TAB>message."""
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    (tmp_path / SMS_FILE).parent.mkdir(parents=True)
    (tmp_path / SMS_FILE).write_text("ham\tfine\nspam\tWIN now\textra field\nham\tok\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: expected 'label<TAB>message' with exactly one tab"):
        load_sms("all", source="local")


@pytest.mark.parametrize(
    "call",
    [
        lambda direction: select_blocks(SCORES, 2, higher_is_important=direction),
        lambda direction: importance_colours(SCORES, higher_is_important=direction),
        lambda direction: BlockChooser(SCORES, higher_is_important=direction),
        lambda direction: BlockChooser(SCORES.to_frame("taylor"), higher_is_important={"taylor": direction}),
    ],
    ids=["select_blocks", "importance_colours", "BlockChooser", "BlockChooser mapping"],
)
@pytest.mark.parametrize("direction", ["no", 0, None])
def test_higher_is_important_must_be_a_bool(call, direction):
    """Case 14: higher_is_important="no" (truthy) or 0 is refused; it must be True or False."""
    with pytest.raises(TypeError, match="higher_is_important must be True or False"):
        call(direction)


@pytest.mark.parametrize(
    "values, groups",
    [
        ([1.0, math.inf], [0, 1]),
        ([-math.inf, -1.0], [0, 1]),
        ([math.inf, 1.0, math.inf, 1.0005], [1, 0, 1, 0]),
        ([-math.inf, 0.0, -math.inf], [0, 1, 0]),
    ],
)
def test_tie_groups_keep_infinite_scores_apart_from_finite_ones(values, groups):
    """Case 14: tie_groups never ties an infinite score with a finite one (equal infinities tie)."""
    assert tie_groups(pd.Series(values)).tolist() == groups


def test_tie_groups_refuse_nan():
    """Case 14: tie_groups refuses NaN, naming its label."""
    with pytest.raises(ValueError, match=r"NaN for \[1\]"):
        tie_groups(pd.Series([1.0, math.nan]))


def test_taylor_refuses_weights_scaled_beyond_float32():
    """Case 14: weights scaled by 1e30 (a norm overflows, every gradient is 0) raise instead of Taylor all 0."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1e30)
    with pytest.raises(FloatingPointError, match=r"every Taylor score is 0.*model\.embed_tokens\.weight"):
        taylor_scores(model, [tiny_inputs()], progress=False)


@pytest.mark.parametrize(
    "call",
    [
        lambda model: time_variants(model, tiny_tokenizer(), {"full": []}, prompt_tokens=120, new_tokens=9),
        lambda model: greedy_decode(model, torch.randint(3, VOCAB, (1, 128)), 2),
    ],
    ids=["time_variants", "greedy_decode"],
)
def test_latency_refuses_more_tokens_than_the_model_has_positions(call):
    """Case 14: time_variants refuses prompt + new tokens beyond max_position_embeddings (128 here)."""
    with pytest.raises(ValueError, match=r"longer than the 128 positions the model was built for.*at most 128"):
        call(tiny_model("llama"))


@pytest.mark.parametrize(
    "build",
    [
        lambda model, chooser: LivePanel(model, {}, chooser=chooser),
        lambda model, chooser: block_explorer(model, tiny_tokenizer(), chooser.scores, TEXTS, SMS),
    ],
    ids=["LivePanel", "block_explorer"],
)
def test_block_chooser_must_cover_the_models_blocks(build):
    """Case 14: a chooser over 4 blocks wired to a 6-block model is refused (its blocks would be other blocks)."""
    chooser = BlockChooser(SCORES.iloc[:4])
    with pytest.raises(ValueError, match=r"4 blocks.*the model has 6"):
        build(tiny_model("llama"), chooser)


def test_blocks_for_speedup_says_which_targets_are_reachable():
    """Case 14: an unreachable target says so and gives the largest reachable speedup, not 'cannot remove all'."""
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=r"target=100.0 cannot be reached.*removing 5 of the 6 blocks.*choose a"):
        blocks_for_speedup(model, SCORES, 100.0)
    with pytest.raises(TypeError, match=r"target must be a number above 1"):
        blocks_for_speedup(model, SCORES, "2")


@pytest.mark.parametrize("prompt, error", [("", ValueError), (None, TypeError)])
def test_greedy_continuation_refuses_an_empty_prompt(prompt, error):
    """Case 14: greedy_continuation("") (or a prompt that is not a string) raises a clear error."""
    with pytest.raises(error, match="prompt must be a non-empty string"):
        greedy_continuation(tiny_model("llama"), tiny_tokenizer(), prompt)
