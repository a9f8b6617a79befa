"""Error bars and agreement measures: percentile-bootstrap confidence intervals (scipy) and rank correlations.

A perplexity or an accuracy measured on a finite sample is noisy: on a few hundred SMS messages one point of
accuracy is within noise. The bootstrap resamples the evaluation units (perplexity windows, messages) with
replacement and reads the spread of the statistic. Two models evaluated on the same units are compared *paired*:
both are resampled with the same indices, which removes the noise they share and gives a much tighter interval for
the difference than two separate intervals would.

An interval resting on a handful of units says little: one unit gives a point "interval", and a few give one far
narrower than the truth. Below ``MIN_UNITS`` units the interval is still computed, but flagged (``too_few``) and its
verdict is ``TOO_FEW``, never better or worse: the one rule every table, panel and check of the course reads.

This module knows arrays of units only; each result type turns itself into units beside its own definition
(``perplexity_ci``/``perplexity_difference`` in ``helpers.perplexity``, ``accuracy_ci``/``accuracy_difference`` in
``helpers.classification``, ``zero_shot_ci``/``zero_shot_result_difference`` in ``helpers.benchmark_results``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .checks import check_int
from .ties import TIE_RTOL, tie_groups

MIN_UNITS = 10
"""The fewest units (windows, messages, items) an interval must rest on for a verdict: on fewer, the percentile
bootstrap's interval is much too narrow (on one unit, a point), so the verdict is ``TOO_FEW``."""
TOO_FEW = "too few to decide"
"""The verdict of an interval resting on fewer than ``MIN_UNITS`` units."""
MIN_RESAMPLES = 1000
"""The fewest bootstrap resamples accepted: a 95% percentile interval reads its ends beyond the 2.5% tails, and 1000
resamples leave 25 beyond each end (fewer, and the ends move with the seed, not with the data)."""
Verdict = Literal["better", "worse", "within noise", "too few to decide"]

Statistic = Callable[..., np.ndarray]
"""``statistic(*columns, axis=-1)``: vectorised over resamples, as ``scipy.stats.bootstrap`` calls it."""


class _Bounds(NamedTuple):
    estimate: float
    low: float
    high: float


class ConfidenceInterval(_Bounds):
    """A point estimate with its percentile-bootstrap interval; ``pd.DataFrame([ci, ...])`` tabulates several.

    It is the tuple ``(estimate, low, high)``; ``units``, the number of units it rests on, rides along outside the
    tuple (None for an interval built from given bounds, whose units are unknown).
    """

    units: int | None = None

    def __new__(cls, estimate: float, low: float, high: float, units: int | None = None) -> ConfidenceInterval:
        interval = super().__new__(cls, estimate, low, high)
        interval.units = units
        return interval

    @property
    def too_few(self) -> bool:
        """True when the interval rests on fewer than ``MIN_UNITS`` units: it is shown, but decides nothing."""
        return self.units is not None and self.units < MIN_UNITS

    @property
    def excludes_zero(self) -> bool:
        """True when 0 lies outside the interval: a difference this large is unlikely to be noise alone (unless
        ``too_few``)."""
        return self.low > 0 or self.high < 0

    def verdict(self, *, better: Literal["lower", "higher"], against: float = 0.0) -> Verdict:
        """Better, worse or within noise: this interval read against a level, 0 for a difference b - a.

        For an interval of b - a (as ``paired_difference`` returns it), "better" means b beats a beyond noise. The
        course's one rule for "beyond noise": an interval that contains the level, even only at an end, is "within
        noise"; otherwise the side of the level it lies on, read in the metric's direction, is the verdict. An
        interval on fewer than ``MIN_UNITS`` units (``too_few``) decides nothing: its verdict is ``TOO_FEW``.

        Args:
            better: which direction of the metric is an improvement: "lower" (perplexity, loss) or "higher"
                (accuracy).
            against: the level to read the interval against: 0 for a difference (the default), or a fixed level for
                an interval of one model's score (e.g. the majority-class accuracy).

        Returns:
            "better" when the whole interval lies on the improving side of the level, "worse" when it lies on the
            other side, "within noise" when it contains the level; ``TOO_FEW`` when it rests on too few units.

        Raises:
            ValueError: if ``better`` is neither "lower" nor "higher", or if a bound or ``against`` is NaN.
        """
        if better not in ("lower", "higher"):
            raise ValueError(
                f'better must be "lower" (e.g. perplexity) or "higher" (e.g. accuracy): the direction in which the '
                f"metric improves; got {better!r}"
            )
        if np.isnan(self.low) or np.isnan(self.high) or np.isnan(against):
            raise ValueError(f"cannot read the interval [{self.low}, {self.high}] against {against}: NaN")
        if self.too_few:
            return TOO_FEW
        if self.low <= against <= self.high:
            return "within noise"
        return "better" if (self.high < against) == (better == "lower") else "worse"

    def winner(self, a: str, b: str, *, better: Literal["lower", "higher"]) -> str | None:
        """Name of the side that is better beyond noise, for a sentence like "SMS calibration is better".

        Args:
            a: name of the model subtracted (this interval is of b - a).
            b: name of the other model.
            better: "lower" or "higher", as in ``verdict``.

        Returns:
            ``b`` when ``verdict(better=better)`` is "better", ``a`` when it is "worse", None when within noise or
            too few to decide.

        Raises:
            ValueError: as ``verdict``.
        """
        return {"better": b, "worse": a}.get(self.verdict(better=better))


def _columns(values: np.ndarray, n_boot: int, confidence: float) -> tuple[np.ndarray, ...]:
    """The units' columns (one for 1-D values), checked: scipy's bootstrap takes each column as a paired sample."""
    values = np.asarray(values, dtype=float)
    if values.ndim not in (1, 2) or len(values) == 0:
        raise ValueError("values must hold at least one unit to resample: a 1-D array, or 2-D with one row per unit")
    check_int("n_boot", n_boot, minimum=MIN_RESAMPLES)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95); got {confidence}")
    return (values,) if values.ndim == 1 else tuple(values.T)


def _bootstrap(
    columns: tuple[np.ndarray, ...], statistic: Statistic, n_boot: int, confidence: float, seed: int
) -> ConfidenceInterval:
    """scipy's percentile bootstrap, all columns resampled with the same rows (``paired=True``), vectorised."""
    estimate, units = float(statistic(*columns, axis=-1)), len(columns[0])
    if units == 1:  # one unit: every resample is that unit (scipy refuses a single observation)
        return ConfidenceInterval(estimate, estimate, estimate, units)
    result = stats.bootstrap(
        columns,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return ConfidenceInterval(estimate, float(interval.low), float(interval.high), units)


def bootstrap_ci(
    values: np.ndarray,
    *,
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile-bootstrap interval of a statistic of ``values``, resampling its units (rows) with replacement.

    Runs ``scipy.stats.bootstrap`` (percentile method, vectorised). A unit may carry several numbers (e.g. a
    window's NLL sum and token count): give a 2-D array, one row per unit, and a statistic of its columns.

    Args:
        values: the units that were sampled (messages, windows): a 1-D array, or 2-D with one row per unit.
        statistic: ``statistic(*columns, axis)``: the statistic of each resample along ``axis`` of the columns
            (one column for 1-D values), vectorised as scipy calls it; ``np.mean`` for a 1-D mean.
        n_boot: number of resamples, at least ``MIN_RESAMPLES``.
        confidence: the interval's coverage, between 0 and 1.
        seed: seed of the resampling, so that the same values give the same interval everywhere.

    Returns:
        The statistic of ``values`` with its interval and its number of units (``too_few`` below ``MIN_UNITS``).

    Raises:
        ValueError: for empty values, values of more than 2 dimensions, ``n_boot`` below ``MIN_RESAMPLES`` or a
            confidence outside (0, 1).
        TypeError: for an ``n_boot`` that is not an integer.
    """
    return _bootstrap(_columns(values, n_boot, confidence), statistic, n_boot, confidence, seed)


def paired_difference(
    values_a: np.ndarray,
    values_b: np.ndarray,
    *,
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Interval of ``statistic(values_b) - statistic(values_a)``, resampling both with the same row indices.

    Pairing removes the noise the two models share on each unit, so the interval of the difference is much
    tighter than two separate intervals suggest.

    Args:
        values_a: model A's units, as for ``bootstrap_ci``.
        values_b: model B's units; row ``i`` must be the same unit (message, window) as row ``i`` of ``values_a``.
        statistic: as for ``bootstrap_ci``.
        n_boot: number of resamples, at least ``MIN_RESAMPLES``.
        confidence: the interval's coverage, between 0 and 1.
        seed: seed of the resampling.

    Returns:
        The difference b - a with its interval and its number of units (``too_few`` below ``MIN_UNITS``).

    Raises:
        ValueError: for arrays of different shapes, or as ``bootstrap_ci``.
        TypeError: as ``bootstrap_ci``.
    """
    columns_a = _columns(values_a, n_boot, confidence)
    columns_b = _columns(values_b, n_boot, confidence)
    if np.shape(values_a) != np.shape(values_b):
        raise ValueError(
            f"paired values must describe the same units: shapes {np.shape(values_a)} and {np.shape(values_b)} differ"
        )
    k = len(columns_a)

    def difference(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(*columns[k:], axis=axis) - statistic(*columns[:k], axis=axis)

    return _bootstrap(columns_a + columns_b, difference, n_boot, confidence, seed)


def rank_correlation(a: pd.Series, b: pd.Series, rtol: float = TIE_RTOL) -> pd.Series:
    """Spearman's rho and Kendall's tau-b (with two-sided p-values) between two scores of the same items.

    The series are aligned on their index (e.g. block index), so their order does not matter, but they must cover
    the same items and hold no NaN: a silently dropped block would change the answer without saying so. Scores
    within ``rtol`` of each other are ranked as ties (``ties.tie_groups``), so float rounding cannot swap two ranks.

    Args:
        a: one score per item, indexed by item (e.g. by block).
        b: another score of the same items.
        rtol: the relative distance below which two scores of one series are tied.

    Returns:
        A Series named "rank_correlation" with ``spearman``, ``spearman_p``, ``kendall``, ``kendall_p`` and ``n``
        (the number of items).

    Raises:
        ValueError: if ``a`` or ``b`` is not a pandas Series, their indexes differ or repeat an item, a score is
            NaN, there are fewer than 3 items, or ``rtol`` is not in [0, 1).
    """
    if not isinstance(a, pd.Series) or not isinstance(b, pd.Series):
        raise ValueError("a and b must be pandas Series indexed by item (e.g. by block)")
    if set(a.index) != set(b.index) or a.index.has_duplicates or b.index.has_duplicates:
        raise ValueError(
            f"a and b must have the same unique index; only in a: {sorted(set(a.index) - set(b.index))}, "
            f"only in b: {sorted(set(b.index) - set(a.index))}"
        )
    b = b.reindex(a.index)
    missing = sorted(a.index[a.isna().to_numpy() | b.isna().to_numpy()])
    if missing:
        raise ValueError(f"scores are NaN for items {missing}; drop or fill them explicitly before correlating")
    if len(a) < 3:
        raise ValueError(f"need at least 3 items to correlate ranks; got {len(a)}")
    ranks_a, ranks_b = tie_groups(a, rtol).to_numpy(), tie_groups(b, rtol).to_numpy()
    spearman = stats.spearmanr(ranks_a, ranks_b)
    kendall = stats.kendalltau(ranks_a, ranks_b)
    return pd.Series(
        {
            "spearman": float(spearman.statistic),
            "spearman_p": float(spearman.pvalue),
            "kendall": float(kendall.statistic),
            "kendall_p": float(kendall.pvalue),
            "n": len(a),
        },
        name="rank_correlation",
    )
