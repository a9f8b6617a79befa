"""Task-format calibration batches, losses on labelled batches, per-sample criteria and the split-half noise
baseline, each checked against an independent computation on tiny random models."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from tiny_models import N_LAYERS, tiny_inputs, tiny_model
from tiny_tokenizer import tiny_tokenizer

from helpers.classification import draw_shots, sms_task_batches
from helpers.data import disjoint_draws
from helpers.data_criteria import (
    BEYOND_NOISE,
    WITHIN_NOISE,
    SampleScores,
    block_influence_by_sample,
    ppl_by_sample,
    ppl_positions,
    ppl_scores,
    resampling_verdict,
    split_half_agreement,
)
from helpers.pruning import prune_blocks
from helpers.similarity import block_similarity
from helpers.statistics import MIN_UNITS, TOO_FEW

WORDS = ["hi", "see", "you", "at", "home", "later", "free", "cash", "prize", "call", "now", "win", "txt", "claim"]


def sms_frame(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7))) + f" {i}" for i in range(n)]
    labels = ["spam" if rng.random() < 0.4 else "ham" for _ in range(n)]
    return pd.DataFrame({"text": texts, "label": labels})


def hand_prompt(text: str, shots: pd.DataFrame) -> str:
    solved = "".join(f"Message: {t}\nIs this message spam or ham?\nAnswer: {y}\n\n" for t, y in zip(*shots.T.values))
    return solved + f"Message: {text}\nIs this message spam or ham?\nAnswer:"


def rows_of(batches):
    """(real ids, labels on the real positions) of every row."""
    for batch in batches:
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            real = mask.bool()
            yield ids[real].tolist(), labels[real].tolist()


# ---------------------------------------------------------------- task-format batches


def test_task_batches_put_labels_on_the_answer_tokens_only():
    tok, frame = tiny_tokenizer(), sms_frame(20, seed=1)
    batches = sms_task_batches(tok, frame, examples=frame, shots=2, n_samples=6, seed=4, batch_size=4)
    order = list(range(len(frame)))
    random.Random(4).shuffle(order)
    drawn = frame.iloc[order[:6]]
    shots = draw_shots(frame, 2, exclude=drawn, seed=4)
    assert not set(shots["text"]) & set(drawn["text"])  # shots are never calibration messages
    expected = []
    for text, label in zip(drawn["text"], drawn["label"]):
        prompt = tok(hand_prompt(text, shots[["text", "label"]]))["input_ids"]
        answer = tok(" " + label, add_special_tokens=False)["input_ids"]
        expected.append((prompt + answer, [-100] * len(prompt) + answer))
    got = list(rows_of(batches))
    assert sorted(got) == sorted(expected)
    assert len(batches) == 2 and all(b["labels"][~b["attention_mask"].bool()].eq(-100).all() for b in batches)
    lengths = [len(ids) for ids, _ in got]
    assert lengths == sorted(lengths)  # shortest first


def test_task_batches_zero_shot_and_bad_arguments():
    tok, frame = tiny_tokenizer(), sms_frame(6, seed=2)
    batches = sms_task_batches(tok, frame, examples=frame, shots=0, n_samples=3, seed=0)
    for ids, labels in rows_of(batches):
        assert ids[:2] == tok("Message:")["input_ids"] and sum(x != -100 for x in labels) in (1, 2)
    with pytest.raises(ValueError, match="n_samples"):
        sms_task_batches(tok, frame, examples=frame, shots=0, n_samples=7)
    with pytest.raises(ValueError, match="shots"):
        sms_task_batches(tok, frame, examples=frame.iloc[:3], shots=4, n_samples=3)


def test_block_similarity_accepts_labelled_batches_and_ignores_labels():
    model, tok, frame = tiny_model("llama"), tiny_tokenizer(), sms_frame(12, seed=3)
    batches = sms_task_batches(tok, frame, examples=frame, shots=2, n_samples=5, seed=1)
    plain = [{key: b[key] for key in ("input_ids", "attention_mask")} for b in batches]
    with_labels = block_similarity(model, batches, progress=False).blocks
    without = block_similarity(model, plain, progress=False).blocks
    pd.testing.assert_frame_equal(with_labels, without)


# ---------------------------------------------------------------- losses on labelled batches


def hand_label_ppl(model, batches) -> float:
    """exp(mean NLL over the label tokens), by log-softmax and gather on the full logits."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = batch["labels"][:, 1:]
            scored = targets != -100
            picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
            total -= picked[scored].sum().item()
            count += int(scored.sum())
    return math.exp(total / count)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_ppl_on_labelled_batches_scores_only_the_label_tokens(family):
    model, tok, frame = tiny_model(family), tiny_tokenizer(), sms_frame(16, seed=5)
    batches = sms_task_batches(tok, frame, examples=frame, shots=2, n_samples=6, seed=2, batch_size=4)
    scores = ppl_scores(model, batches, progress=False)
    expected = [hand_label_ppl(prune_blocks(model, [i]), batches) for i in range(N_LAYERS)]
    assert scores.tolist() == pytest.approx(expected, rel=1e-4)
    assert ppl_scores(model, batches, cached=False, progress=False).tolist() == pytest.approx(expected, rel=1e-4)
    # the same rows with every token scored give other numbers: the labels really restrict the loss
    plain = [{key: b[key] for key in ("input_ids", "attention_mask")} for b in batches]
    assert ppl_scores(model, plain, progress=False).tolist() != pytest.approx(expected, rel=1e-2)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_ppl_by_sample_runs_the_shared_examples_once(family):
    model, tok, frame = tiny_model(family), tiny_tokenizer(), sms_frame(16, seed=5)
    batches = sms_task_batches(tok, frame, examples=frame, shots=3, n_samples=6, seed=2, batch_size=2)
    widths = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: widths.append(args[0].numel()))
    try:
        sums = ppl_by_sample(model, batches, progress=False).sums
    finally:
        handle.remove()

    alone = [{key: value[r : r + 1, : int(b["attention_mask"][r].sum())] for key, value in b.items()}
             for b in batches for r in range(len(b["input_ids"]))]  # fmt: skip
    for i in range(N_LAYERS):  # each sample alone, in a really pruned model, by log-softmax and gather
        pruned = prune_blocks(model, [i])
        answers = [int((row["labels"][:, 1:] != -100).sum()) for row in alone]
        expected = [math.log(hand_label_ppl(pruned, [row])) * n for row, n in zip(alone, answers)]
        assert sums[i].tolist() == pytest.approx(expected, rel=1e-4)
    positions = sum(widths) / (1 + N_LAYERS)  # a pass: the cached inputs, then one per block
    sample_tokens = sum(int(row["input_ids"].numel()) for row in alone)
    assert (positions < 0.6 * sample_tokens) == (family != "gemma2")  # gemma2's sliding window: run as given
    assert ppl_positions(model, batches) == positions


# ---------------------------------------------------------------- per-sample criteria


def batches():
    return [tiny_inputs(seed=0, batch=3), tiny_inputs(seed=1, batch=3, length=9)]


def only_rows(data, rows):
    """Batches holding only the given rows (numbered across batches in order)."""
    kept, number = [], 0
    for batch in data:
        keep = [r for r in range(len(batch["input_ids"])) if number + r in rows]
        number += len(batch["input_ids"])
        if keep:
            kept.append({key: value[keep] for key, value in batch.items()})
    return kept


def test_ppl_by_sample_gives_ppl_scores_of_any_subset():
    model, data = tiny_model("llama"), batches()
    by_sample = ppl_by_sample(model, data, progress=False)
    assert by_sample.n_samples == 6 and by_sample.tokens.tolist() == [11, 8, 11, 8, 5, 8]
    assert by_sample.scores().tolist() == pytest.approx(ppl_scores(model, data, progress=False).tolist(), rel=1e-5)
    for rows in ([0, 4], [1, 2, 5], [3]):
        expected = [hand_label_ppl(prune_blocks(model, [i]), labelled(only_rows(data, rows))) for i in range(N_LAYERS)]
        assert by_sample.scores(rows).tolist() == pytest.approx(expected, rel=1e-4)


def labelled(data):
    return [{**b, "labels": b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)} for b in data]


def test_block_influence_by_sample_gives_block_similarity_of_any_subset():
    model, data = tiny_model("qwen2"), batches()
    by_sample = block_influence_by_sample(model, data, progress=False)
    whole = block_similarity(model, data, progress=False).blocks["block_influence"]
    assert by_sample.scores().tolist() == pytest.approx(whole.tolist(), rel=1e-5)
    for rows in ([0, 4], [2, 3, 5]):
        part = block_similarity(model, only_rows(data, rows), progress=False).blocks["block_influence"]
        assert by_sample.scores(rows).tolist() == pytest.approx(part.tolist(), rel=1e-5)


def test_sample_scores_refuse_samples_without_tokens():
    sums = pd.DataFrame([[1.0, 2.0], [0.0, 0.0]])
    scores = SampleScores(sums=sums, tokens=pd.Series([2, 0]), name="x")
    assert scores.scores([0]).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="no scored token"):
        scores.scores([1])


# ---------------------------------------------------------------- split-half noise baseline


def random_profile(n_samples: int, seed: int, shift: np.ndarray) -> SampleScores:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 5, n_samples)
    sums = (rng.random((n_samples, 8)) + shift) * tokens[:, None]
    return SampleScores(sums=pd.DataFrame(sums), tokens=pd.Series(tokens), name="x")


def test_split_half_agreement_by_hand():
    profiles = {"a": random_profile(6, 0, np.zeros(8)), "b": random_profile(5, 1, np.linspace(0, 1, 8))}
    blocks, k = [1, 2, 3, 4, 5, 6], 2
    agreement = split_half_agreement(profiles, blocks=blocks, k=k, splits=2, seed=3, protect_first=1, protect_last=1)
    assert agreement[["first", "second"]].value_counts().to_dict() == {("a", "a"): 2, ("a", "b"): 4, ("b", "b"): 2}
    for split in (0, 1):
        halves = {
            name: [
                p.scores(d)
                for d in disjoint_draws(range(p.n_samples), n_draws=2, n_samples=p.n_samples // 2, seed=3 + split)
            ]
            for name, p in profiles.items()
        }

        def lowest(s):  # the k least important removable blocks, by a plain sort
            return set(s.loc[blocks].sort_values().index[:k])

        for first, second, x, y in [("a", "a", *halves["a"]), ("a", "b", halves["a"][1], halves["b"][1])]:
            row = agreement[(agreement.split == split) & (agreement["first"] == first) & (agreement.second == second)]
            row = row.iloc[-1]
            assert row.spearman == pytest.approx(stats.spearmanr(x.loc[blocks], y.loc[blocks]).statistic)
            assert row.overlap == len(lowest(x) & lowest(y))
        # units: the scored tokens of the smaller half, summed by hand from the draws
        draws = {
            name: disjoint_draws(range(p.n_samples), n_draws=2, n_samples=p.n_samples // 2, seed=3 + split)
            for name, p in profiles.items()
        }
        tokens = {name: [sum(int(profiles[name].tokens[i]) for i in d) for d in ds] for name, ds in draws.items()}
        row = agreement[(agreement.split == split) & (agreement["first"] == "a") & (agreement.second == "b")].iloc[-1]
        assert row.units == min(tokens["a"][1], tokens["b"][1])


def test_resampling_verdict_needs_every_cross_value_below_every_noise_value():
    def frame(noise, cross, units=MIN_UNITS):
        rows = [{"first": "a", "second": "a", "spearman": v, "overlap": 5, "units": 50} for v in noise]
        rows += [{"first": "a", "second": "b", "spearman": v, "overlap": 2, "units": units} for v in cross]
        return pd.DataFrame(rows)

    verdict = resampling_verdict(frame([0.9, 0.8], [0.5, 0.79]), "a", "b")
    assert verdict.loc["spearman", "verdict"] == BEYOND_NOISE and verdict.loc["overlap", "verdict"] == BEYOND_NOISE
    assert verdict.loc["spearman", ["noise_min", "noise_max", "data_min", "data_max"]].tolist() == [0.8, 0.9, 0.5, 0.79]
    assert resampling_verdict(frame([0.9, 0.8], [0.5, 0.8]), "a", "b").loc["spearman", "verdict"] == WITHIN_NOISE
    with pytest.raises(ValueError, match="no same-set or no cross-set"):
        resampling_verdict(frame([0.9], [0.5]), "a", "c")
    # Halves of fewer than MIN_UNITS scored tokens decide nothing, however far apart the ranges are.
    few = resampling_verdict(frame([0.9, 0.8], [0.1, 0.2], units=MIN_UNITS - 1), "a", "b")
    assert few["verdict"].tolist() == [TOO_FEW, TOO_FEW] and few["units"].tolist() == [MIN_UNITS - 1] * 2
