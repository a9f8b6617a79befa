"""The course's variants on the zero-shot benchmarks: from the stored per-item results, checked live, or all live.

``benchmark_variants`` is the evaluation core's benchmark preset. For the course model and the course's selections
(and chapter 6's healed models, ``HealedVariant``, matched by their recipe) it reads the stored results (about an
hour of CPU work, ``benchmarks/zero_shot_results.py``) and re-scores a small seeded subset of them live, which must
agree item by item (``helpers.fast.stored_results``). For another model, other blocks or recipes, or when asked
(``live_items``; "all" runs every item, for a GPU), it scores live. Either way it returns
a ``VariantResults`` whose metrics are ``"<task> <metric>"`` accuracies with bootstrap intervals, paired differences
and verdicts against the majority answer. ``signal_table`` reads each task against chance and the majority answer;
``retained_share`` puts tasks with different chance levels on one scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .benchmark_results import (
    BENCHMARK_TASKS,
    HEADLINE_METRICS,
    POOLED,
    ZeroShotResult,
    pooled_result,
    zero_shot_measure,
    zero_shot_results,
)
from .blocks import check_block_indices, num_blocks
from .checks import check_int, check_mapping
from .display import fmt_ci
from .evaluation import FULL, VariantResults, evaluate_variants
from .fast.stored_results import (
    StoredZeroShot,
    check_stored_live,
    code_fingerprint,
    load_stored_zero_shot,
    stored_variant_names,
)
from .statistics import ConfidenceInterval
from .zero_shot import item_ids, load_task


@dataclass(frozen=True)
class HealedVariant:
    """A pruned model healed afterwards (LoRA, linear maps), for ``benchmark_variants`` to score beside the others.

    Attributes:
        model: the healed model (its blocks already removed).
        removed: the blocks it lacks, numbered as in the full model: its size, and its pruned twin.
        recipe: how it was healed, JSON-able (method, data, settings): the stored results serve it only when a stored
            variant has these blocks and this recipe, so a changed setting falls back to live scoring.
    """

    model: PreTrainedModel
    removed: Sequence[int]
    recipe: Mapping[str, Any]


@dataclass(frozen=True)
class BenchmarkRun:
    """What ``benchmark_variants`` found.

    Attributes:
        results: the variants' accuracies (metrics ``"<task> <metric>"``).
        source: "stored" (the stored per-item results) or "live" (scored now).
        reason: why that source, in a sentence for the notebook to print.
        items: ``{task: [row index, ...]}`` behind ``results``.
        agreement: with stored results, the live re-scoring of a subset against them (``stored_agreement`` rows with
            a ``variant`` column); None for live results.
    """

    results: VariantResults
    source: Literal["stored", "live"]
    reason: str
    items: dict[str, list[int]]
    agreement: pd.DataFrame | None

    @property
    def agrees(self) -> bool | None:
        """Whether every live re-scored item agreed with the stored one (``stored_agreement``); None when live."""
        return None if self.agreement is None else bool(self.agreement["agrees"].all())

    def headline(self, metrics: Sequence[str] = HEADLINE_METRICS) -> VariantResults:
        """The results with one metric per task and, last, all their items pooled (``POOLED``).

        Args:
            metrics: one metric per task, among ``results.metrics``.

        Returns:
            A ``VariantResults`` with ``metrics`` and ``POOLED``.

        Raises:
            KeyError: for a metric that was not measured.
            ValueError: as ``pooled_result``.
        """
        return add_pooled(self.results.select(metrics), metrics)


def add_pooled(results: VariantResults, metrics: Sequence[str], name: str = POOLED) -> VariantResults:
    """``results`` with one more metric, ``name``: the items of ``metrics`` pooled (``pooled_result``), per variant.

    Args:
        results: benchmark results.
        metrics: one metric per task, among ``results.metrics``.
        name: the new metric's name.

    Returns:
        A ``VariantResults`` with the pooled metric last.

    Raises:
        KeyError: for a metric that was not measured.
        ValueError: as ``pooled_result``; if ``name`` is already a metric.
    """
    if name in results.metrics:
        raise ValueError(f"{name!r} is already a metric; choose another name")
    pooled = {
        variant: {**found, name: pooled_result(found, metrics, name)} for variant, found in results.results.items()
    }
    return dataclasses.replace(results, results=pooled)


def benchmark_variants(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    variants: Mapping[str, Sequence[int]],
    *,
    model_id: str,
    live_items: int | Literal["all"] | None = None,
    fallback_items: int = 20,
    check_items: int = 5,
    check_variants: Sequence[str] = (FULL,),
    stored: StoredZeroShot | None = None,
    tasks: Sequence[str] = BENCHMARK_TASKS,
    seed: int = 0,
    progress: bool = False,
    healed: Mapping[str, HealedVariant] | None = None,
) -> BenchmarkRun:
    """Zero-shot accuracy of the full model and every variant: stored and checked, or scored live.

    Args:
        model: the full model.
        tokenizer: its tokenizer.
        variants: ``{name: blocks to remove}``.
        model_id: the model's id; the stored results serve only the model they were made with.
        live_items: None: use the stored results when they cover the model and every variant's blocks, else score
            ``fallback_items`` per task live. An integer: score that many seeded items per task live. "all": score
            every item of each task live (hours on a CPU; minutes on a GPU).
        fallback_items: items per task scored live when the stored results cannot serve.
        check_items: with stored results, items per task re-scored live for each of ``check_variants``.
        check_variants: the variants re-scored (names of ``variants``, or ``FULL``).
        stored: the stored results; None reads the course's (``load_stored_zero_shot``).
        tasks: the tasks scored live (stored results bring their own).
        seed: the seed of the live item draws.
        progress: show progress bars.
        healed: ``{name: HealedVariant}``: models healed after pruning, scored on the same items as the others (from
            the stored results when a stored variant has their blocks and recipe, else live).

    Returns:
        A ``BenchmarkRun``.

    Raises:
        ValueError: for ``live_items`` that is neither None, a positive integer nor "all"; a ``check_variants`` name
            that is not a variant; a healed name that is also a variant's; as ``evaluate_variants``.
        TypeError: if ``variants`` or ``healed`` is not a mapping, or a healed value is not a ``HealedVariant``; as
            ``evaluate_variants``, ``check_int``.
    """
    check_mapping("variants", variants, "{name: blocks to remove}")
    if healed is not None:
        check_mapping("healed", healed, "{name: HealedVariant}")
    healed = dict(healed or {})
    wrong = [name for name, value in healed.items() if not isinstance(value, HealedVariant)]
    if wrong:
        raise TypeError(f"healed values must be HealedVariant(model, removed, recipe); {wrong} are not")
    clash = [name for name in healed if name in variants or name == FULL]
    if clash:
        raise ValueError(f"healed names {clash} are also variants' names; give each row its own name")
    if live_items != "all":
        check_int("live_items", live_items, none_means="the stored results")
    check_int("fallback_items", fallback_items)
    check_int("check_items", check_items)
    n_blocks = num_blocks(model)
    plan = {
        FULL: [],
        **{name: check_block_indices(blocks, n_blocks, allow_empty=True) for name, blocks in variants.items()},
        **{name: check_block_indices(h.removed, n_blocks, allow_empty=True) for name, h in healed.items()},
    }
    sizes = evaluate_variants(model, {name: plan[name] for name in plan if name != FULL}, {}, progress=False)
    if healed:  # a healed row has its pruned twin's blocks: no later `reuse` may take its numbers for the twin's
        sizes = dataclasses.replace(sizes, model_state=None)
    models = {name: h.model for name, h in healed.items()}
    unknown = [name for name in check_variants if name not in plan]
    if unknown:
        raise ValueError(f"check_variants {unknown} are not variants; choose among {list(plan)}")
    if stored is None and live_items is None:
        try:
            stored = load_stored_zero_shot()
        except FileNotFoundError:
            stored = None
    recipes = {name: h.recipe for name, h in healed.items()}
    names = (
        stored_variant_names(stored, model, model_id, plan, recipes)
        if live_items is None
        else "live scoring was asked for"
    )
    if isinstance(names, dict):
        results = {name: zero_shot_results(stored.frame(names[name])) for name in plan}
        agreement = check_stored_live(
            model, tokenizer, stored, names, plan, check_variants, check_items, seed, progress, models
        )
        made_by = (
            "this code" if stored.meta["code_fingerprint"] == code_fingerprint() else "an earlier version of the code"
        )
        reason = (
            f"stored results of {len(plan)} variants (made by {made_by}), {check_items} items per task re-scored live "
            f"for {', '.join(check_variants)}"
        )
        return BenchmarkRun(dataclasses.replace(sizes, results=results), "stored", reason, stored.item_ids(), agreement)
    limit = None if live_items == "all" else (live_items or fallback_items)
    items = {task: item_ids(len(load_task(task)), limit, seed) for task in tasks}
    measure = zero_shot_measure(tokenizer, items, progress=progress)
    results = evaluate_variants(model, variants, {"zero-shot": measure}, progress=progress).results
    for name, healed_model in models.items():  # each healed model as it is: its own "full" model
        results[name] = evaluate_variants(healed_model, {}, {"zero-shot": measure}, progress=progress).results[FULL]
    counts = ", ".join(f"{task} {len(ids)}" for task, ids in items.items())
    results = dataclasses.replace(sizes, results={name: results[name] for name in plan})
    return BenchmarkRun(results, "live", f"scored live ({names}): {counts} items", items, None)


def _zero_shot_metrics(results: VariantResults) -> list[str]:
    return [m for m in results.metrics if isinstance(results.results[results.reference][m], ZeroShotResult)]


def signal_table(results: VariantResults) -> pd.DataFrame:
    """Each benchmark metric of the reference (full) model against chance and the majority answer.

    Args:
        results: ``benchmark_variants``' results (other metrics are left out).

    Returns:
        A frame indexed by metric: ``items``, ``chance``, ``majority`` (NaN where the task has no answer positions),
        the reference's accuracy as text with its interval, and ``signal``: "above chance and majority" when the
        whole interval lies above the higher of the two, "at chance" when it contains it, "below chance" otherwise,
        and "too few to decide" on fewer than ``MIN_UNITS`` items.
    """
    rows = {}
    for metric in _zero_shot_metrics(results):
        result = results.results[results.reference][metric]
        level = max(result.chance, 0.0 if np.isnan(result.majority) else result.majority)
        ci = results.interval(results.reference, metric)
        verdict = ci.verdict(better="higher", against=level)
        rows[metric] = {
            "items": len(result.items),
            "chance": result.chance,
            "majority": result.majority,
            results.reference: fmt_ci(ci, decimals=3),
            "signal": {"better": "above chance and majority", "within noise": "at chance", "worse": "below chance"}.get(
                verdict, verdict
            ),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("metric")


def retained_share(results: VariantResults, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """How much of the reference model's above-chance accuracy each variant keeps, per metric.

    ``share = (acc_variant - chance) / (acc_reference - chance)``: 1 keeps it all, 0 is chance level. Its interval
    is the paired interval of the difference divided by the reference's margin over chance, which is treated as
    fixed (it is measured on the same items). Only metrics whose reference is above chance and majority
    (``signal_table``) are included: a share of no signal means nothing.

    Args:
        results: ``benchmark_variants``' results.
        metrics: the metrics to include; None: every benchmark metric with signal.

    Returns:
        A long frame with columns ``variant``, ``metric``, ``share``, ``low``, ``high``.

    Raises:
        ValueError: for a metric that is not a benchmark accuracy or whose reference has no signal.
    """
    signal = signal_table(results)
    with_signal = [m for m in signal.index if signal.loc[m, "signal"] == "above chance and majority"]
    chosen = with_signal if metrics is None else list(metrics)
    refused = [m for m in chosen if m not in with_signal]
    if refused:
        raise ValueError(f"metrics {refused} are not benchmark accuracies above chance; those are {with_signal}")
    rows = []
    for metric in chosen:
        chance = signal.loc[metric, "chance"]
        margin = results.interval(results.reference, metric).estimate - chance
        for variant in results.results:
            if variant == results.reference:
                continue
            diff: ConfidenceInterval = results.difference(results.reference, variant, metric)
            rows.append(
                {
                    "variant": variant,
                    "metric": metric,
                    "share": 1 + diff.estimate / margin,
                    "low": 1 + diff.low / margin,
                    "high": 1 + diff.high / margin,
                }
            )
    return pd.DataFrame(rows, columns=["variant", "metric", "share", "low", "high"])


def benchmark_table(results: VariantResults) -> pd.DataFrame:
    """The variants' benchmark accuracies with their intervals, and under them the two levels every accuracy is read
    against: chance (guessing among the choices) and the majority answer (always the commonest answer position).

    Args:
        results: benchmark results (e.g. ``BenchmarkRun.headline()``).

    Returns:
        ``results.table(info=["removed"])`` with two more rows, "chance" and "majority answer" ("-" where a task has
        no answer positions).
    """
    shown = results.table(info=["removed"])
    levels = signal_table(results)
    for row, column in (("chance", "chance"), ("majority answer", "majority")):
        shown.loc[row] = ["-"] + [
            "-" if np.isnan(levels.loc[m, column]) else f"{levels.loc[m, column]:.3f}" for m in results.metrics
        ]
    return shown


def word_vs_choice(shares: pd.DataFrame, word_metric: str, choice_metric: str) -> pd.DataFrame:
    """Per variant, whether predicting a word (LAMBADA) kept less of the full model's skill than multiple choice.

    ShortGPT reports that multiple-choice accuracy holds up after depth pruning while generation collapses. Here it
    is read from ``retained_share`` intervals of the word task and of the multiple-choice items (e.g. pooled with
    ``add_pooled``): "less than multiple choice" when the word task's whole interval lies below the other's,
    "more than multiple choice" when above, else "within noise".

    Args:
        shares: ``retained_share``'s frame, with both metrics.
        word_metric: the word-prediction metric (e.g. "lambada_openai acc").
        choice_metric: the multiple-choice metric to compare with.

    Returns:
        A frame indexed by variant: each metric's share with its interval, and ``verdict``.

    Raises:
        ValueError: if either metric is missing from ``shares``.
    """
    missing = [m for m in (word_metric, choice_metric) if m not in set(shares["metric"])]
    if missing:
        raise ValueError(f"shares lack {missing}; they have {sorted(set(shares['metric']))}")
    rows = {}
    for variant, group in shares.groupby("variant", sort=False):
        word, choice = (group[group["metric"] == m].iloc[0] for m in (word_metric, choice_metric))
        verdict = ConfidenceInterval(word["share"], word["low"], word["high"])
        rows[variant] = {
            f"{word_metric} kept": fmt_ci(verdict, decimals=2),
            f"{choice_metric} kept": fmt_ci(
                ConfidenceInterval(choice["share"], choice["low"], choice["high"]), decimals=2
            ),
            "verdict": "less than multiple choice"
            if word["high"] < choice["low"]
            else "more than multiple choice"
            if word["low"] > choice["high"]
            else "within noise",
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")
