"""select_blocks against brute force over every admissible set, and its refusals of bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from helpers.selection import PLUS_HEURISTIC, count_runs, select_blocks
from helpers.ties import TIE_RTOL, first_minimum, tie_groups, tied_order, tied_ranks


def series(values) -> pd.Series:
    return pd.Series(values, index=pd.RangeIndex(len(values), name="block"), name="score", dtype=float)


def random_scores(n: int, seed: int, distinct: int | None = None) -> pd.Series:
    rng = np.random.default_rng(seed)
    # A few distinct values make ties common, so tie-breaking is exercised too.
    values = rng.integers(0, distinct, n) if distinct else rng.normal(size=n)
    return series(values)


def cases():
    for seed in range(6):
        n = 6 + seed % 4
        for k in range(1, 4):
            for first, last in [(0, 0), (1, 0), (0, 2), (1, 1)]:
                yield n, seed, k, first, last


def rank_key(scores: pd.Series, blocks) -> list:
    """Blocks of a set from least to most important, as (score, index): least important first, ties to low index."""
    return sorted((scores[b], b) for b in blocks)


def test_plain_selection_is_the_k_lowest_and_sorted():
    scores = series([5.0, 1.0, 4.0, 0.5, 3.0, 2.0])
    assert select_blocks(scores, 3) == [1, 3, 5]
    assert select_blocks(scores, 3, higher_is_important=False) == [0, 2, 4]


def test_ties_go_to_the_lower_index():
    flat = series([1.0] * 8)
    assert select_blocks(flat, 3) == [0, 1, 2]
    assert select_blocks(flat, 3, protect_first=2) == [2, 3, 4]
    assert select_blocks(series([2, 1, 3, 1, 1]), 2) == [1, 3]


@pytest.mark.parametrize(
    "n, fraction, expected", [(30, 0.2, 6), (10, 0.25, 2), (10, 0.35, 4), (7, 0.5, 4), (6, 0.1, 1)]
)
def test_fraction_is_rounded_with_python_round(n, fraction, expected):
    assert len(select_blocks(random_scores(n, 0), fraction)) == expected == round(fraction * n)


@pytest.mark.parametrize("n", [7, 12, 30, 40])
def test_protected_ends_are_never_chosen_whatever_their_scores(n):
    # The protected blocks get the lowest scores, so an unprotected selection would take them first.
    scores = series(np.arange(n, dtype=float))
    scores.iloc[:4] = -100.0
    scores.iloc[-2:] = -50.0
    k = n - 6
    chosen = select_blocks(scores, k, **PLUS_HEURISTIC)
    assert chosen == list(range(4, n - 2))
    assert select_blocks(scores, 1, **PLUS_HEURISTIC) == [4]
    assert set(select_blocks(scores, 6)) == {0, 1, 2, 3, n - 2, n - 1}


def test_plus_heuristic_on_a_six_block_model_leaves_nothing_to_remove():
    with pytest.raises(ValueError, match="leaves 0 removable"):
        select_blocks(random_scores(6, 0), 1, **PLUS_HEURISTIC)


def test_plus_heuristic_is_shortened_llamas_and_read_only():
    assert dict(PLUS_HEURISTIC) == {"protect_first": 4, "protect_last": 2}
    with pytest.raises(TypeError):
        PLUS_HEURISTIC["protect_first"] = 0  # type: ignore[index]


@pytest.mark.parametrize("n, seed, k, first, last", list(cases()))
def test_contiguous_is_the_span_of_lowest_total_by_brute_force(n, seed, k, first, last):
    scores = random_scores(n, seed, distinct=3 if seed % 2 else None)
    spans = [list(range(s, s + k)) for s in range(first, n - last - k + 1)]
    best = min(spans, key=lambda span: (sum(scores[b] for b in span), span[0]))
    assert select_blocks(scores, k, protect_first=first, protect_last=last, contiguous=True) == best


@pytest.mark.parametrize("n, seed, k, first, last", list(cases()))
def test_no_adjacent_is_the_rank_wise_best_valid_set_by_brute_force(n, seed, k, first, last):
    scores = random_scores(n, seed, distinct=3 if seed % 2 else None)
    allowed = range(first, n - last)
    valid = [c for c in itertools.combinations(allowed, k) if all(b - a > 1 for a, b in zip(c, c[1:]))]
    if not valid:
        with pytest.raises(ValueError, match="non-adjacent"):
            select_blocks(scores, k, protect_first=first, protect_last=last, no_adjacent=True)
        return
    best = min(valid, key=lambda c: rank_key(scores, c))
    chosen = select_blocks(scores, k, protect_first=first, protect_last=last, no_adjacent=True)
    assert chosen == list(best)
    # And for the negated scores with the direction flipped: the same choice.
    assert (
        select_blocks(-scores, k, protect_first=first, protect_last=last, no_adjacent=True, higher_is_important=False)
        == chosen
    )


def test_no_adjacent_finds_a_valid_set_where_plain_greedy_gets_stuck():
    # Greedy would take block 1 first and then only one of 3, 4 is left; 0, 2, 4 is the only valid choice.
    scores = series([3.0, 0.0, 2.0, 4.0, 1.0])
    assert select_blocks(scores, 3, no_adjacent=True) == [0, 2, 4]


def test_the_scores_are_not_modified():
    scores = random_scores(8, 1)
    before = scores.copy()
    select_blocks(scores, 3, no_adjacent=True, protect_first=1)
    pd.testing.assert_series_equal(scores, before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=5, protect_first=2, protect_last=2), "leaves 4 removable"),
        (dict(k=8), "between 1 and 7"),
        (dict(k=0), "between 1 and 7"),
        (dict(k=1.0), "strictly between 0 and 1"),
        (dict(k=1.5), "strictly between 0 and 1"),
        (dict(k=-0.2), "strictly between 0 and 1"),
        (dict(k=0.01), "rounds to 0"),
        (dict(k=5, no_adjacent=True), "at most 4 are pairwise non-adjacent"),
        (dict(k=2, no_adjacent=True, contiguous=True), "choose one"),
        (dict(k=1, no_adjacent=True, contiguous=True), "no_adjacent and contiguous cannot both be set"),
        (dict(k=2, protect_first=-1), "protect_first must be at least 0; got -1"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_blocks(random_scores(8, 0), **kwargs)


@pytest.mark.parametrize(
    "k, message",
    [
        (True, r"k must be a number of blocks .*; got True \(bool\)"),
        ("3", r"k must be a number of blocks .*; got '3' \(str\)"),
        (None, r"k must be a number of blocks .*; got None \(NoneType\)"),
    ],
)
def test_a_k_that_is_not_a_number_is_a_type_error(k, message):
    with pytest.raises(TypeError, match=message):
        select_blocks(random_scores(8, 0), k)


def test_bad_scores_are_refused_naming_the_blocks():
    scores = random_scores(6, 0)
    scores[2] = np.nan
    scores[4] = np.inf
    with pytest.raises(ValueError, match=r"block\(s\) \[2, 4\]"):
        select_blocks(scores, 1)
    with pytest.raises(ValueError, match="indexed by the blocks 0..2"):
        select_blocks(pd.Series([1.0, 2.0, 3.0], index=[1, 2, 3]), 1)
    with pytest.raises(TypeError, match="scores must be a pandas Series indexed by block .*; got list"):
        select_blocks([1.0, 2.0, 3.0], 1)  # type: ignore[arg-type]


def test_near_ties_are_ordered_by_block_not_by_last_bits():
    base = series([3.0, 1.0, 2.0, 1.0, 5.0])
    # blocks 1 and 3 are tied; nudging either one by far less than TIE_RTOL never changes the order
    for nudge in (1e-7, -1e-7, 0.1 * TIE_RTOL, -0.1 * TIE_RTOL):
        scores = base.copy()
        scores[3] *= 1 + nudge
        assert tied_order(scores) == [1, 3, 2, 0, 4]
        assert first_minimum(scores) == 1
        assert select_blocks(scores, 1) == [1]
    # a real gap (10x the tolerance) is respected
    scores = base.copy()
    scores[3] *= 1 - 10 * TIE_RTOL
    assert tied_order(scores) == [3, 1, 2, 0, 4] and select_blocks(scores, 1) == [3]
    # rtol=0 is exact ordering
    scores[3] = 1.0 - 1e-12
    assert tied_order(scores, rtol=0) == [3, 1, 2, 0, 4]
    with pytest.raises(ValueError, match="rtol"):
        tied_order(scores, rtol=1.5)


def test_contiguous_span_on_near_tied_totals_is_the_earliest():
    # spans {1,2} and {3,4} total 2.0 and 2.0*(1+1e-9): tied, so the earlier start wins whichever is smaller
    for nudge in (1e-9, -1e-9):
        scores = series([9.0, 1.0, 1.0, 1.0, 1.0 * (1 + 2 * nudge), 9.0])
        assert select_blocks(scores, 2, contiguous=True) == [1, 2]


def test_tie_groups_chain_near_equal_values_and_number_groups_from_the_smallest():
    values = pd.Series({"a": 2.0, "b": 1.0, "c": 1.0005, "d": 1.001, "e": 5.0})
    # b, c, d chain (each gap below 0.1% of the larger value) into group 0, even though b and d are 0.1% apart
    assert tie_groups(values).to_dict() == {"a": 1, "b": 0, "c": 0, "d": 0, "e": 2}
    assert tied_order(values) == ["b", "c", "d", "a", "e"]
    with pytest.raises(ValueError, match="NaN"):
        tie_groups(pd.Series([1.0, float("nan")]))
    assert first_minimum(pd.Series([float("nan"), 2.0, 1.0])) == 2


def test_tied_ranks_share_a_rank_within_a_near_tie_group():
    values = pd.Series({"a": 2.0, "b": 1.0, "c": 1.0005, "d": 1.001, "e": 5.0}, name="score")
    # by hand: b, c, d are one near-tie group spanning places 1-3, then a (4), then e (5)
    assert tied_ranks(values).to_dict() == {"a": 4.0, "b": 2.0, "c": 2.0, "d": 2.0, "e": 5.0}
    assert tied_ranks(values, method="min").to_dict() == {"a": 4.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 5.0}
    assert tied_ranks(values).name == "score"
    # a 10x-tolerance gap is not a tie: plain ranks
    assert tied_ranks(pd.Series([1.0, 1.01, 0.5])).tolist() == [2.0, 3.0, 1.0]
    with pytest.raises(ValueError, match="method must be one of 'average', 'min'; got 'dense'"):
        tied_ranks(values, method="dense")


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
