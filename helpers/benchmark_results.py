"""Zero-shot benchmark results as evaluation units, and the course's stored per-item results.

Scoring the course's variants on about a thousand items per task takes about an hour of a 2-core CPU, too long for a
notebook; ``benchmarks/zero_shot_results.py`` does it once and stores one row per (variant, task, item) in
``helpers/results/`` beside a JSON file that says what was run (model, removed blocks, task definitions, item draw,
code fingerprint). The notebooks read it with ``load_stored_zero_shot`` and check a small live subset against it
(``stored_agreement``).

``ZeroShotResult`` turns a task's per-item results into a unit result, like ``PerplexityResult`` and
``ClassificationResult``: it carries its items, so the evaluation core (``helpers.evaluation``) gives it a bootstrap
interval, paired differences on the same items, and verdicts against chance and the majority answer.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .statistics import ConfidenceInterval, bootstrap_ci, paired_difference
from .zero_shot import TASKS, evaluate_zero_shot, load_task

BENCHMARK_TASKS = ("arc_easy", "piqa", "hellaswag", "lambada_openai")
"""The tasks the course stores and shows: three multiple-choice tasks with signal at 135M parameters (ARC-Easy, PIQA,
HellaSwag) and LAMBADA, which predicts a word, as generation does."""
HEADLINE_METRICS = ("arc_easy acc", "piqa acc", "hellaswag acc_norm", "lambada_openai acc")
"""One metric per task, as the course shows them: accuracy, and for HellaSwag the length-normalised accuracy (lm-eval
reports both; HellaSwag's endings differ much in length, which raw log-likelihoods punish)."""
POOLED = "all items (pooled)"
"""The name of ``pooled_result``'s metric."""
RESULTS_DIR = Path(__file__).parent / "results"
STORED_ITEMS = RESULTS_DIR / "zero_shot_items.csv.gz"
"""The course's stored per-item results (``benchmarks/zero_shot_results.py`` writes them)."""
STORED_META = RESULTS_DIR / "zero_shot_items.json"
"""What the stored results are: model, variants and their removed blocks, tasks, item draw, code fingerprint."""
FINGERPRINTED = ("zero_shot.py",)
"""The modules whose source defines the stored numbers: documents, prompts, tokenisation and scoring."""
STORED_DTYPES = {"variant": str, "task": str, "item": int, "gold": int, "pred": int, "acc": float, "pred_norm": int}
STORED_DTYPES |= {"acc_norm": float}  # as evaluate_zero_shot returns them (a CSV would read 1.0 back as 1)
LOGLIK_NOISE = 1e-3
"""Nats: float32 log-likelihoods computed on another CPU or in other batch shapes differ by ~1e-5; two choices closer
than this may swap places between two correct computations, nothing else may."""


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

    LAMBADA gives "lambada_openai acc" (greedy match of the last word); its perplexity is not an accuracy (see
    ``zero_shot_summary``).

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


# --- the stored results -------------------------------------------------------------------------------------------


def _code_lines(source: str) -> list[str]:
    """The lines of ``source`` that compute: without docstrings (any statement that is only a string), comment-only
    and blank lines, and trailing spaces. Line ranges come from ``ast``, the same in every Python version."""
    described: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        for statement in body if isinstance(body, list) else []:  # a lambda's body is one expression
            if isinstance(statement, ast.Expr) and isinstance(getattr(statement.value, "value", None), str):
                described.update(range(statement.lineno, statement.end_lineno + 1))
    return [
        line.rstrip()
        for number, line in enumerate(source.splitlines(), start=1)
        if number not in described and line.strip() and not line.lstrip().startswith("#")
    ]


def code_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of the code in ``FINGERPRINTED``: it changes when the code that defines the
    stored numbers changes, not when its docstrings or comments do (``_code_lines``).

    Returns:
        The fingerprint.
    """
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        digest.update("\n".join(_code_lines((Path(__file__).parent / name).read_text())).encode())
    return digest.hexdigest()[:16]


def _encode(values: Sequence[float]) -> str:
    return ";".join(f"{value:.6f}" for value in values)


def save_stored_zero_shot(
    frames: Mapping[str, pd.DataFrame], meta: Mapping[str, Any], items_path: Path, meta_path: Path
) -> None:
    """Write per-variant ``evaluate_zero_shot`` frames as one compressed CSV, and ``meta`` as JSON.

    Args:
        frames: ``{variant: frame}``; ``meta["variants"][variant]["removed"]`` must name its removed blocks.
        meta: what was run (model, variants, tasks, fingerprint, wall time...); written as given.
        items_path: the CSV (``.csv.gz``).
        meta_path: the JSON.

    Raises:
        ValueError: if a variant of ``frames`` is missing from ``meta["variants"]``.
    """
    missing = [variant for variant in frames if variant not in meta.get("variants", {})]
    if missing:
        raise ValueError(f"meta['variants'] does not describe {missing}; every stored variant needs its blocks")
    table = pd.concat(
        [frame.assign(variant=variant)[["variant", *frame.columns]] for variant, frame in frames.items()],
        ignore_index=True,
    )
    table["loglik"] = table["loglik"].map(_encode)
    table.to_csv(items_path, index=False, float_format="%.6g")
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class StoredZeroShot:
    """The stored per-item results.

    Attributes:
        items: one row per (variant, task, item) with ``evaluate_zero_shot``'s columns and ``variant``.
        meta: the JSON that describes them (``model``, ``variants`` with their ``removed`` blocks, ``tasks``, ...).
    """

    items: pd.DataFrame
    meta: dict[str, Any]

    def variant_of(self, removed: Sequence[int]) -> str | None:
        """The stored variant that removes exactly these blocks, or None.

        Args:
            removed: block indices (any order).

        Returns:
            The variant's name, or None when no stored variant removes these blocks.
        """
        wanted = sorted(int(b) for b in removed)
        return next((name for name, v in self.meta["variants"].items() if sorted(v["removed"]) == wanted), None)

    def frame(self, variant: str) -> pd.DataFrame:
        """One variant's per-item frame, as ``evaluate_zero_shot`` returned it.

        Args:
            variant: a stored variant's name.

        Returns:
            The frame (without the ``variant`` column).

        Raises:
            KeyError: for a variant that is not stored.
        """
        if variant not in self.meta["variants"]:
            raise KeyError(f"no stored variant {variant!r}; stored: {list(self.meta['variants'])}")
        rows = self.items[self.items["variant"] == variant]
        return rows.drop(columns="variant").reset_index(drop=True)

    def item_ids(self) -> dict[str, list[int]]:
        """``{task: [row index, ...]}``: the items every stored variant was scored on."""
        full = self.frame(next(iter(self.meta["variants"])))
        return {task: rows["item"].tolist() for task, rows in full.groupby("task", sort=False)}


def load_stored_zero_shot(items_path: Path = STORED_ITEMS, meta_path: Path = STORED_META) -> StoredZeroShot:
    """Read the stored per-item results.

    Args:
        items_path: the CSV ``save_stored_zero_shot`` wrote.
        meta_path: its JSON.

    Returns:
        A ``StoredZeroShot``.

    Raises:
        FileNotFoundError: if either file is missing (the message says how to make them).
    """
    for path in (items_path, meta_path):
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{path} is missing; the course ships it in helpers/results, and "
                "`python benchmarks/zero_shot_results.py` writes it again"
            )
    items = pd.read_csv(items_path, dtype=STORED_DTYPES)
    items["loglik"] = items["loglik"].map(lambda text: tuple(float(v) for v in str(text).split(";")))
    return StoredZeroShot(items, json.loads(Path(meta_path).read_text(encoding="utf-8")))


def _near_tie(task: str, item: int, loglik: np.ndarray, tolerance: float) -> bool:
    """Whether the two best choices of a stored item are within ``tolerance``, raw or length-normalised (acc_norm
    divides by the choice's characters); LAMBADA's greedy match has no choices to compare, so never."""
    if task == "lambada_openai" or len(loglik) < 2:
        return False
    choices = TASKS[task].to_item(load_task(task)[item]).choices
    scores = [loglik] + ([loglik / np.array([float(len(c)) for c in choices])] if choices else [])
    return any(np.diff(np.sort(values)[-2:])[0] <= tolerance for values in scores)


def stored_agreement(live: pd.DataFrame, stored: pd.DataFrame, *, tolerance: float = LOGLIK_NOISE) -> pd.DataFrame:
    """Compare items scored now with the same items stored, one row per task.

    Log-likelihoods must agree within ``tolerance``; a prediction may differ only where the stored top two choices
    are within ``tolerance`` of each other, raw or length-normalised (a tie that float rounding decides). Reads the
    documents (``load_task``) for the choices' lengths when a prediction differs.

    Args:
        live: ``evaluate_zero_shot``'s frame for some items.
        stored: the stored frame of the same model (``StoredZeroShot.frame``), covering at least those items.
        tolerance: nats.

    Returns:
        A frame indexed by task: ``items``, ``max_loglik_diff``, ``different_predictions``, ``near_ties`` (of those,
        the ones the rule allows) and ``agrees``.

    Raises:
        ValueError: if an item of ``live`` is not in ``stored``.
    """
    keyed = stored.set_index(["task", "item"])
    keys = list(zip(live["task"], live["item"]))
    absent = [key for key in keys if key not in keyed.index]
    if absent:
        raise ValueError(f"items {absent[:5]} are not stored; compare only stored items (StoredZeroShot.item_ids)")
    rows = {}
    for task, group in live.groupby("task", sort=False):
        largest, differ, ties = 0.0, 0, 0
        for _, row in group.iterrows():
            other = keyed.loc[(task, row["item"])]
            largest = max(largest, float(np.max(np.abs(np.subtract(row["loglik"], other["loglik"])))))
            same = row["pred"] == other["pred"] and row["pred_norm"] == other["pred_norm"]
            same = same and row["acc"] == other["acc"]
            if not same:
                differ += 1
                ties += int(_near_tie(task, int(row["item"]), np.asarray(other["loglik"]), tolerance))
        rows[task] = {
            "items": len(group),
            "max_loglik_diff": largest,
            "different_predictions": differ,
            "near_ties": ties,
            "agrees": largest <= tolerance and differ == ties,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("task")
