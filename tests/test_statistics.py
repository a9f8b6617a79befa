"""Bootstrap intervals and rank correlations against theory, hand computations and a second library (pandas)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers.classification import ClassificationResult, accuracy_ci, accuracy_difference
from helpers.perplexity import PerplexityResult, perplexity_ci, perplexity_difference
from helpers.statistics import ConfidenceInterval, bootstrap_ci, paired_difference, rank_correlation


def ppl_result(window_nll, window_tokens) -> PerplexityResult:
    window_nll, window_tokens = np.asarray(window_nll, float), np.asarray(window_tokens)
    nll = window_nll.sum() / window_tokens.sum()
    ids = np.zeros((len(window_tokens), 16), dtype=int)  # the same windows for every result built here
    return PerplexityResult(math.exp(nll), nll, int(window_tokens.sum()), window_nll, window_tokens, 16, 16, ids)


def accuracy_result(correct, index) -> ClassificationResult:
    correct = np.asarray(correct, bool)
    empty = pd.DataFrame(columns=["text", "label"])
    predictions = pd.Series("ham", index=index)
    scores = pd.DataFrame(index=index)
    messages = pd.DataFrame({"text": "hi", "label": "ham"}, index=index)
    return ClassificationResult(correct.mean(), correct, predictions, scores, 0.5, "ham", 0.5, empty, messages)


# --- bootstrap ------------------------------------------------------------------------------------------------------


def test_mean_interval_matches_the_normal_theory_width_and_contains_the_estimate():
    values = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    ci = bootstrap_ci(values)
    assert ci.estimate == pytest.approx(values.mean())
    assert ci.low < ci.estimate < ci.high
    theory = 2 * 1.96 * values.std() / math.sqrt(len(values))
    assert ci.high - ci.low == pytest.approx(theory, rel=0.15)


def test_interval_shrinks_with_more_units():
    rng = np.random.default_rng(2)
    small, large = bootstrap_ci(rng.normal(size=100)), bootstrap_ci(rng.normal(size=1600))
    # Width goes as 1/sqrt(n): 16 times the units, a quarter of the width.
    assert (large.high - large.low) / (small.high - small.low) == pytest.approx(0.25, rel=0.3)


def test_interval_is_deterministic_for_a_seed():
    values = np.random.default_rng(3).normal(size=50)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_higher_confidence_gives_a_wider_interval():
    values = np.random.default_rng(4).normal(size=80)
    narrow, wide = bootstrap_ci(values, confidence=0.5), bootstrap_ci(values, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


@pytest.mark.parametrize("kwargs", [dict(n_boot=0), dict(confidence=1.0), dict(confidence=0.0)])
def test_bootstrap_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci(np.ones(5), **kwargs)


def test_bootstrap_rejects_no_values():
    with pytest.raises(ValueError, match="at least one unit"):
        bootstrap_ci(np.array([]))


def test_perplexity_interval_resamples_windows():
    # Windows with the same NLL per token: every resample has the same perplexity, so the interval is a point.
    flat = perplexity_ci(ppl_result([30.0, 15.0, 45.0], [10, 5, 15]))
    assert flat.estimate == flat.low == pytest.approx(math.exp(3.0)) == flat.high

    rng = np.random.default_rng(5)
    result = ppl_result(rng.uniform(20, 60, size=200), np.full(200, 15))
    ci = perplexity_ci(result)
    assert ci.estimate == pytest.approx(result.ppl)
    assert ci.low < result.ppl < ci.high
    per_window = np.exp(result.window_nll / result.window_tokens)
    assert per_window.min() < ci.low and ci.high < per_window.max()


def test_accuracy_interval_of_a_result_equals_that_of_its_correct_array():
    correct = np.random.default_rng(6).random(300) < 0.7
    ci = accuracy_ci(accuracy_result(correct, range(300)))
    assert ci == accuracy_ci(correct)
    assert ci.estimate == pytest.approx(correct.mean())
    # Binomial standard error sqrt(p(1-p)/n).
    theory = 2 * 1.96 * math.sqrt(correct.mean() * (1 - correct.mean()) / 300)
    assert ci.high - ci.low == pytest.approx(theory, rel=0.2)


# --- paired differences ---------------------------------------------------------------------------------------------


def test_a_model_compared_with_itself_differs_by_exactly_zero():
    result = ppl_result(np.random.default_rng(7).uniform(20, 60, size=50), np.full(50, 15))
    same = perplexity_difference(result, result)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    correct = np.random.default_rng(8).random(40) < 0.5
    assert tuple(accuracy_difference(correct, correct)) == (0.0, 0.0, 0.0)


def test_pairing_detects_a_small_consistent_difference_that_separate_intervals_miss():
    rng = np.random.default_rng(9)
    a = rng.normal(0, 1, size=200)
    b = a + 0.05 + rng.normal(0, 0.05, size=200)  # b is a bit higher on every unit
    paired = paired_difference(a, b)
    assert paired.estimate == pytest.approx(b.mean() - a.mean())
    assert paired.excludes_zero and paired.low > 0
    ci_a, ci_b = bootstrap_ci(a), bootstrap_ci(b)
    assert ci_b.low < ci_a.high  # unpaired, the two intervals overlap


def test_perplexity_difference_is_b_minus_a():
    rng = np.random.default_rng(10)
    tokens = np.full(60, 15)
    a = ppl_result(rng.uniform(30, 45, size=60), tokens)
    b = ppl_result(a.window_nll + 3.0, tokens)  # B is worse on every window
    diff = perplexity_difference(a, b)
    assert diff.estimate == pytest.approx(b.ppl - a.ppl)
    assert diff.low > 0 and diff.excludes_zero


def test_differences_refuse_results_on_different_units():
    a = ppl_result([30.0, 40.0], [15, 15])
    with pytest.raises(ValueError, match="same windows"):
        perplexity_difference(a, ppl_result([30.0, 40.0, 50.0], [15, 15, 15]))
    with pytest.raises(ValueError, match="same windows"):
        perplexity_difference(a, ppl_result([30.0, 40.0], [15, 14]))
    with pytest.raises(ValueError, match="different messages"):
        accuracy_difference(accuracy_result([1, 0], [0, 1]), accuracy_result([1, 0], [5, 6]))
    with pytest.raises(ValueError, match="same units"):
        paired_difference(np.ones(3), np.ones(4))


# --- verdicts on an interval of b - a ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "lower_is_better", "higher_is_better"),
    [
        ((-3.0, -5.0, -1.0), "better", "worse"),  # wholly below 0: b lower than a beyond noise
        ((2.0, 0.5, 4.0), "worse", "better"),  # wholly above 0
        ((0.5, -1.0, 2.0), "within noise", "within noise"),  # straddles 0
        ((1.0, 0.0, 2.0), "within noise", "within noise"),  # touches 0 from above: 0 is inside
        ((-1.0, -2.0, 0.0), "within noise", "within noise"),  # touches 0 from below
        ((0.0, 0.0, 0.0), "within noise", "within noise"),  # degenerate at 0: a model against itself
        ((1e-9, 1e-9, 1e-9), "worse", "better"),  # degenerate beside 0: tiny, but never 0 in any resample
    ],
)
def test_verdict_reads_the_side_of_zero_in_the_metric_direction(interval, lower_is_better, higher_is_better):
    ci = ConfidenceInterval(*interval)
    assert ci.verdict(better="lower") == lower_is_better
    assert ci.verdict(better="higher") == higher_is_better


def test_verdict_against_a_fixed_level():
    accuracy = ConfidenceInterval(0.9, 0.88, 0.93)  # one model's accuracy, read against a majority baseline
    assert accuracy.verdict(better="higher", against=0.87) == "better"
    assert accuracy.verdict(better="higher", against=0.88) == "within noise"  # the interval touches the level
    assert accuracy.verdict(better="higher", against=0.95) == "worse"
    assert accuracy.verdict(better="lower", against=0.87) == "worse"
    with pytest.raises(ValueError, match="NaN"):
        accuracy.verdict(better="higher", against=float("nan"))


def test_winner_names_b_when_better_a_when_worse_none_within_noise():
    # Intervals of SMS-calibrated minus WikiText-calibrated: accuracy improves upwards, perplexity downwards.
    assert ConfidenceInterval(0.04, 0.01, 0.07).winner("WikiText", "SMS", better="higher") == "SMS"
    assert ConfidenceInterval(0.04, 0.01, 0.07).winner("WikiText", "SMS", better="lower") == "WikiText"
    assert ConfidenceInterval(-2.0, -3.0, -1.0).winner("WikiText", "SMS", better="lower") == "SMS"
    assert ConfidenceInterval(0.01, -0.02, 0.04).winner("WikiText", "SMS", better="higher") is None


@pytest.mark.parametrize("better", ["low", "Lower", None, True])
def test_verdict_rejects_an_unknown_direction(better):
    with pytest.raises(ValueError, match='"lower".*"higher"'):
        ConfidenceInterval(1.0, 0.5, 1.5).verdict(better=better)
    with pytest.raises(ValueError, match="better must be"):
        ConfidenceInterval(1.0, 0.5, 1.5).winner("a", "b", better=better)


def test_verdict_refuses_a_nan_bound():
    with pytest.raises(ValueError, match="NaN"):
        ConfidenceInterval(1.0, float("nan"), 2.0).verdict(better="lower")


def test_verdict_of_a_measured_difference_agrees_with_its_construction():
    tokens = np.full(60, 15)
    a = ppl_result(np.random.default_rng(10).uniform(30, 45, size=60), tokens)
    worse_b = ppl_result(a.window_nll + 3.0, tokens)  # higher NLL on every window: B is worse
    assert perplexity_difference(a, worse_b).verdict(better="lower") == "worse"
    assert perplexity_difference(worse_b, a).verdict(better="lower") == "better"


# --- rank correlation -----------------------------------------------------------------------------------------------


def test_reversed_ranks_correlate_at_minus_one_whatever_the_order_of_the_index():
    a = pd.Series([0.1, 0.5, 0.2, 0.9, 0.4], index=[0, 1, 2, 3, 4])
    b = -a.sample(frac=1, random_state=0) * 10  # same items, shuffled, reversed order
    result = rank_correlation(a, b)
    assert result["spearman"] == pytest.approx(-1.0) and result["kendall"] == pytest.approx(-1.0)
    assert result["n"] == 5


def test_spearman_matches_the_rank_difference_formula():
    a = pd.Series([3.0, 1.0, 4.0, 1.5, 5.0, 9.0])
    b = pd.Series([2.0, 7.0, 1.0, 8.0, 2.8, 3.0])
    rank_a, rank_b = np.array([3, 1, 4, 2, 5, 6]), np.array([2, 5, 1, 6, 3, 4])  # ranks written out by hand
    n, d = 6, rank_a - rank_b
    assert rank_correlation(a, b)["spearman"] == pytest.approx(1 - 6 * (d**2).sum() / (n * (n**2 - 1)))


def test_correlations_agree_with_pandas_on_random_data():
    rng = np.random.default_rng(11)
    a = pd.Series(rng.normal(size=30), index=rng.permutation(30))
    b = pd.Series(a.to_numpy() + rng.normal(size=30), index=a.index)
    result = rank_correlation(a, b)
    assert result["spearman"] == pytest.approx(a.corr(b, method="spearman"))
    assert result["kendall"] == pytest.approx(a.corr(b, method="kendall"))
    assert 0 <= result["spearman_p"] <= 1 and 0 <= result["kendall_p"] <= 1


def test_rank_correlation_refuses_nan_and_mismatched_items():
    a = pd.Series([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"NaN for items \[2\]"):
        rank_correlation(a, pd.Series([1.0, 2.0, np.nan, 4.0]))
    with pytest.raises(ValueError, match="same unique index"):
        rank_correlation(a, pd.Series([1.0, 2.0, 3.0, 4.0], index=[1, 2, 3, 4]))
    with pytest.raises(ValueError, match="at least 3"):
        rank_correlation(a.iloc[:2], a.iloc[:2])


def test_rank_correlation_ranks_near_ties_as_ties():
    a = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0])
    nudged = pd.Series([1.0, 2.0, 3.0, 3.0 * (1 - 1e-7), 5.0])  # blocks 2 and 3 equal up to float noise
    # by hand: ranks of a 1..5, of nudged 1, 2, 3.5, 3.5, 5 -> Pearson of the ranks
    ranks_a, ranks_b = np.arange(1, 6.0), np.array([1, 2, 3.5, 3.5, 5])
    expected = np.corrcoef(ranks_a, ranks_b)[0, 1]
    assert rank_correlation(a, nudged)["spearman"] == pytest.approx(expected, abs=1e-12)
    assert rank_correlation(a, nudged, rtol=0)["spearman"] == pytest.approx(0.9, abs=1e-12)  # 1 - 6*2/(5*24)


# --- scipy's vectorised bootstrap against a naive resampling loop ---------------------------------------------------


def _naive_interval(columns, statistic, n_boot=20000, seed=123):
    """Percentile interval from a plain Python loop over resampled row indices: an independent second code path."""
    n = len(columns[0])
    rows = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    replicates = [statistic(*(c[r] for c in columns)) for r in rows]
    return np.quantile(replicates, [0.025, 0.975])


def test_ratio_and_paired_intervals_agree_with_a_naive_loop():
    rng = np.random.default_rng(11)
    tokens = rng.integers(5, 30, size=80).astype(float)
    nll = tokens * rng.uniform(2.5, 4.0, size=80)
    ci = perplexity_ci(ppl_result(nll, tokens))
    low, high = _naive_interval((nll, tokens), lambda n, t: np.exp(n.sum() / t.sum()))
    width = high - low
    assert abs(ci.low - low) < 0.05 * width and abs(ci.high - high) < 0.05 * width

    worse = nll + rng.normal(0.5, 1.0, size=80)
    diff = perplexity_difference(ppl_result(nll, tokens), ppl_result(worse, tokens))
    low, high = _naive_interval(
        (nll, worse, tokens), lambda a, b, t: np.exp(b.sum() / t.sum()) - np.exp(a.sum() / t.sum())
    )
    width = high - low
    assert diff.estimate == pytest.approx(np.exp(worse.sum() / tokens.sum()) - np.exp(nll.sum() / tokens.sum()))
    assert abs(diff.low - low) < 0.05 * width and abs(diff.high - high) < 0.05 * width


def test_a_single_unit_gives_a_point_interval():
    assert tuple(bootstrap_ci(np.array([0.25]))) == (0.25, 0.25, 0.25)
