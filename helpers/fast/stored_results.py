"""The course's stored zero-shot results: written once, read by the notebooks, checked live on a sample.

Scoring the course's variants on about a thousand items per task takes about an hour of a 2-core CPU, too long for a
notebook; ``benchmarks/zero_shot_results.py`` does it once and stores one row per (variant, task, item) in
``helpers/results/`` beside a JSON file that says what was run (model, removed blocks, task definitions, item draw,
code fingerprint; a variant healed after pruning also has its ``healing`` recipe). ``helpers.variant_benchmarks``
reads them (``load_stored_zero_shot``), finds the stored variant of each selection (``stored_variant_names``) and
re-scores a small seeded subset live, which must agree item by item (``check_stored_live``, ``stored_agreement``).

The code fingerprint (``code_fingerprint``) covers the code that defines the stored numbers (``FINGERPRINTED``:
documents, prompts, tokenisation and scoring), without its docstrings and comments, so a test can tell when the
stored results were made by other code.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..blocks import num_blocks
from ..pruning import skip_blocks
from ..zero_shot import TASKS, evaluate_zero_shot, item_ids, load_task

PACKAGE_DIR = Path(__file__).parent.parent
"""The ``helpers`` folder: the stored results and the fingerprinted modules are named relative to it."""
RESULTS_DIR = PACKAGE_DIR / "results"
STORED_ITEMS = RESULTS_DIR / "zero_shot_items.csv.gz"
"""The course's stored per-item results (``benchmarks/zero_shot_results.py`` writes them)."""
STORED_META = RESULTS_DIR / "zero_shot_items.json"
"""What the stored results are: model, variants and their removed blocks, tasks, item draw, code fingerprint."""
FINGERPRINTED = ("zero_shot.py", "fast/zero_shot_scorer.py", "fast/packing.py")
"""The modules whose source defines the stored numbers (paths in ``PACKAGE_DIR``): documents and prompts,
tokenisation and scoring, and the packed rows' mask."""
STORED_DTYPES = {"variant": str, "task": str, "item": int, "gold": int, "pred": int, "acc": float, "pred_norm": int}
STORED_DTYPES |= {"acc_norm": float}  # as evaluate_zero_shot returns them (a CSV would read 1.0 back as 1)
LOGLIK_NOISE = 1e-3
"""Nats: float32 log-likelihoods computed on another CPU or in other batch shapes differ by ~1e-5; two choices closer
than this may swap places between two correct computations, nothing else may."""


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
        digest.update("\n".join(_code_lines((PACKAGE_DIR / name).read_text())).encode())
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

    def variant_of(self, removed: Sequence[int], healing: Mapping[str, Any] | None = None) -> str | None:
        """The stored variant that removes exactly these blocks and was healed by ``healing`` (None: not healed).

        Args:
            removed: block indices (any order).
            healing: the recipe of a healed variant (``HealedVariant.recipe``), compared as JSON; None for a plain
                pruned variant.

        Returns:
            The variant's name, or None when no stored variant matches.
        """
        wanted = sorted(int(b) for b in removed)
        recipe = None if healing is None else json.loads(json.dumps(healing))
        return next(
            (
                name
                for name, v in self.meta["variants"].items()
                if sorted(v["removed"]) == wanted and v.get("healing") == recipe
            ),
            None,
        )

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


def stored_variant_names(
    stored: StoredZeroShot | None,
    model: PreTrainedModel,
    model_id: str,
    plan: Mapping[str, Sequence[int]],
    recipes: Mapping[str, Mapping[str, Any]] | None = None,
) -> str | dict[str, str]:
    """The stored variant of each planned one, or why the stored results cannot serve.

    Args:
        stored: the stored results, or None when none were found.
        model: the full model (its block count must match the stored one's).
        model_id: the model's id (it must be the stored one's).
        plan: ``{name: blocks to remove}``.
        recipes: ``{name: healing recipe}`` for the planned variants that were healed after pruning.

    Returns:
        ``{name: stored variant}`` when every planned variant is stored for this model, else the reason, a sentence.
    """
    if stored is None:
        return "no stored results were found"
    if stored.meta["model"] != model_id or stored.meta["n_blocks"] != num_blocks(model):
        return f"the stored results are for {stored.meta['model']} ({stored.meta['n_blocks']} blocks), not {model_id}"
    recipes = recipes or {}
    names = {name: stored.variant_of(blocks, recipes.get(name)) for name, blocks in plan.items()}
    missing = [name for name, found in names.items() if found is None]
    if missing:
        return (
            f"no stored variant removes the blocks of {', '.join(missing)} with the same healing (other parameters or "
            "another model)"
        )
    return names


def check_stored_live(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    stored: StoredZeroShot,
    names: Mapping[str, str],
    plan: Mapping[str, list[int]],
    check: Sequence[str],
    check_items: int,
    seed: int,
    progress: bool,
    healed_models: Mapping[str, PreTrainedModel] | None = None,
) -> pd.DataFrame:
    """Re-score ``check_items`` seeded stored items per task for the ``check`` variants; compare with the store.

    Args:
        model: the full model.
        tokenizer: its tokenizer.
        stored: the stored results.
        names: ``{name: stored variant}`` (``stored_variant_names``).
        plan: ``{name: blocks to remove}``.
        check: the names to re-score.
        check_items: items per task, drawn with ``seed + 1`` from the stored items.
        seed: the seed of the live draws.
        progress: show progress bars.
        healed_models: ``{name: model}`` for the variants healed after pruning: scored as they are.

    Returns:
        ``stored_agreement``'s rows indexed by (variant, task).
    """
    stored_items = stored.item_ids()
    subset = {
        task: [ids[i] for i in item_ids(len(ids), check_items, seed + 1)] for task, ids in stored_items.items()
    }  # seed + 1: a draw of its own, not the first items of the stored draw
    rows = []
    for name in check:
        if name in (healed_models or {}):
            live = evaluate_zero_shot(healed_models[name], tokenizer, list(subset), items=subset, progress=progress)
        else:
            with skip_blocks(model, plan[name]) as variant:
                live = evaluate_zero_shot(variant, tokenizer, list(subset), items=subset, progress=progress)
        rows.append(stored_agreement(live, stored.frame(names[name])).assign(variant=name).reset_index())
    return pd.concat(rows, ignore_index=True).set_index(["variant", "task"])
