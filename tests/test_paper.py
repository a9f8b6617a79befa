"""The paper-vs-miniature findings against hand-made inputs: every verdict from intervals written out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers.paper import (
    FAILS,
    HOLDS,
    PAPER_BLOCKS,
    REVERSED,
    UNDECIDED,
    HealingOutcome,
    count_runs,
    describe_blocks,
    paired_verdict,
    paper_pattern,
    shortened_llama_findings,
)
from helpers.statistics import ConfidenceInterval as CI


class FakeResults:
    """Intervals and paired differences given by hand: ``{(variant, metric): CI}`` and ``{(a, b, metric): CI}``."""

    def __init__(self, intervals, differences):
        self.intervals, self.differences = intervals, differences

    def interval(self, variant, metric):
        return self.intervals[variant, metric]

    def difference(self, a, b, metric):
        return self.differences[a, b, metric]


def naive_runs(blocks):
    """Runs counted by walking every index from the smallest to the largest."""
    present = set(blocks)
    return sum(
        1 for i in range(min(blocks, default=0), max(blocks, default=-1) + 1) if i in present and i - 1 not in present
    )


@pytest.mark.parametrize("blocks", [[], [5], [3, 4, 5], [10, 13, 24, 25, 26, 27], [7, 1, 2, 9], [0, 2, 4, 6]])
def test_count_runs_matches_a_walk(blocks):
    assert count_runs(blocks) == naive_runs(blocks)


def test_count_runs_refuses_repeats():
    with pytest.raises(ValueError, match="repeat"):
        count_runs([3, 3, 4])


def test_the_papers_selections_as_described():
    assert describe_blocks(PAPER_BLOCKS["PPL"]) == "10, 13, 24, 25, 26, 27 (3 runs)"
    assert describe_blocks(PAPER_BLOCKS["Taylor+"]) == "24, 25, 26, 27, 28, 29 (1 run)"
    assert describe_blocks([9, 8]) == "8, 9 (1 run)"


@pytest.mark.parametrize(
    ("gap", "better", "expected"),
    [
        (CI(3.0, 1.0, 5.0), "lower", HOLDS),  # b - a > 0 for a perplexity: a (the paper's winner) is lower
        (CI(-3.0, -5.0, -1.0), "lower", REVERSED),
        (CI(1.0, -1.0, 3.0), "lower", UNDECIDED),
        (CI(0.02, 0.0, 0.04), "lower", UNDECIDED),  # an interval touching 0 decides nothing
        (CI(-0.05, -0.08, -0.01), "higher", HOLDS),  # b - a < 0 for an accuracy: a is higher
        (CI(0.05, 0.01, 0.08), "higher", REVERSED),
    ],
)
def test_paired_verdict(gap, better, expected):
    assert paired_verdict(gap, a="A", b="B", better=better, paper_winner="A") == expected


def test_paired_verdict_refuses_an_unknown_winner():
    with pytest.raises(ValueError, match="paper_winner"):
        paired_verdict(CI(1.0, 0.5, 2.0), a="A", b="B", better="lower", paper_winner="C")


def scores_frame(*, block0_ppl=500.0, magnitude_first=True, taylor_first=False):
    """Scores of 8 blocks; block 0 ranks first (lowest) in a criterion when asked, else last."""
    ppl = [block0_ppl, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0]
    low, high = [0.5, *range(1, 8)], [100.0, *range(1, 8)]
    return pd.DataFrame(
        {"PPL": ppl, "Magnitude": low if magnitude_first else high, "Taylor": low if taylor_first else high}
    )


def fake_results(*, ppl_gap, acc_gap):
    intervals = {
        ("PPL", "ppl_wikitext"): CI(30.0, 28.0, 32.0),
        ("Taylor+", "ppl_wikitext"): CI(30.0 + ppl_gap.estimate, 0.0, 0.0),
        ("PPL", "sms_acc"): CI(0.8, 0.7, 0.9),
        ("Taylor+", "sms_acc"): CI(0.8 + acc_gap.estimate, 0.0, 0.0),
    }
    differences = {("PPL", "Taylor+", "ppl_wikitext"): ppl_gap, ("PPL", "Taylor+", "sms_acc"): acc_gap}
    return FakeResults(intervals, differences)


def test_findings_where_the_paper_holds():
    results = fake_results(ppl_gap=CI(4.0, 2.0, 6.0), acc_gap=CI(0.05, 0.02, 0.08))
    healing = HealingOutcome("Taylor+", full=20.0, before=40.0, after=30.0, tuned_full=18.0, gain=CI(-10, -12, -8))
    findings = shortened_llama_findings(
        results,
        scores_frame(block0_ppl=500.0, magnitude_first=True, taylor_first=True),
        {"PPL": [1, 3, 4], "Taylor+": [4, 5, 6]},
        n_blocks=8,
        healing=healing,
    )
    assert findings["holds here?"].tolist() == [HOLDS] * 7
    assert findings.loc["PPL criterion removes scattered blocks", "here"] == "1, 3, 4 (2 runs)"
    assert findings.loc["PPL criterion gives lower perplexity than Taylor+", "here"] == (
        "30.0 vs 34.0 (no retraining; Taylor+ − PPL: [+2.00, +6.00])"
    )
    assert findings.loc["Removing block 0 is catastrophic", "here"] == "500 vs 20.0 (25.0x, calibration)"
    assert "50% of the gap" in findings.loc["LoRA retraining lowers the perplexity of the pruned model", "here"]
    assert list(findings.columns) == ["paper (LLaMA-1-7B)", "here", "holds here?"]


def test_findings_reversed_undecided_and_failed():
    results = fake_results(ppl_gap=CI(-4.0, -6.0, -2.0), acc_gap=CI(0.01, -0.02, 0.04))
    healing = HealingOutcome("PPL", full=30.0, before=29.0, after=29.5, tuned_full=25.0, gain=CI(0.5, -1.0, 2.0))
    findings = shortened_llama_findings(
        results,
        scores_frame(block0_ppl=25.0, magnitude_first=False, taylor_first=False),
        {"PPL": [4, 5, 6], "Taylor+": [4, 6, 7]},
        n_blocks=8,
        healing=healing,
    )
    assert findings["holds here?"].tolist() == [FAILS, "partly: deep, not contiguous", REVERSED, UNDECIDED] + [
        FAILS,
        FAILS,
        UNDECIDED,
    ]
    assert "pruning left no gap" in findings.loc["LoRA retraining lowers the perplexity of the pruned model", "here"]


def test_findings_partly_and_without_healing():
    results = fake_results(ppl_gap=CI(1.0, -1.0, 3.0), acc_gap=CI(0.0, -0.1, 0.1))
    findings = shortened_llama_findings(
        results,
        scores_frame(magnitude_first=True, taylor_first=False),
        {"PPL": [1, 2], "Taylor+": [1, 2]},
        n_blocks=8,
    )
    assert len(findings) == 6
    assert findings.loc["Taylor+ removes one contiguous run of deep blocks", "holds here?"] == (
        "partly: contiguous, not deep"
    )
    assert findings.loc["Without +, Taylor and Magnitude remove block 0 first", "holds here?"] == "partly: Magnitude"
    assert findings.loc["Without +, Taylor and Magnitude remove block 0 first", "here"] == (
        "Magnitude: block 0 ranks 1, Taylor: block 0 ranks 8"
    )


def test_the_benchmark_accuracy_is_a_finding_of_its_own():
    results = fake_results(ppl_gap=CI(4.0, 2.0, 6.0), acc_gap=CI(0.01, -0.02, 0.04))
    benchmarks = FakeResults(
        {("PPL", "pooled"): CI(0.40, 0.38, 0.42), ("Taylor+", "pooled"): CI(0.36, 0.34, 0.38)},
        {("PPL", "Taylor+", "pooled"): CI(-0.04, -0.06, -0.02)},
    )
    findings = shortened_llama_findings(
        results,
        scores_frame(block0_ppl=500.0, magnitude_first=True, taylor_first=True),
        {"PPL": [1, 3, 4], "Taylor+": [4, 5, 6]},
        n_blocks=8,
        accuracy_label="8-shot SMS",
        benchmarks=benchmarks,
        benchmark_metric="pooled",
        benchmark_label="4 tasks",
    )
    sms = findings.loc["Taylor+ gives higher accuracy than PPL (8-shot SMS)"]
    zero_shot = findings.loc["Taylor+ gives higher accuracy than PPL (4 tasks)"]
    assert sms["holds here?"] == UNDECIDED and zero_shot["holds here?"] == REVERSED
    assert zero_shot["here"] == "0.360 vs 0.400 (4 tasks; Taylor+ − PPL: [-0.060, -0.020])"
    assert zero_shot["paper (LLaMA-1-7B)"] == "63.49 vs 61.83 (7 zero-shot tasks, after LoRA)"


def test_the_pattern_needs_both_halves():
    frame = pd.DataFrame(
        {"holds here?": [HOLDS, HOLDS]},
        index=["PPL criterion gives lower perplexity than Taylor+", "Taylor+ gives higher accuracy than PPL (4 tasks)"],
    )
    assert paper_pattern(frame, "4 tasks") == ("holds", HOLDS, HOLDS)
    frame.iloc[1, 0] = UNDECIDED
    assert paper_pattern(frame, "4 tasks") == ("is undecided", HOLDS, UNDECIDED)
    frame.iloc[0, 0] = REVERSED
    assert paper_pattern(frame, "4 tasks")[0] == "does not hold"
    with pytest.raises(KeyError):
        paper_pattern(frame, "7 tasks")
