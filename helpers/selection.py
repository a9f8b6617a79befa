"""Turn block scores into the blocks to remove: one function for every criterion.

Every criterion returns a Series indexed by block (0..L-1) where higher = more important by default; similarity
criteria, where a high value means "the block changes little", pass ``higher_is_important=False``. The same
rules (how many, which blocks are protected, neighbours or one span) then apply to every criterion alike, so that
criteria are compared on their scores and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import groupby
from numbers import Integral, Real
from types import MappingProxyType

import pandas as pd

from .checks import check_bool, check_int
from .ties import first_minimum, tied_order

PLUS_HEURISTIC: Mapping[str, int] = MappingProxyType({"protect_first": 4, "protect_last": 2})
"""Shortened LLaMA's "+": blocks 0-3 and the last two are never removed. Use ``select_blocks(s, k, **PLUS_HEURISTIC)``.
Counted from each end, so it means the same on a model of any depth."""


def resolve_k(k: int | float, n_blocks: int) -> int:
    """How many blocks ``k`` asks for: an int as is, a float in (0, 1) as ``round(k * n_blocks)``.

    ``round`` is Python's (halves go to the even integer: 0.25 of 10 blocks is 2).

    Args:
        k: a block count (int) or a fraction of the blocks (float strictly between 0 and 1).
        n_blocks: how many blocks the model has.

    Returns:
        The block count, between 1 and ``n_blocks - 1`` (at least one block must result and one must stay).

    Raises:
        TypeError: if ``k`` is not a number (a bool included).
        ValueError: if ``k`` is a fraction outside (0, 1) or one that rounds to 0, or the count is outside
            1..n_blocks-1.
    """
    if isinstance(k, bool) or not isinstance(k, Real):
        raise TypeError(
            f"k must be a number of blocks (int) or a fraction of the blocks (float in (0, 1)); got {k!r} "
            f"({type(k).__name__})"
        )
    if isinstance(k, Integral):
        count = int(k)
    elif not 0 < k < 1:
        raise ValueError(f"a fraction k must lie strictly between 0 and 1; got {k} (pass an int for a block count)")
    else:
        count = round(k * n_blocks)
        if count == 0:
            raise ValueError(f"k={k} of {n_blocks} blocks rounds to 0 blocks; ask for at least one block")
    if not 1 <= count < n_blocks:
        raise ValueError(f"k must be between 1 and {n_blocks - 1} blocks for a model of {n_blocks} blocks; got {count}")
    return count


def _check_scores(scores: pd.Series) -> int:
    if not isinstance(scores, pd.Series):
        raise TypeError(f"scores must be a pandas Series indexed by block (0..L-1); got {type(scores).__name__}")
    n_blocks = len(scores)
    if sorted(scores.index.tolist()) != list(range(n_blocks)):
        raise ValueError(
            f"scores must be indexed by the blocks 0..{n_blocks - 1}, each once; got index {scores.index.tolist()}"
        )
    values = pd.to_numeric(scores, errors="coerce")
    bad = sorted(int(i) for i in scores.index[~values.map(lambda v: math.isfinite(float(v)))])
    if bad:
        raise ValueError(f"scores are NaN, infinite or not numbers for block(s) {bad}; fix the criterion first")
    return n_blocks


def removable_blocks(n_blocks: int, count: int, *, protect_first: int = 0, protect_last: int = 0) -> list[int]:
    """The blocks not protected at either end, checking that ``count`` blocks can be removed from them.

    Args:
        n_blocks: how many blocks the model has.
        count: how many blocks are to be removed.
        protect_first: blocks never removed at the start.
        protect_last: blocks never removed at the end.

    Returns:
        The indices ``protect_first``..``n_blocks - protect_last - 1``, ascending.

    Raises:
        TypeError: if ``protect_first`` or ``protect_last`` is not an integer.
        ValueError: if either is negative, or fewer than ``count`` blocks are left unprotected.
    """
    check_int("protect_first", protect_first, minimum=0)
    check_int("protect_last", protect_last, minimum=0)
    allowed = list(range(protect_first, n_blocks - protect_last))
    if count > len(allowed):
        raise ValueError(
            f"cannot remove {count} blocks: protecting the first {protect_first} and the last {protect_last} of "
            f"{n_blocks} blocks leaves {len(allowed)} removable"
        )
    return allowed


def _capacity(free: list[int]) -> int:
    """The most pairwise non-adjacent blocks among ``free`` (sorted): ceil(length / 2) per run of consecutive blocks."""
    runs = groupby(enumerate(free), key=lambda pair: pair[1] - pair[0])
    return sum((len(list(run)) + 1) // 2 for _, run in runs)


def _no_adjacent(order: list[int], k: int) -> list[int]:
    """Least important first, skipping a block that neighbours a chosen one or that would leave too few choices.

    Each pick is the least important block with which k non-adjacent blocks can still be completed. The result is
    the valid set whose members, sorted from least to most important, are lexicographically least important; it
    depends only on the ranking of the scores, not their scale, and is found whenever a valid set exists.
    """
    chosen: list[int] = []
    free = sorted(order)
    while len(chosen) < k:
        for block in order:
            rest = [b for b in free if abs(b - block) > 1]
            if block in free and _capacity(rest) >= k - len(chosen) - 1:
                chosen.append(block)
                free = rest
                break
    return chosen


def _contiguous(importance: pd.Series, allowed: list[int], k: int) -> list[int]:
    """The span of k consecutive allowed blocks with the lowest total importance (the earliest span on near-ties)."""
    totals = pd.Series(
        {start: math.fsum(importance[b] for b in range(start, start + k)) for start in allowed[: len(allowed) - k + 1]}
    )
    best = first_minimum(totals)
    return list(range(best, best + k))


def select_blocks(
    scores: pd.Series,
    k: int | float,
    *,
    higher_is_important: bool = True,
    protect_first: int = 0,
    protect_last: int = 0,
    no_adjacent: bool = False,
    contiguous: bool = False,
) -> list[int]:
    """The ``k`` least important blocks to remove (sorted indices), by one criterion's ``scores``.

    Scores within ``ties.TIE_RTOL`` (0.1%) of each other count as tied, and ties go to the lower block index, so the
    choice does not depend on float rounding (see ``ties.tied_order``).

    Args:
        scores: one finite score per block, a Series indexed by the blocks 0..L-1 (any order).
        k: a block count (int) or a fraction of all blocks (float in (0, 1), see ``resolve_k``).
        higher_is_important: False for scores where high means removable (e.g. cosine similarity of input/output).
        protect_first: never remove that many blocks at the start (``**PLUS_HEURISTIC``: 4).
        protect_last: never remove that many blocks at the end (``**PLUS_HEURISTIC``: 2).
        no_adjacent: no two removed blocks are neighbours (see ``_no_adjacent``: rank-based, least important first,
            always finds a valid set when one exists).
        contiguous: remove one run of k consecutive blocks, the one with the lowest total importance; this sums the
            scores, so it depends on their scale (pass ``scores.rank()`` for a scale-free choice).

    Returns:
        The block indices to remove, ascending.

    Raises:
        ValueError: if ``scores`` is not indexed by 0..L-1 or holds a NaN, infinite or non-numeric value; ``k`` is
            invalid (``resolve_k``); the protected blocks leave fewer than k; ``no_adjacent`` and ``contiguous`` are
            both set (whatever k); or k non-adjacent blocks do not fit among the removable ones.
        TypeError: if ``scores`` is not a pandas Series, ``k`` is not a number (``resolve_k``), ``protect_first``
            or ``protect_last`` is not an integer, or ``higher_is_important`` is not a bool.
    """
    check_bool("higher_is_important", higher_is_important)
    n_blocks = _check_scores(scores)
    count = resolve_k(k, n_blocks)
    allowed = removable_blocks(n_blocks, count, protect_first=protect_first, protect_last=protect_last)
    if no_adjacent and contiguous:
        raise ValueError(
            "no_adjacent and contiguous cannot both be set (no two removed blocks adjacent vs one run of adjacent "
            "blocks); choose one"
        )
    importance = pd.to_numeric(scores).astype(float)
    importance = importance if higher_is_important else -importance
    order = tied_order(importance[allowed])
    if contiguous:
        return _contiguous(importance, allowed, count)
    if no_adjacent:
        if _capacity(allowed) < count:
            raise ValueError(
                f"cannot remove {count} non-adjacent blocks from the {len(allowed)} removable blocks "
                f"{allowed[0]}..{allowed[-1]}: at most {_capacity(allowed)} are pairwise non-adjacent"
            )
        return sorted(_no_adjacent(order, count))
    return sorted(order[:count])


def count_runs(blocks: Sequence[int]) -> int:
    """How many runs of consecutive indices ``blocks`` holds (1 = one contiguous span), to describe a selection.

    Args:
        blocks: block indices, in any order, without repeats.

    Returns:
        The number of maximal runs of consecutive indices; 0 for no blocks.

    Raises:
        ValueError: if an index repeats.
    """
    ordered = sorted(blocks)
    if len(set(ordered)) != len(ordered):
        raise ValueError(f"blocks must not repeat; got {list(blocks)}")
    return sum(1 for i, block in enumerate(ordered) if i == 0 or block != ordered[i - 1] + 1)
