"""Zero-shot benchmark results as evaluation units: per-item accuracies with intervals, paired differences and
levels to read them against.

``ZeroShotResult`` turns a task's per-item results (``evaluate_zero_shot``'s frame) into a unit result, like
``PerplexityResult`` and ``ClassificationResult``: it carries its items, so the evaluation core
(``helpers.evaluation``) gives it a bootstrap interval, paired differences on the same items, and verdicts against
chance and the majority answer. The course's stored per-item results of its variants are read and checked by
``helpers.fast.stored_results``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .statistics import ConfidenceInterval, bootstrap_ci, paired_difference
from .zero_shot import TASKS, evaluate_zero_shot

BENCHMARK_TASKS = ("arc_easy", "piqa", "hellaswag", "lambada_openai")
"""The tasks the course stores and shows: three multiple-choice tasks with signal at 135M parameters (ARC-Easy, PIQA,
HellaSwag) and LAMBADA, which predicts a word, as generation does."""
HEADLINE_METRICS = ("arc_easy acc", "piqa acc", "hellaswag acc_norm", "lambada_openai acc")
"""One metric per task, as the course shows them: accuracy, and for HellaSwag the length-normalised accuracy (lm-eval
reports both; HellaSwag's endings differ much in length, which raw log-likelihoods punish)."""
POOLED = "all items (pooled)"
"""The name of ``pooled_result``'s metric."""


@dataclass(frozen=True)
class ZeroShotResult:
    """One benchmark metric of one model, per item: accuracy (``acc``/``acc_norm``) on a task's items.

    Attributes:
        task: the task name (``helpers.zero_shot.TASK_NAMES``).
        metric: "acc" or "acc_norm".
        items: the items' row indices, in order.
        correct: 1.0 where the item was answered correctly, else 0.0 (the bootstrap resamples it).
        chance: the expected accuracy of guessing uniformly among each item's choices (0 for LAMBADA: no choices).
        majority: the accuracy of always giving the commonest gold answer position among these items (NaN for
            LAMBADA, which has no answer positions).
    """

    task: str
    metric: str
    items: np.ndarray
    correct: np.ndarray
    chance: float
    majority: float

    @property
    def accuracy(self) -> float:
        """The share of items answered correctly."""
        return float(np.mean(self.correct))


def zero_shot_ci(result: ZeroShotResult, **bootstrap: object) -> ConfidenceInterval:
    """Accuracy with its percentile-bootstrap interval over items.

    Args:
        result: a ``ZeroShotResult``.
        **bootstrap: keyword arguments of ``bootstrap_ci`` (``n_boot``, ``confidence``, ``seed``).

    Returns:
        The accuracy and its interval.
    """
    return bootstrap_ci(result.correct, **bootstrap)


def zero_shot_result_difference(a: ZeroShotResult, b: ZeroShotResult, **bootstrap: object) -> ConfidenceInterval:
    """Accuracy of ``b`` minus that of ``a`` with the paired bootstrap interval (the same items resampled together).

    Args:
        a: the result subtracted.
        b: the other result, on the same task, metric and items.
        **bootstrap: keyword arguments of ``paired_difference``.

    Returns:
        The difference b - a and its interval.

    Raises:
        ValueError: if the two results are of different tasks, metrics or items.
    """
    if (a.task, a.metric) != (b.task, b.metric) or not np.array_equal(a.items, b.items):
        raise ValueError(
            f"cannot pair {a.task} {a.metric} ({len(a.items)} items) with {b.task} {b.metric} ({len(b.items)} items): "
            "a paired difference needs the same task, metric and items"
        )
    return paired_difference(a.correct, b.correct, **bootstrap)


def _choices(task: str, loglik: object) -> int:
    return 0 if task == "lambada_openai" else len(loglik)


def zero_shot_results(items: pd.DataFrame) -> dict[str, ZeroShotResult]:
    """The accuracy metrics of ``evaluate_zero_shot``'s frame as unit results, ``{"<task> <metric>": result}``.

    LAMBADA gives "lambada_openai acc" (greedy match of the last word); its perplexity is not an accuracy.

    Args:
        items: the frame ``evaluate_zero_shot`` returns (one model).

    Returns:
        One ``ZeroShotResult`` per task and accuracy metric lm-eval reports, tasks in frame order.

    Raises:
        ValueError: if ``items`` lacks ``evaluate_zero_shot``'s columns or repeats an item of a task.
    """
    needed = {"task", "item", "gold", "loglik", "acc", "acc_norm"}
    if not isinstance(items, pd.DataFrame) or not needed <= set(items.columns):
        raise ValueError(f"expected the frame evaluate_zero_shot returns (columns {sorted(needed)})")
    if items.duplicated(["task", "item"]).any():
        raise ValueError("the frame repeats (task, item) pairs; give one model's results")
    found = {}
    for task, rows in items.groupby("task", sort=False):
        choices = np.array([_choices(task, loglik) for loglik in rows["loglik"]], dtype=float)
        chance = float(np.mean(np.where(choices > 0, 1 / np.maximum(choices, 1), 0.0)))
        majority = np.nan if task == "lambada_openai" else float(rows["gold"].value_counts().iloc[0] / len(rows))
        for metric in (m for m in TASKS[task].metrics if m != "perplexity"):
            found[f"{task} {metric}"] = ZeroShotResult(
                task, metric, rows["item"].to_numpy(), rows[metric].to_numpy(dtype=float), chance, majority
            )
    return found


def pooled_result(found: Mapping[str, ZeroShotResult], metrics: Sequence[str], name: str = POOLED) -> ZeroShotResult:
    """Accuracy over the items of several metrics together: one number for "the benchmarks", with an interval.

    Every item counts once, so a task with more items weighs more (unlike the mean of the tasks' accuracies that
    papers average); items are named "<task>:<row>" so that two models pair on the same items.

    Args:
        found: ``{metric: ZeroShotResult}`` of one model (``zero_shot_results``).
        metrics: the metrics to pool, one per task.
        name: the pooled result's task name.

    Returns:
        A ``ZeroShotResult`` of task ``name``, metric "acc", chance the items' mean chance, no majority (NaN).

    Raises:
        KeyError: for a metric not in ``found``.
        ValueError: if two metrics are of the same task (an item would count twice).
    """
    tasks = [found[m].task for m in metrics]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"pool one metric per task; {list(metrics)} repeat a task")
    items = np.array([f"{found[m].task}:{i}" for m in metrics for i in found[m].items])
    correct = np.concatenate([found[m].correct for m in metrics])
    chance = sum(found[m].chance * len(found[m].items) for m in metrics) / len(items)
    return ZeroShotResult(name, "acc", items, correct, float(chance), np.nan)


def zero_shot_measure(
    tokenizer: PreTrainedTokenizerBase, items: Mapping[str, Sequence[int]], **options: Any
) -> Callable[[PreTrainedModel], dict[str, ZeroShotResult]]:
    """A measure for ``evaluate_variants``: zero-shot accuracy on the given items, one metric per task and metric.

    Args:
        tokenizer: the model's tokenizer.
        items: ``{task: [row index, ...]}``, as ``evaluate_zero_shot``'s ``items``.
        **options: further options of ``evaluate_zero_shot`` (``batch_tokens``, ``source``, ``progress``).

    Returns:
        ``f(model) -> {"<task> <metric>": ZeroShotResult}``.
    """

    def measure(model: PreTrainedModel) -> dict[str, ZeroShotResult]:
        return zero_shot_results(evaluate_zero_shot(model, tokenizer, list(items), items=dict(items), **options))

    return measure
