"""One evaluation core for every comparison of pruned variants: the full model first, then each variant, the same way.

Every chapter compares selections (static, by weights, from data), and they only mean something when all of them are
measured on the same texts, windows and messages with the same statistics. ``evaluate_variants`` runs each measure
on the full model and on every variant inside ``skip_blocks`` (no copy, exact restore) and returns a
``VariantResults``: the raw results, their bootstrap intervals, paired differences between any two variants (the
same windows or messages, resampled together), verdicts in the metric's direction, a long and a wide table, and a
figure. ``quality_measures`` (perplexity and SMS accuracy) gives it the course's measures; ``benefits_table`` (sizes
and latency) and the live panel (``helpers.widgets.LivePanel``) are presets of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .benchmark_results import ZeroShotResult, zero_shot_ci, zero_shot_result_difference
from .benefits import ideal_speedup, model_bytes, parameter_count, time_variants
from .block_inputs import BlockInputs, MissingRecording
from .blocks import check_block_indices, get_blocks
from .checks import check_bool, check_mapping
from .classification import ClassificationResult, accuracy_ci, accuracy_difference, sms_accuracy
from .display import fmt, fmt_ci
from .perplexity import PerplexityResult, perplexity, perplexity_ci, perplexity_difference
from .pruning import skip_blocks
from .settings import progress_bar
from .statistics import ConfidenceInterval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FULL = "full"
"""Name of the variant with no block removed: always evaluated first, and the default reference."""

Measure = Callable[[PreTrainedModel], Any]
"""``f(model) -> result``, called on each variant inside ``skip_blocks``. A result is a ``PerplexityResult``, a
``ClassificationResult`` or a ``ZeroShotResult`` (they carry their units, so they get bootstrap intervals and paired
differences), a number (shown without an interval; not NaN), or a mapping ``{metric: result or number}`` for several
metrics measured together (latency, the zero-shot tasks)."""

Better = Literal["lower", "higher"]
_UNIT_RESULTS: dict[type, tuple[Better, Callable[[Any], ConfidenceInterval], Callable[[Any, Any], ConfidenceInterval]]]
_UNIT_RESULTS = {
    PerplexityResult: ("lower", perplexity_ci, perplexity_difference),
    ClassificationResult: ("higher", accuracy_ci, accuracy_difference),
    ZeroShotResult: ("higher", zero_shot_ci, zero_shot_result_difference),
}
_ACCURACIES = (ClassificationResult, ZeroShotResult)
INFO_COLUMNS = ["removed", "n_removed", "blocks_left", "parameters", "params_removed_pct", "MiB", "ideal_speedup"]
"""What ``VariantResults.wide`` shows about each variant before its metrics; all exact counts, nothing measured."""


def _flatten(variant: str, name: str, result: Any) -> dict[str, Any]:
    """Measure ``name``'s result on ``variant`` as ``{metric: unit result or number}``; a mapping gives one metric per
    key. A NaN is refused: it would pass for a measurement in every table and comparison."""
    items = dict(result.items()) if isinstance(result, (Mapping, pd.Series)) else {name: result}
    for metric, value in items.items():
        if isinstance(value, tuple(_UNIT_RESULTS)):
            continue
        if not isinstance(value, (Real, np.number)) or isinstance(value, bool):
            raise TypeError(
                f"measure {name!r} returned {type(value).__name__} for metric {metric!r}; a measure must return a "
                "PerplexityResult, a ClassificationResult, a ZeroShotResult, a number, or a mapping of them"
            )
        if value != value:  # NaN is the one value unequal to itself
            raise ValueError(
                f"measure {name!r} returned NaN for metric {metric!r} on variant {variant!r}; a measure must return "
                "a number for every variant (find why it gave no number, e.g. a division by zero)"
            )
    return items


def _model_state(model: PreTrainedModel) -> tuple:
    """Which model, in which state, cheaply: the object, its mode, and per parameter and buffer its storage and
    PyTorch's version counter, which every in-place change (``mul_`` under ``no_grad``, ``load_state_dict``...)
    increments. Writes through ``.data`` bypass the counters and are not seen."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    versions = tuple((t.data_ptr(), None if t.is_inference() else t._version) for t in tensors)
    return weakref.ref(model), model.training, versions


@dataclass(frozen=True)
class VariantResults:
    """Results of ``evaluate_variants``: every measure on the full model and on each variant.

    Attributes:
        variants: ``{name: removed blocks}``, the full model first (``[]``).
        results: ``{variant: {metric: result}}``: ``PerplexityResult``/``ClassificationResult`` objects (with the
            windows or messages behind their intervals) or plain numbers.
        info: one row per variant with ``INFO_COLUMNS`` (removed blocks, parameters, ideal speedup...).
        reference: the variant that differences and verdicts are read against by default.
        model_state: the measured model and the state of its weights (``evaluate_variants`` reuses these results only
            for the same); None for results built by hand.
        recordings: per measure, the full model's block inputs that ``evaluate_variants(..., resume=True)`` recorded,
            so that a later call with ``reuse`` these results resumes its variants from them too.
    """

    variants: dict[str, list[int]]
    results: dict[str, dict[str, Any]]
    info: pd.DataFrame
    reference: str = FULL
    model_state: tuple | None = field(default=None, repr=False, compare=False)
    recordings: dict[str, BlockInputs] = field(default_factory=dict, repr=False, compare=False)

    @property
    def metrics(self) -> list[str]:
        """The metric names, in measure order (empty when only sizes were compared)."""
        return list(self.results[self.reference])

    def select(self, metrics: Sequence[str]) -> VariantResults:
        """The same variants with only some metrics, in the given order (for a table or a figure of those).

        Args:
            metrics: metric names.

        Returns:
            A ``VariantResults`` with those metrics.

        Raises:
            KeyError: for a metric that was not measured.
        """
        missing = [metric for metric in metrics if metric not in self.metrics]
        if missing:
            raise KeyError(f"metrics {missing} were not measured; the metrics are {self.metrics}")
        chosen = {variant: {m: found[m] for m in metrics} for variant, found in self.results.items()}
        return dataclasses.replace(self, results=chosen)

    def _check(self, variant: str, metric: str) -> Any:
        if variant not in self.results:
            raise KeyError(f"no variant {variant!r}; the variants are {list(self.results)}")
        if metric not in self.results[variant]:
            raise KeyError(f"no metric {metric!r}; the metrics are {self.metrics}")
        return self.results[variant][metric]

    def better(self, metric: str) -> Better | None:
        """The direction in which ``metric`` improves, as its result type knows it.

        Args:
            metric: a metric name.

        Returns:
            "lower" (perplexity), "higher" (accuracy), or None for a plain number, whose direction the results
            cannot know.

        Raises:
            KeyError: for an unknown metric.
        """
        result = self._check(next(iter(self.results)), metric)
        return _UNIT_RESULTS[type(result)][0] if type(result) in _UNIT_RESULTS else None

    def interval(self, variant: str, metric: str) -> ConfidenceInterval:
        """``metric`` of ``variant`` with its 95% bootstrap interval.

        Args:
            variant: a variant name.
            metric: a metric name.

        Returns:
            The value with its interval (``perplexity_ci``, ``accuracy_ci``); NaN bounds for a plain number.

        Raises:
            KeyError: for an unknown variant or metric.
        """
        result = self._check(variant, metric)
        if type(result) in _UNIT_RESULTS:
            return _UNIT_RESULTS[type(result)][1](result)
        return ConfidenceInterval(float(result), np.nan, np.nan)

    def difference(self, a: str, b: str, metric: str) -> ConfidenceInterval:
        """``metric`` of ``b`` minus that of ``a``, with the paired 95% bootstrap interval (same units resampled
        together).

        Args:
            a: the variant subtracted.
            b: the other variant.
            metric: a metric name.

        Returns:
            The difference b - a with its interval (``perplexity_difference``, ``accuracy_difference``); NaN bounds
            for plain numbers.

        Raises:
            KeyError: for an unknown variant or metric.
            ValueError: if the two results do not cover the same windows or messages.
        """
        first, second = self._check(a, metric), self._check(b, metric)
        if type(first) in _UNIT_RESULTS:
            return _UNIT_RESULTS[type(first)][2](first, second)
        return ConfidenceInterval(float(second) - float(first), np.nan, np.nan)

    def verdict(self, a: str, b: str, metric: str) -> str:
        """ "better", "worse" or "within noise" (or "too few to decide"): ``b`` against ``a`` on ``metric``, in the
        metric's direction.

        Args:
            a: the variant compared against (e.g. ``FULL``).
            b: the variant judged.
            metric: a metric name.

        Returns:
            The verdict of the paired interval of b - a (``ConfidenceInterval.verdict``; "too few to decide" below
            ``MIN_UNITS`` units).

        Raises:
            KeyError: for an unknown variant or metric.
            ValueError: for a plain-number metric, which has neither an interval nor a known direction; as
                ``difference``.
        """
        better = self.better(metric)
        if better is None:
            raise ValueError(f"metric {metric!r} is a plain number: it has no interval to read a verdict from")
        return self.difference(a, b, metric).verdict(better=better)

    def long(self) -> pd.DataFrame:
        """The tidy view, the frame ``plot_before_after`` draws.

        Returns:
            One row per (variant, metric), variants in order: columns ``variant``, ``metric``, ``value``, ``low``,
            ``high``, the paired difference to the reference (``diff``, ``diff_low``, ``diff_high``), its
            ``verdict`` ("reference" on the reference's rows, None for a plain number, "too few to decide" below
            ``MIN_UNITS`` units) and the metric's ``better`` direction.
        """
        rows = []
        for variant in self.results:
            for metric in self.metrics:
                ci = self.interval(variant, metric)
                diff = self.difference(self.reference, variant, metric)
                better = self.better(metric)
                verdict = (
                    "reference"
                    if variant == self.reference
                    else (diff.verdict(better=better) if better is not None else None)
                )
                rows.append(
                    {
                        "variant": variant,
                        "metric": metric,
                        "value": ci.estimate,
                        "low": ci.low,
                        "high": ci.high,
                        "diff": diff.estimate,
                        "diff_low": diff.low,
                        "diff_high": diff.high,
                        "verdict": verdict,
                        "better": better,
                    }
                )
        return pd.DataFrame(rows)

    def wide(self) -> pd.DataFrame:
        """One row per variant: ``INFO_COLUMNS``, then each metric's value (intervals: ``long`` or ``table``).

        Returns:
            A frame indexed by ``variant`` with the ``INFO_COLUMNS`` and one float column per metric.
        """
        values = pd.DataFrame(
            {metric: [self.interval(v, metric).estimate for v in self.results] for metric in self.metrics},
            index=self.info.index,
        )
        return pd.concat([self.info, values], axis=1)

    def table(
        self,
        *,
        info: Sequence[str] = ("removed", "params_removed_pct", "ideal_speedup"),
        differences: bool = False,
        styles: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> pd.DataFrame:
        """A table to show: per variant the ``info`` columns, then each metric as "value [low, high]" and, with
        ``differences``, its paired difference to the reference with the verdict (and for an accuracy, its verdict
        against the majority-class baseline).

        Numbers are formatted by ``helpers.display.fmt`` (3 significant digits); accuracies get 3 decimals (they are
        fractions of a count).

        Args:
            info: the ``INFO_COLUMNS`` to show first, in this order.
            differences: add a column "<metric> vs <reference>" after each metric.
            styles: ``{metric: helpers.display.fmt options}``, overriding either default for that metric.

        Returns:
            A frame of strings indexed by ``variant``: the ``info`` columns, then each metric (and its difference).

        Raises:
            ValueError: for ``info`` columns that are not ``INFO_COLUMNS``; as ``helpers.display.fmt``, for ``styles``.
            TypeError: as ``helpers.display.fmt``, for ``styles`` (an unknown option included).
        """
        unknown = [column for column in info if column not in INFO_COLUMNS]
        if unknown:
            raise ValueError(f"info columns {unknown} do not exist; choose among {INFO_COLUMNS}")
        shown = self.info[list(info)].copy()
        if "removed" in shown:
            shown["removed"] = shown["removed"].map(lambda blocks: ",".join(map(str, blocks)) or "-")
        if "params_removed_pct" in shown:
            shown["params_removed_pct"] = shown["params_removed_pct"].map(lambda v: fmt(v, decimals=1))
        for metric in self.metrics:
            style = (styles or {}).get(metric)
            shown[metric] = [self.formatted(v, metric, style) for v in self.results]
            if differences:
                shown[f"{metric} vs {self.reference}"] = [
                    "" if v == self.reference else self.formatted_difference(self.reference, v, metric, style)
                    for v in self.results
                ]
            if differences and metric in self.majority_baselines():
                shown[f"{metric} vs majority"] = [self.majority_verdict(v, metric) for v in self.results]
        return shown

    def _style(self, metric: str, style: Mapping[str, Any] | None) -> dict[str, Any]:
        """How a metric's numbers are shown: ``style`` if given, else 3 decimals for an accuracy (a fraction of a
        count), else ``fmt``'s 3 significant digits."""
        if style is not None:
            return dict(style)
        return {"decimals": 3} if isinstance(self.results[self.reference][metric], _ACCURACIES) else {}

    def formatted(self, variant: str, metric: str, style: Mapping[str, Any] | None = None) -> str:
        """``metric`` of ``variant`` as text, "value [low, high]" (just the value for a plain number), flagged when
        the interval rests on fewer than ``MIN_UNITS`` units.

        Args:
            variant: a variant name.
            metric: a metric name.
            style: ``helpers.display.fmt`` options; None: 3 decimals for accuracies, 3 significant digits otherwise.

        Returns:
            The text, e.g. "31.2 [30.1, 32.4]" (an accuracy: "0.875 [0.820, 0.930]"; on 3 windows
            "31.2 [30.1, 32.4] (n=3, too few)": fewer windows than ``MIN_UNITS``).

        Raises:
            KeyError: for an unknown variant or metric.
            TypeError, ValueError: as ``helpers.display.fmt``, for ``style``.
        """
        ci = self.interval(variant, metric)
        style = self._style(metric, style)
        if np.isnan(ci.low):
            return fmt(ci.estimate, **style)
        flag = f" (n={ci.units}, too few)" if ci.too_few else ""
        return fmt_ci(ci, **style) + flag

    def formatted_difference(self, a: str, b: str, metric: str, style: Mapping[str, Any] | None = None) -> str:
        """``b`` minus ``a`` on ``metric`` as text with its paired interval and verdict.

        Args:
            a: the variant subtracted.
            b: the other variant.
            metric: a metric name.
            style: ``helpers.display.fmt`` options, as for ``formatted``; a sign is always shown.

        Returns:
            The text, e.g. "+12.1 [+5.3, +19] worse"; no interval and no verdict for a plain number.

        Raises:
            KeyError: for an unknown variant or metric.
            ValueError: as ``difference``; as ``helpers.display.fmt``, for ``style``.
            TypeError: as ``helpers.display.fmt``, for ``style``.
        """
        ci = self.difference(a, b, metric)
        style = {**self._style(metric, style), "sign": True}
        if np.isnan(ci.low):
            return fmt(ci.estimate, **style)
        return f"{fmt_ci(ci, **style)} {ci.verdict(better=self.better(metric))}"

    def ranking(self, metric: str) -> list[str]:
        """The variants other than the reference, best first on ``metric`` (point estimates; ties keep the order
        of ``variants``). Whether neighbours differ beyond noise: ``compare``.

        Args:
            metric: a metric with a direction (a perplexity or an accuracy).

        Returns:
            Variant names, best first.

        Raises:
            KeyError: for an unknown metric.
            ValueError: for a plain-number metric, whose direction is unknown.
        """
        better = self.better(metric)
        if better is None:
            raise ValueError(f"metric {metric!r} is a plain number: its direction (lower or higher) is unknown")
        values = pd.Series({v: self.interval(v, metric).estimate for v in self.results if v != self.reference})
        return list(values.sort_values(ascending=better == "lower", kind="stable").index)

    def compare(
        self, pairs: Iterable[tuple[str, str]], metric: str, style: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Paired comparisons of chosen variants on ``metric``: one row per ``(a, b)`` with the difference b - a,
        its 95% interval (numbers, and ``shown`` as text in ``style``, see ``formatted``) and the verdict for ``b``
        ("better", "worse", "within noise", or "too few to decide" below ``MIN_UNITS`` units).

        Args:
            pairs: ``(a, b)`` variant names; each row reads b against a.
            metric: a metric with an interval (a perplexity or an accuracy).
            style: ``helpers.display.fmt`` options for ``shown``; None as in ``formatted``.

        Returns:
            A frame with columns ``a``, ``b``, ``b - a``, ``low``, ``high``, ``shown``, ``verdict for b``.

        Raises:
            KeyError: for an unknown variant or metric.
            ValueError: for a plain-number metric.
        """
        rows = []
        for a, b in pairs:
            ci = self.difference(a, b, metric)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "b - a": ci.estimate,
                    "low": ci.low,
                    "high": ci.high,
                    "shown": fmt_ci(ci, **{**self._style(metric, style), "sign": True}),
                    "verdict for b": self.verdict(a, b, metric),
                }
            )
        return pd.DataFrame(rows)

    def majority_baselines(self) -> dict[str, float]:
        """The level an accuracy must beat to carry signal: always answering the commonest label (SMS) or the
        commonest gold answer position (a multiple-choice benchmark).

        Returns:
            ``{metric: majority accuracy}`` for the accuracy metrics that have one, on the reference's messages or
            items (every variant sees the same ones); empty without one.
        """
        found = {}
        for metric, result in self.results[self.reference].items():
            if isinstance(result, ClassificationResult):
                found[metric] = result.baseline
            elif isinstance(result, ZeroShotResult) and not np.isnan(result.majority):
                found[metric] = result.majority
        return found

    def majority_verdict(self, variant: str, metric: str) -> str:
        """ "better", "worse" or "within noise" (or "too few to decide"): ``variant``'s accuracy interval read
        against the majority-class baseline (``majority_baselines``); "within noise" means no evidence of any signal.

        Args:
            variant: a variant name.
            metric: a classification metric (e.g. ``sms_acc``).

        Returns:
            The verdict against the majority class.

        Raises:
            KeyError: for an unknown variant, or a metric that is not a classification accuracy.
        """
        baselines = self.majority_baselines()
        if metric not in baselines:
            raise KeyError(f"{metric!r} is not a classification metric; those are {list(baselines)}")
        return self.interval(variant, metric).verdict(better="higher", against=baselines[metric])

    def plot(
        self,
        *,
        title: str,
        metrics: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Figure:
        """``plot_before_after`` of these results: one panel per metric with 95% intervals, the majority-class
        baseline drawn on accuracy panels (unless ``options`` give a ``reference``).

        Args:
            title: the figure's title.
            metrics: the metrics to draw, one panel each; None draws every metric.
            labels: ``{metric: label}``: names for the panels (metrics not named keep their names).
            **options: options of ``plot_before_after`` (``ax``, ``logy`` by metric name, ``xtick_rotation``...).

        Returns:
            The Figure drawn on.

        Raises:
            ValueError: for ``metrics`` that were not measured; as ``plot_before_after``.
        """
        from .plots import plot_before_after  # lazy: matplotlib only when drawing

        long = self.long()
        if metrics is not None:
            missing = [m for m in metrics if m not in self.metrics]
            if missing:
                raise ValueError(f"metrics {missing} were not measured; the metrics are {self.metrics}")
            long = long[long["metric"].isin(metrics)]
        baselines = {m: level for m, level in self.majority_baselines().items() if m in set(long["metric"])}
        if baselines and "reference" not in options:
            options = {"reference": baselines, "reference_label": "majority class", **options}
        if labels:
            rename = lambda metric: labels.get(metric, metric)  # noqa: E731 - one-line mapping
            long = long.assign(metric=long["metric"].map(rename))
            options = {
                key: (
                    {rename(m): v for m, v in value.items()}
                    if key == "reference"
                    else [rename(m) for m in value]
                    if key == "logy"
                    else value
                )
                for key, value in options.items()
            }
        return plot_before_after(long, title=title, **options)


def unique_variants(selections: Mapping[str, Iterable[int]]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Selections that remove the same blocks merged into one variant, so each distinct variant is evaluated once.

    Args:
        selections: ``{name: removed blocks}``; several names may remove the same blocks (in any order).

    Returns:
        ``(variants, variant_of)``: ``{"name1 = name2": sorted blocks}`` in first-seen order, and
        ``{name: its variant's name}`` for every selection.

    Raises:
        TypeError: if ``selections`` is not a mapping, or its blocks are not lists of integers
            (``check_block_indices``).
        ValueError: for a name that contains " = ", which joins the names of one variant; for a negative or
            repeated block index.
    """
    check_mapping("selections", selections, "{name: removed blocks}")
    joined = [name for name in selections if isinstance(name, str) and " = " in name]
    if joined:
        raise ValueError(
            f"selection names must not contain ' = ', which joins the names of selections that remove the same "
            f"blocks; rename {joined}"
        )
    by_blocks: dict[tuple[int, ...], list[str]] = {}
    for name, blocks in selections.items():
        by_blocks.setdefault(tuple(check_block_indices(blocks, None, allow_empty=True)), []).append(name)
    variants = {" = ".join(names): list(blocks) for blocks, names in by_blocks.items()}
    variant_of = {name: variant for variant, names in zip(variants, by_blocks.values()) for name in names}
    return variants, variant_of


def evaluate_variants(
    model: PreTrainedModel,
    variants: Mapping[str, Iterable[int]],
    measures: Mapping[str, Measure],
    *,
    reference: str = FULL,
    seq_len: int | None = None,
    reuse: VariantResults | None = None,
    resume: bool = False,
    progress: bool = True,
) -> VariantResults:
    """Run every measure on the full model and on each variant (``skip_blocks``: what ``prune_blocks`` would return).

    Args:
        model: the full model; it is restored after each variant, also when a measure raises.
        variants: ``{name: blocks to remove}``; the full model is added first under the name ``FULL``. A variant
            that removes nothing, or the same blocks as another, gets the results of the first such variant.
        measures: ``{name: f(model) -> result}`` (see ``Measure``), each called once per distinct variant; none
            gives the sizes and ideal speedups only.
        reference: the variant that ``VariantResults`` reads differences and verdicts against.
        seq_len: context length for the ideal speedup's attention term (``ideal_speedup``); None leaves it out.
        reuse: earlier results with the same measures: variants found there (same blocks) are not measured again
            (the live panel keeps the full model's this way), unless the model is another one or its weights have
            changed since (in place included; see ``VariantResults.model_state``).
        resume: record the full model's block inputs while it is measured, and run each variant from the last
            recorded block before its first removed one (``helpers.block_inputs``): the same numbers, and for blocks
            removed deep in the model about half the work. Only for measures that read nothing but the model's
            outputs (perplexity, accuracy), never for sizes or timings: the blocks before are missing inside.
        progress: show a progress bar over the variants.

    Returns:
        A ``VariantResults``.

    Raises:
        ValueError: for a variant named ``FULL`` with blocks, invalid block indices, an unknown reference,
            ``reuse`` results with other metrics, or a measure that returns NaN.
        TypeError: if ``variants`` or ``measures`` is not a mapping; when a measure returns something that is not a
            result, a number or a mapping of numbers; for block indices that are not integers, or a string instead
            of a list (``check_block_indices``).
    """
    check_mapping("variants", variants, "{name: blocks to remove}")
    check_mapping("measures", measures, "{name: f(model) -> result}")
    check_bool("resume", resume)
    blocks = get_blocks(model)
    if FULL in variants and check_block_indices(variants[FULL], len(blocks), allow_empty=True):
        raise ValueError(
            f"the variant name {FULL!r} is reserved for the model with no block removed (always evaluated), but it is "
            f"given blocks {list(variants[FULL])}; give that variant another name"
        )
    plan = {FULL: []} | {
        name: check_block_indices(removed, len(blocks), allow_empty=True)
        for name, removed in variants.items()
        if name != FULL
    }
    if reference not in plan:
        raise ValueError(f"reference {reference!r} is not a variant; choose one of {list(plan)}")

    total, state = parameter_count(model), _model_state(model)
    measured: dict[tuple[int, ...], tuple[dict[str, Any], dict[str, Any]]] = {}  # removed blocks -> results, info
    recordings: dict[str, BlockInputs] = {}
    if reuse is not None and reuse.model_state == state:
        measured = {
            tuple(removed): (reuse.results[n], reuse.info.loc[n].to_dict()) for n, removed in reuse.variants.items()
        }
        recordings = dict(reuse.recordings)
    for name, removed in progress_bar(plan.items(), f"evaluating {len(plan)} variants", progress):
        if tuple(removed) not in measured:
            with skip_blocks(model, removed) as variant:
                found: dict[str, Any] = {}
                for measure_name, measure in measures.items():
                    result = _run_measure(variant, measure, removed, recordings, measure_name, resume)
                    found |= _flatten(name, measure_name, result)
                left, left_bytes = parameter_count(variant), model_bytes(variant)
            measured[tuple(removed)] = (
                found,
                {
                    "removed": removed,
                    "n_removed": len(removed),
                    "blocks_left": len(blocks) - len(removed),
                    "parameters": left,
                    "params_removed_pct": 100 * (total - left) / total,
                    "MiB": left_bytes / 2**20,
                    "ideal_speedup": ideal_speedup(model, removed, seq_len=seq_len),
                },
            )
    results = {name: measured[tuple(removed)][0] for name, removed in plan.items()}
    info = {name: measured[tuple(removed)][1] for name, removed in plan.items()}
    metric_sets = {tuple(found) for found in results.values()}
    if len(metric_sets) != 1:
        raise ValueError(
            f"the variants' results hold different metrics {sorted(metric_sets)}; reuse only results "
            "of the same measures"
        )
    frame = pd.DataFrame.from_dict(info, orient="index").astype(
        {"n_removed": int, "blocks_left": int, "parameters": int}
    )
    frame.index.name = "variant"
    return VariantResults(
        variants=plan, results=results, info=frame, reference=reference, model_state=state, recordings=recordings
    )


def _run_measure(
    variant: PreTrainedModel,
    measure: Measure,
    removed: list[int],
    recordings: dict[str, BlockInputs],
    name: str,
    resume: bool,
) -> Any:
    """One measure on one variant; with ``resume``, the full model (nothing ``removed``) records its block inputs
    in ``recordings[name]`` and a variant runs from them (every block again if the measure's forward calls differ)."""
    if resume and not removed:
        recordings[name] = BlockInputs(variant)
        with recordings[name].record(variant):
            return measure(variant)
    if resume and name in recordings:
        try:
            with recordings[name].resume(variant, min(removed)) as shallow:
                return measure(shallow)
        except MissingRecording:
            pass
    return measure(variant)


def quality_measures(
    tokenizer: PreTrainedTokenizerBase,
    *,
    texts: Mapping[str, Sequence[str]],
    sms: pd.DataFrame | None = None,
    sms_examples: pd.DataFrame | None = None,
    shots: int = 4,
    seq_len: int = 128,
    max_windows: int | None = 32,
    max_sms: int | None = 200,
) -> dict[str, Measure]:
    """The course's quality measures for ``evaluate_variants``: perplexity on each text set and few-shot SMS accuracy,
    the same windows and messages for every variant (so ``reuse`` can add a learner's own selection later).

    Args:
        tokenizer: the model's tokenizer.
        texts: ``{label: texts}``, one perplexity measure ``ppl_<label>`` each.
        sms: labelled messages for the measure ``sms_acc``; None: no SMS measure.
        sms_examples: the frame the solved shots are drawn from.
        shots: solved examples per SMS prompt.
        seq_len: perplexity window length.
        max_windows: perplexity windows per text set (None: all).
        max_sms: messages scored (None: all).

    Returns:
        ``{name: f(model) -> result}`` for ``evaluate_variants``.

    Raises:
        ValueError: when there is nothing to evaluate, or few-shot SMS without ``sms_examples``.
        TypeError: if ``texts`` is not a mapping.
    """
    check_mapping("texts", texts, "{label: texts}, e.g. {'wikitext': texts}")
    if not texts and sms is None:
        raise ValueError("nothing to evaluate: give at least one text set in `texts` or an `sms` frame")
    if sms is not None and shots and sms_examples is None:
        raise ValueError("few-shot SMS needs `sms_examples` (e.g. load_sms('calibration')); or pass shots=0")
    measures: dict[str, Measure] = {
        f"ppl_{label}": (
            lambda m, t=text_set: perplexity(m, tokenizer, t, seq_len=seq_len, max_windows=max_windows, progress=False)
        )
        for label, text_set in texts.items()
    }
    if sms is not None:
        measures["sms_acc"] = lambda m: sms_accuracy(
            m,
            tokenizer,
            sms,
            shots=shots,
            examples=sms_examples,
            max_examples=max_sms,
            decision="prior",
            progress=False,
        )
    return measures


def benefits_table(
    model: PreTrainedModel,
    variants: Mapping[str, Iterable[int]],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seq_len: int | None = None,
    **latency: int,
) -> pd.DataFrame:
    """What each variant saves: sizes and the ideal speedup, and with a ``tokenizer`` the measured latency.

    Args:
        model: the full model.
        variants: ``{name: blocks to remove}``; a first row ``FULL`` is added.
        tokenizer: with one, all variants are timed interleaved (``time_variants``) and ``measured_speedup`` (each
            one's decoding speed over the full model's) added; without, nothing is timed.
        seq_len: context length for the ideal speedup's attention term.
        **latency: options of ``time_variants`` (``prompt_tokens``, ``new_tokens``, ``repetitions``, ``progress``...).

    Returns:
        ``VariantResults.wide()``: one row per variant with ``INFO_COLUMNS`` and ``time_variants``' columns.

    Raises:
        ValueError: as ``evaluate_variants`` or ``time_variants``.
        TypeError: as ``evaluate_variants`` or ``time_variants`` (an option that is not an integer, or unknown).
    """
    table = evaluate_variants(model, variants, {}, seq_len=seq_len, progress=False).wide()
    if tokenizer is not None:
        table = table.join(time_variants(model, tokenizer, dict(table["removed"]), **latency))
        table["measured_speedup"] = table["decode_tokens_per_s"] / table.loc[FULL, "decode_tokens_per_s"]
    return table
