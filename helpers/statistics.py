"""Error bars and agreement measures: percentile-bootstrap confidence intervals and rank correlations.

A perplexity or an accuracy measured on a finite sample is noisy: on a few hundred SMS messages one point of
accuracy is within noise. The bootstrap resamples the evaluation units (perplexity windows, messages) with
replacement and reads the spread of the statistic. Two models evaluated on the same units are compared *paired*:
both are resampled with the same indices, which removes the noise they share and gives a much tighter interval for
the difference than two separate intervals would.

This module knows arrays of units only; each result type turns itself into units beside its own definition
(``perplexity_ci``/``perplexity_difference`` in ``helpers.perplexity``, ``accuracy_ci``/``accuracy_difference`` in
``helpers.classification``, ``zero_shot_summary``/``zero_shot_difference`` in ``helpers.zero_shot``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .checks import check_int
from .ties import TIE_RTOL, tie_groups

Statistic = Callable[[np.ndarray], float]


class ConfidenceInterval(NamedTuple):
    """A point estimate with its percentile-bootstrap interval; ``pd.DataFrame([ci, ...])`` tabulates several."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """True when 0 lies outside the interval: a difference this large is unlikely to be noise alone."""
        return self.low > 0 or self.high < 0

    def verdict(
        self, *, better: Literal["lower", "higher"], against: float = 0.0
    ) -> Literal["better", "worse", "within noise"]:
        """Better, worse or within noise: this interval read against a level, 0 for a difference b - a.

        For an interval of b - a (as ``paired_difference`` returns it), "better" means b beats a beyond noise. The
        course's one rule for "beyond noise": an interval that contains the level, even only at an end, is "within
        noise"; otherwise the side of the level it lies on, read in the metric's direction, is the verdict.

        Args:
            better: which direction of the metric is an improvement: "lower" (perplexity, loss) or "higher"
                (accuracy).
            against: the level to read the interval against: 0 for a difference (the default), or a fixed level for
                an interval of one model's score (e.g. the majority-class accuracy).

        Returns:
            "better" when the whole interval lies on the improving side of the level, "worse" when it lies on the
            other side, "within noise" when it contains the level.

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
            ``b`` when ``verdict(better=better)`` is "better", ``a`` when it is "worse", None when within noise.

        Raises:
            ValueError: as ``verdict``.
        """
        return {"better": b, "worse": a, "within noise": None}[self.verdict(better=better)]


def _check_bootstrap(values: np.ndarray, n_boot: int, confidence: float) -> None:
    if values.ndim == 0 or len(values) == 0:
        raise ValueError("values must hold at least one unit to resample (an array with a first axis)")
    check_int("n_boot", n_boot)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95); got {confidence}")


def _interval(estimate: float, replicates: np.ndarray, confidence: float) -> ConfidenceInterval:
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(float(estimate), float(low), float(high))


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) row indices, each row a resample with replacement; the same for a given seed and n."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    values: np.ndarray,
    *,
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile-bootstrap interval of ``statistic(values)``, resampling ``values`` along its first axis.

    Rows are the units that were sampled (messages, windows); give a 2-D array when a unit carries several numbers
    (e.g. a window's NLL sum and token count) and a ``statistic`` that combines them.
    """
    values = np.asarray(values)
    _check_bootstrap(values, n_boot, confidence)
    replicates = np.array([statistic(values[rows]) for rows in _resamples(len(values), n_boot, seed)])
    return _interval(statistic(values), replicates, confidence)


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

    Row ``i`` of both arrays must be the same unit (message, window) evaluated by model A and model B.
    """
    values_a, values_b = np.asarray(values_a), np.asarray(values_b)
    _check_bootstrap(values_a, n_boot, confidence)
    if values_a.shape != values_b.shape:
        raise ValueError(
            f"paired values must describe the same units: shapes {values_a.shape} and {values_b.shape} differ"
        )
    replicates = np.array(
        [statistic(values_b[rows]) - statistic(values_a[rows]) for rows in _resamples(len(values_a), n_boot, seed)]
    )
    return _interval(statistic(values_b) - statistic(values_a), replicates, confidence)


def rank_correlation(a: pd.Series, b: pd.Series, rtol: float = TIE_RTOL) -> pd.Series:
    """Spearman's rho and Kendall's tau-b (with two-sided p-values) between two scores of the same items.

    The series are aligned on their index (e.g. block index), so their order does not matter, but they must cover
    the same items and hold no NaN: a silently dropped block would change the answer without saying so. Scores
    within ``rtol`` of each other are ranked as ties (``ties.tie_groups``), so float rounding cannot swap two ranks.
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
