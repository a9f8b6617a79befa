"""The lab's checks against independent computations: naive loops, hand counts, pruned copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import N_LAYERS, tiny_inputs, tiny_model

from helpers.benefits import ideal_speedup, parameter_count
from helpers.evaluation import VariantResults
from helpers.hooks import record_block_io
from helpers.lab import (
    blocks_for_speedup,
    criterion_costs,
    level_results,
    parameters_without,
    prediction_gate,
    relative_update_scores,
    score_mismatch,
)
from helpers.perplexity import PerplexityResult
from helpers.pruning import prune_blocks
from helpers.selection import select_blocks


def naive_relative_update(model, batches):
    """The learner's route: record every block's states, then average ||out - in|| / ||in|| over real tokens."""
    totals, count = np.zeros(N_LAYERS), 0
    for batch in batches:
        mask = batch["attention_mask"].bool()
        for index, io in record_block_io(model, batch).items():
            totals[index] += ((io.output - io.input).norm(dim=-1) / io.input.norm(dim=-1))[mask].sum().item()
        count += int(mask.sum())
    return pd.Series(totals / count, index=range(N_LAYERS))


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_relative_update_scores_match_the_recorded_states(family):
    model = tiny_model(family)
    batches = [tiny_inputs(seed=0), tiny_inputs(seed=1, batch=3, length=9)]
    scores = relative_update_scores(model, batches)
    assert scores.name == "relative_update" and scores.index.tolist() == list(range(N_LAYERS))
    np.testing.assert_allclose(scores.to_numpy(), naive_relative_update(model, batches).to_numpy(), rtol=1e-5)
    assert score_mismatch(naive_relative_update(model, batches), scores) is None


def test_relative_update_scores_refuse_batches_without_tokens():
    batch = tiny_inputs()
    with pytest.raises(ValueError, match="no real token"):
        relative_update_scores(tiny_model("llama"), [{**batch, "attention_mask": torch.zeros_like(batch["input_ids"])}])


def test_score_mismatch_says_what_is_wrong():
    reference = pd.Series([1.0, 2.0, 3.0])
    assert score_mismatch(reference * (1 + 1e-5), reference) is None
    assert score_mismatch(reference[::-1], reference) is None  # any order of the blocks
    assert "Series" in score_mismatch([1.0, 2.0, 3.0], reference)
    assert "0..2" in score_mismatch(pd.Series([1.0, 2.0]), reference)
    assert "[1]" in score_mismatch(pd.Series([1.0, np.nan, 3.0]), reference)
    assert "1 of 3 scores differ" in score_mismatch(pd.Series([1.0, 2.0, 3.3]), reference)
    assert "block 2" in score_mismatch(pd.Series([1.0, 2.0, 3.3]), reference)


def test_blocks_for_speedup_is_the_shortest_selection_that_reaches_the_target():
    model = tiny_model("llama")
    scores = pd.Series([9.0, 8.0, 3.0, 1.0, 2.0, 7.0])
    for target in (1.05, 1.2, 1.5):
        chosen = blocks_for_speedup(model, scores, target, protect_first=1, protect_last=1)
        naive = next(
            blocks
            for k in range(1, 5)
            if ideal_speedup(model, blocks := select_blocks(scores, k, protect_first=1, protect_last=1)) >= target
        )
        assert chosen == naive
        assert ideal_speedup(model, chosen) >= target > ideal_speedup(model, chosen[:-1]) if len(chosen) > 1 else True
    assert blocks_for_speedup(model, scores, 1.05, protect_first=1, protect_last=1) == [3]
    with pytest.raises(ValueError, match="target=10 cannot be reached"):
        blocks_for_speedup(model, scores, 10, protect_first=1, protect_last=1)
    with pytest.raises(ValueError, match="above 1"):
        blocks_for_speedup(model, scores, 1.0)


def test_parameters_without_equals_the_pruned_copy():
    model = tiny_model("llama")
    assert parameters_without(model, [1, 3]) == parameter_count(prune_blocks(model, [1, 3]))
    with pytest.raises(ValueError):
        parameters_without(model, [N_LAYERS])


def test_prediction_gate():
    assert prediction_gate("B", ["A", "B"], "P") is None
    assert prediction_gate(None, ["A", "B"], "P").startswith("Set P first")
    assert "not one of" in prediction_gate("b", ["A", "B"], "P")


def fake_ppl(window_nll):
    """A perplexity result with the given per-window NLL sums (10 tokens per window)."""
    nll = np.asarray(window_nll, dtype=float)
    tokens = np.full(len(nll), 10)
    return PerplexityResult(
        float(np.exp(nll.sum() / tokens.sum())),
        nll.sum() / tokens.sum(),
        int(tokens.sum()),
        nll,
        tokens,
        10,
        10,
        np.zeros((len(nll), 10), dtype=int),
    )


def test_level_results_read_the_paired_verdicts():
    base = np.linspace(20, 40, 40)
    noise = np.random.default_rng(0).normal(0, 0.5, 40)
    windows = {"full": base - 5, "good": base, "noisy": base + noise, "bad": base + 10}
    results = VariantResults(
        variants={name: [] for name in windows},
        results={name: {"ppl": fake_ppl(nll)} for name, nll in windows.items()},
        info=pd.DataFrame(index=list(windows)),
    )
    levels = {"1": ("bad", "beat"), "2": ("noisy", "beat"), "3": ("noisy", "match"), "4": ("full", "match")}
    table = level_results(results, "good", levels, "ppl")
    # the naive reading: the sign of the paired difference and whether its interval reaches 0
    expected = [results.difference(base, "good", "ppl").verdict(better="lower") for base, _ in levels.values()]
    assert table["verdict"].tolist() == expected
    assert expected[0] == "better" and expected[3] == "worse"
    assert table["passed"].tolist() == [True, expected[1] == "better", expected[2] != "worse", False]
    table = level_results(results, "noisy", {"1": ("noisy", "match"), "2": ("noisy", "beat")}, "ppl")
    assert table["passed"].tolist() == [True, False]  # a selection against itself: within noise
    with pytest.raises(ValueError):
        level_results(results, "good", {"1": ("bad", "win")}, "ppl")


def test_criterion_costs_count_by_hand():
    costs = criterion_costs(30, 6, 10, protect_first=4, protect_last=2)
    assert costs.loc["magnitude", "forward passes"] == 0
    assert costs.loc["Block Influence", "forward passes"] == 10
    assert tuple(costs.loc["Taylor", ["forward passes", "backward passes"]]) == (10, 10)
    assert costs.loc["PPL", "forward passes"] == 300
    assert costs.loc["SLEB", "forward passes"] == 10 * (24 + 23 + 22 + 21 + 20 + 19)
