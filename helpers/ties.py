"""Near-ties: scores too close to tell apart are equal, so rankings and choices are the same on every CPU.

Float32 rounding differs between processors (AVX-512, AVX2 or plain kernels; other BLAS builds) in about the sixth
significant digit of a score. A ranking, a chosen block set or a best start decided by a smaller gap than that would
be decided by the machine, not by the model. Calibration noise is far larger than 0.1% anyway, so scores within
``TIE_RTOL`` of each other are treated as tied, and tied items are ordered by their label (the lower block index
first): a documented rule that does not depend on the last bits.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import pandas as pd

from .checks import check_choice

TIE_RTOL = 1e-3
"""Relative distance below which two scores count as tied."""


def _apart(a: float, b: float, rtol: float) -> bool:
    """Whether two sorted neighbours fall in different tie groups (an infinity ties only with itself)."""
    if math.isinf(a) or math.isinf(b):
        return a != b
    return abs(b - a) > rtol * max(abs(a), abs(b))


def tie_groups(values: pd.Series, rtol: float = TIE_RTOL) -> pd.Series:
    """For each label of ``values``, the number of its tie group: 0 for the smallest values, then 1, 2, ...

    Sorted by value, neighbours closer than ``rtol`` (relative to the larger magnitude) share a group, so a chain of
    near-equal values forms one group. The grouping only changes when a gap sits right at ``rtol``. An infinite value
    ties only with the same infinity: it lies beyond every finite value, and float rounding, which ties exist to
    absorb, cannot make a finite score infinite.

    Args:
        values: the scores, indexed by label (e.g. block index).
        rtol: the relative distance below which two neighbouring values are tied.

    Returns:
        A Series named "tie_group" with ``values``' index (and order) and one int group number per label.

    Raises:
        ValueError: if ``rtol`` is not in [0, 1) or a value is NaN.
    """
    if not 0 <= rtol < 1:
        raise ValueError(f"rtol must be in [0, 1) (e.g. {TIE_RTOL}); got {rtol}")
    if values.isna().any():
        raise ValueError(f"values are NaN for {values.index[values.isna()].tolist()}; ties need numbers")
    ordered = sorted(values.items(), key=lambda item: (float(item[1]), item[0]))
    groups: dict[object, int] = {}
    group, previous = -1, None
    for label, value in ordered:
        value = float(value)
        if previous is None or _apart(previous, value, rtol):
            group += 1
        groups[label] = group
        previous = value
    return pd.Series(groups, name="tie_group").reindex(values.index)


def tied_order(values: pd.Series, rtol: float = TIE_RTOL) -> list:
    """The labels of ``values``, smallest value first, near-ties (``tie_groups``) in label order.

    Args:
        values: the scores, indexed by label.
        rtol: the relative tie tolerance, as in ``tie_groups``.

    Returns:
        The list of labels, in that order.

    Raises:
        ValueError: as ``tie_groups``.
    """
    groups = tie_groups(values, rtol)
    return sorted(values.index, key=lambda label: (groups[label], label))


RankMethod = Literal["average", "min"]
RANK_METHODS: tuple[RankMethod, ...] = get_args(RankMethod)


def tied_ranks(values: pd.Series, rtol: float = TIE_RTOL, method: RankMethod = "average") -> pd.Series:
    """Rank of each value, 1 = smallest, with near-ties (``tie_groups``) sharing a rank.

    Args:
        values: the scores, indexed by label.
        rtol: the relative tie tolerance, as in ``tie_groups``.
        method: pandas' rule for a tied group: ``"average"`` (the mean of the places it spans) or ``"min"`` (its first
            place, as in a competition: 1, 2, 2, 4).

    Returns:
        A float Series of ranks with ``values``' index and name.

    Raises:
        TypeError: if ``method`` is not a string.
        ValueError: if ``method`` is not one of ``RANK_METHODS``; as ``tie_groups``.
    """
    check_choice("method", method, RANK_METHODS)
    return tie_groups(values, rtol).rank(method=method).rename(values.name)


def first_minimum(values: pd.Series, rtol: float = TIE_RTOL) -> object:
    """The label of the smallest value (NaN skipped), the lowest label among values tied with it.

    Args:
        values: the scores, indexed by label.
        rtol: the relative tie tolerance, as in ``tie_groups``.

    Returns:
        The chosen label.

    Raises:
        ValueError: if every value is NaN (or there is none), or ``rtol`` is not in [0, 1).
    """
    values = values.dropna()
    if len(values) == 0:
        raise ValueError("first_minimum needs at least one value that is not NaN")
    return tied_order(values, rtol)[0]
