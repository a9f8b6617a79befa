"""The standard zero-shot benchmarks of depth-pruning papers, scored as lm-evaluation-harness (lm-eval) scores them.

Shortened LLaMA, ShortGPT, SLEB and LLM-Pruner report hellaswag, arc_easy, arc_challenge, piqa, winogrande, boolq,
openbookqa and lambada_openai through lm-eval. This module builds the very same prompts and continuations from the
same documents (the hub datasets lm-eval loads, else the offline copies under ``<data_dir()>/benchmarks``, which give
identical rows) and returns **one row per item**, so that two models can be compared item by item (paired bootstrap,
``helpers.benchmark_results``).

Scoring (lm-eval's rules): every choice is a continuation ``" " + choice`` of the context; its log-likelihood is
the sum of its tokens' log-probabilities. ``acc``: the likeliest choice is the gold one; ``acc_norm``: the same
after dividing each log-likelihood by the choice's length in characters (``np.argmax``: ties go to the first
choice). WinoGrande has two contexts and one continuation; LAMBADA scores its last word, ``acc`` = greedy decoding
reproduces every token of it, perplexity = ``exp(-mean log-likelihood)``.

Two engines compute the log-likelihoods behind one call, ``evaluate_zero_shot(..., engine=...)``, and return the
same frame: "course" (``helpers.fast.zero_shot_scorer.score_texts``, which tokenises every request as lm-eval does
and computes the same numbers with far less model work: packed rows, a shared context computed once) and "lm-eval"
(lm-eval's own evaluator with ``HFLM(pretrained=model)``, ``helpers.fast.lm_eval_engine``: for models that outgrow
one CPU, and the reference the tests check the course engine against).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .checks import check_choice, check_int
from .data import SOURCES, Source, hub_or_local
from .fast.zero_shot_scorer import score_texts
from .settings import data_dir

BENCHMARK_DIR = Path("benchmarks")
"""Offline benchmark copies, relative to ``data_dir()`` (see their README.md)."""

Row = dict[str, object]


class Item(NamedTuple):
    """One scored item: lm-eval's (context, continuation) requests, the gold index and the choices for acc_norm.

    Attributes:
        requests: the (context, continuation) text pairs to score, one per choice (WinoGrande: one per context).
        gold: the index of the correct request.
        choices: the choice texts whose character lengths normalise ``acc_norm``; empty for tasks that report no
            ``acc_norm``.
    """

    requests: tuple[tuple[str, str], ...]
    gold: int
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """Where a task's documents come from and how lm-eval turns one into an item.

    Attributes:
        hub: (dataset id, config, split) that lm-eval loads.
        files: the offline copy (and labels file), relative to ``data_dir() / BENCHMARK_DIR``.
        origin: what those files are, for the message when they are missing.
        read_local: turns the offline files into the hub's rows (README's mapping).
        to_item: turns one row into an ``Item``.
        metrics: the metrics lm-eval reports for the task (``acc``, ``acc_norm``, ``perplexity``).
    """

    hub: tuple[str, str | None, str]  # dataset id, config, split lm-eval loads
    files: tuple[str, ...]  # offline copy (and labels file), relative to data_dir() / BENCHMARK_DIR
    origin: str
    read_local: Callable[[list[Path]], list[Row]]  # the offline files -> hub rows (README's mapping)
    to_item: Callable[[Row], Item]
    metrics: tuple[str, ...]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _labels(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _multiple_choice(context: str, choices: Sequence[str], gold: int, norm: bool = True) -> Item:
    return Item(tuple((context, " " + choice) for choice in choices), gold, tuple(choices) if norm else ())


def _hellaswag_text(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py preprocess``: WikiHow "[title]" markers and other brackets removed."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def _hellaswag(row: Row) -> Item:
    context = _hellaswag_text(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
    return _multiple_choice(context, [_hellaswag_text(e) for e in row["endings"]], int(row["label"]))


def _arc_rows(paths: list[Path]) -> list[Row]:
    return [
        {
            "id": d["id"],
            "question": d["question"]["stem"],
            "choices": {
                "text": [c["text"] for c in d["question"]["choices"]],
                "label": [c["label"] for c in d["question"]["choices"]],
            },
            "answerKey": d["answerKey"],
        }
        for d in _jsonl(paths[0])
    ]


def _arc(row: Row) -> Item:
    choices = row["choices"]
    return _multiple_choice(
        f"Question: {row['question']}\nAnswer:", choices["text"], choices["label"].index(row["answerKey"])
    )


def _piqa_rows(paths: list[Path]) -> list[Row]:
    rows, labels = _jsonl(paths[0]), _labels(paths[1])
    if len(rows) != len(labels):
        raise ValueError(f"{paths[0]} has {len(rows)} items but {paths[1]} has {len(labels)} labels; they must align")
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)} for d, y in zip(rows, labels)]


def _winogrande(row: Row) -> Item:
    blank = row["sentence"].index("_")
    contexts = [row["sentence"][:blank] + option for option in (row["option1"], row["option2"])]
    continuation = " " + row["sentence"][blank + 1 :].strip()
    return Item(tuple((context, continuation) for context in contexts), {"1": 0, "2": 1}[row["answer"]], ())


def _boolq_rows(paths: list[Path]) -> list[Row]:
    return [
        {"question": d["question"], "passage": d["title"] + " -- " + d["passage"], "idx": i, "label": int(d["answer"])}
        for i, d in enumerate(_jsonl(paths[0]))
    ]


def _openbookqa_rows(paths: list[Path]) -> list[Row]:
    return [
        {"id": r["id"], "question_stem": r["question"], "choices": r["choices"], "answerKey": r["answerKey"]}
        for r in _arc_rows(paths)
    ]


def _openbookqa(row: Row) -> Item:
    choices = row["choices"]
    return _multiple_choice(row["question_stem"], choices["text"], choices["label"].index(row["answerKey"].lstrip()))


def _lambada(row: Row) -> Item:
    words = row["text"].split(" ")
    return Item(((" ".join(words[:-1]), " " + words[-1]),), 0, ())


TASKS: dict[str, Task] = {
    "hellaswag": Task(
        ("Rowan/hellaswag", None, "validation"),
        ("hellaswag/hellaswag_val.jsonl",),
        "the HellaSwag validation file hellaswag_val.jsonl (Zellers et al., 2019)",
        lambda paths: [{**d, "label": str(d["label"])} for d in _jsonl(paths[0])],
        _hellaswag,
        ("acc", "acc_norm"),
    ),
    "arc_easy": Task(
        ("allenai/ai2_arc", "ARC-Easy", "test"),
        ("arc_easy/ARC-Easy-Test.jsonl",),
        "ARC-Easy-Test.jsonl of AI2's ARC-V1-Feb2018 release",
        _arc_rows,
        _arc,
        ("acc", "acc_norm"),
    ),
    "arc_challenge": Task(
        ("allenai/ai2_arc", "ARC-Challenge", "test"),
        ("arc_challenge/ARC-Challenge-Test.jsonl",),
        "ARC-Challenge-Test.jsonl of AI2's ARC-V1-Feb2018 release",
        _arc_rows,
        _arc,
        ("acc", "acc_norm"),
    ),
    "piqa": Task(
        ("baber/piqa", None, "validation"),
        ("piqa/valid.jsonl", "piqa/valid-labels.lst"),
        "the PIQA validation files valid.jsonl and valid-labels.lst (Bisk et al., 2020)",
        _piqa_rows,
        lambda row: _multiple_choice(f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], row["label"]),
        ("acc", "acc_norm"),
    ),
    "winogrande": Task(
        ("allenai/winogrande", "winogrande_xl", "validation"),
        ("winogrande/dev.jsonl",),
        "the WinoGrande 1.1 dev.jsonl (Sakaguchi et al., 2020)",
        lambda paths: [{k: d[k] for k in ("sentence", "option1", "option2", "answer")} for d in _jsonl(paths[0])],
        _winogrande,
        ("acc",),
    ),
    "boolq": Task(
        ("aps/super_glue", "boolq", "validation"),
        ("boolq/dev.jsonl",),
        "Google's BoolQ dev.jsonl (Clark et al., 2019)",
        _boolq_rows,
        lambda row: _multiple_choice(
            f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", ["no", "yes"], row["label"], norm=False
        ),
        ("acc",),
    ),
    "openbookqa": Task(
        ("allenai/openbookqa", "main", "test"),
        ("openbookqa/test.jsonl",),
        "the OpenBookQA main test.jsonl of OpenBookQA-V1-Sep2018",
        _openbookqa_rows,
        _openbookqa,
        ("acc", "acc_norm"),
    ),
    "lambada_openai": Task(
        ("EleutherAI/lambada_openai", "default", "test"),
        ("lambada_openai/lambada_test.jsonl",),
        "OpenAI's lambada_test.jsonl (the detokenised LAMBADA test set of GPT-2's repository)",
        lambda paths: [{"text": d["text"]} for d in _jsonl(paths[0])],
        _lambada,
        ("acc", "perplexity"),
    ),
}
"""lm-eval task name -> its documents, prompt and reported metrics (lm-eval 0.4.13 task YAMLs)."""

TASK_NAMES = tuple(TASKS)
ENGINES = ("course", "lm-eval")
"""``evaluate_zero_shot``'s engines: the course's fast scorer, or lm-eval's own evaluator."""


def check_tasks(tasks: Iterable[str]) -> list[str]:
    """``tasks`` as a list of distinct names among ``TASK_NAMES`` (a single name is accepted too).

    Raises:
        ValueError: if the names are empty, unknown or repeated.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names among {', '.join(TASK_NAMES)}; got {tasks}")
    return tasks


def load_task(task: str, *, source: Source = "auto") -> list[Row]:
    """The documents of ``task`` as the hub rows lm-eval loads; row ``i`` is item ``i`` (hub row = file line).

    Args:
        task: one of ``TASK_NAMES``.
        source: "hub" (the dataset id lm-eval 0.4.13 loads), "local" (``<data_dir()>/benchmarks/...``) or "auto"
            (hub, then local; local only when ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set), as
            ``helpers.data``.

    Returns:
        The rows, as dicts.

    Raises:
        ValueError: if ``task`` is unknown or ``source`` is not a valid choice; if PIQA's offline items and labels
            do not align.
        TypeError: if ``source`` is not a string.
        FileNotFoundError: if an offline file is needed and missing (the message says what to put where).
        Exception: with ``source="hub"``, whatever the hub load raised.
    """
    check_tasks([task])
    check_choice("source", source, SOURCES)
    spec = TASKS[task]
    paths = [data_dir() / BENCHMARK_DIR / name for name in spec.files]
    # A missing labels file must be named as clearly as a missing main file.
    local = next((path for path in paths if not path.is_file()), paths[0])
    dataset = hub_or_local(source, local, spec.origin, *spec.hub)
    return spec.read_local(paths) if dataset is None else dataset.to_list()


def item_ids(n_rows: int, limit: int | None, seed: int) -> list[int]:
    """Rows to evaluate, in row order.

    Args:
        n_rows: how many rows the task has.
        limit: how many rows to draw by shuffling the row positions with ``random.Random(seed)`` (the picks for a
            smaller limit are a subset of those for a larger one; a limit above ``n_rows`` takes every row); None
            takes all.
        seed: the seed of the draw.

    Returns:
        The row indices, ascending.

    Raises:
        TypeError: if ``limit`` is neither None nor an integer.
        ValueError: if ``limit`` is below 1.
    """
    check_int("limit", limit, none_means="every item")
    if limit is None:
        return list(range(n_rows))
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    return sorted(order[:limit])


# --- evaluation and statistics ---------------------------------------------------------------------------------------


def evaluate_zero_shot(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Iterable[str] = TASK_NAMES,
    *,
    limit: int | None = None,
    seed: int = 0,
    items: dict[str, Sequence[int]] | None = None,
    source: Source = "auto",
    batch_tokens: int = 4096,
    engine: str = "course",
    batch_size: int | str = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Zero-shot results of ``model`` per item, one row per (task, item), scored as lm-eval scores them.

    Works on any in-memory model (inside ``skip_blocks``, a ``prune_blocks`` copy; cpu or cuda). Two engines give the
    same frame (log-likelihoods within float32 noise, the same predictions): ``engine="course"`` scores all tasks'
    requests together with the course's fast scorer (``helpers.fast.zero_shot_scorer.score_texts``), the quick way
    for a small model on a CPU; ``engine="lm-eval"`` runs lm-eval's own evaluator with ``HFLM(pretrained=model,
    tokenizer=tokenizer, batch_size=batch_size)`` on the same documents (offline too), for a model that outgrows one
    CPU or to check a result with lm-eval itself (needs ``pip install lm-eval``)::

        results = evaluate_zero_shot(model, tokenizer, ["arc_easy", "piqa"], limit=100, engine="lm-eval")

    Args:
        model: the causal LM to evaluate.
        tokenizer: its tokenizer.
        tasks: task names among ``TASK_NAMES`` (a single name is accepted too).
        limit: evaluate ``limit`` rows per task drawn with ``seed`` (``item_ids``); None (with no ``items``) every row.
        seed: the seed of the ``limit`` draw.
        items: explicit rows instead, ``{task: [row index, ...]}`` for every task in ``tasks``.
        source: where the documents come from, as in ``load_task``.
        batch_tokens: padded tokens per batch, as in ``helpers.fast.zero_shot_scorer.score_requests`` (engine
            "course").
        engine: "course" (the fast scorer) or "lm-eval" (lm-eval's evaluator), ``ENGINES``.
        batch_size: ``HFLM``'s batch size, an int or "auto" (engine "lm-eval").
        progress: show a progress bar.

    Returns:
        A frame with columns ``task``, ``item`` (0-based row index of the hub split = line of the offline file),
        ``gold``, ``loglik`` (tuple: each choice's log-likelihood, LAMBADA: the last word's), ``pred`` and ``acc``
        (argmax; LAMBADA: -1 and greedy match), ``pred_norm`` and ``acc_norm`` (length-normalised; -1 and NaN where
        lm-eval reports no acc_norm).

    Raises:
        ValueError: if ``tasks`` (or the keys of ``items``) are empty, unknown or repeated; both ``limit`` and
            ``items`` are given; ``items`` lacks a task, repeats a row (it would count twice) or has a row index out
            of range; ``engine`` is not one of ``ENGINES``; a request has an empty context; or as ``load_task``,
            ``item_ids`` and ``score_texts``.
        TypeError: if ``engine`` is not a string; as ``load_task``, ``item_ids`` and ``score_texts``.
        FileNotFoundError: as ``load_task``.
        ImportError: with engine "lm-eval", if lm-eval is not installed.
    """
    tasks = check_tasks(tasks)
    check_choice("engine", engine, ENGINES)
    if items is not None and limit is not None:
        raise ValueError("give either limit (a seeded draw per task) or items (explicit row indices), not both")
    if items is not None:
        check_tasks(items)
        missing = [task for task in tasks if task not in items]
        if missing:
            raise ValueError(f"items has no row indices for tasks {missing}; give a list for every task in tasks")
        for task in tasks:
            repeated = sorted(i for i, count in Counter(items[task]).items() if count > 1)
            if repeated:
                raise ValueError(
                    f"items of {task} repeat rows {repeated}; list each row once (a repeated item would count twice "
                    "in every accuracy)"
                )
    chosen_items = []
    documents = {}  # what the lm-eval engine writes for lm-eval to read
    for task in tasks:
        rows = load_task(task, source=source)
        chosen = item_ids(len(rows), limit, seed) if items is None else list(items[task])
        bad = [i for i in chosen if not 0 <= i < len(rows)]
        if bad:
            raise ValueError(f"{task} has rows 0..{len(rows) - 1}; got item indices {bad}")
        chosen_items += [(task, i, TASKS[task].to_item(rows[i])) for i in chosen]
        documents[task] = {i: rows[i] for i in chosen}
    if engine == "lm-eval":
        from .fast.lm_eval_engine import lm_eval_items

        return lm_eval_items(model, tokenizer, documents, batch_size=batch_size, progress=progress)
    records, requests = [], []
    for task, i, item in chosen_items:
        records.append((task, i, item, len(requests)))
        requests += item.requests
    loglik, greedy = score_texts(model, tokenizer, requests, batch_tokens=batch_tokens, progress=progress)

    table = []
    for task, i, item, start in records:
        values = loglik[start : start + len(item.requests)]
        row = {
            "task": task,
            "item": i,
            "gold": item.gold,
            "loglik": tuple(values.tolist()),
            "pred": -1,
            "acc": float(greedy[start]),
            "pred_norm": -1,
            "acc_norm": np.nan,
        }
        if task != "lambada_openai":
            row["pred"] = int(np.argmax(values))
            row["acc"] = float(row["pred"] == item.gold)
        if item.choices:
            row["pred_norm"] = int(np.argmax(values / np.array([float(len(c)) for c in item.choices])))
            row["acc_norm"] = float(row["pred_norm"] == item.gold)
        table.append(row)
    return pd.DataFrame(table)
