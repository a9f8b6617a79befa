"""The standard zero-shot benchmarks of depth-pruning papers, scored as lm-evaluation-harness (lm-eval) scores them.

Shortened LLaMA, ShortGPT, SLEB and LLM-Pruner report hellaswag, arc_easy, arc_challenge, piqa, winogrande, boolq,
openbookqa and lambada_openai through lm-eval. This module builds the very same prompts and continuations from the
same documents (the hub datasets lm-eval loads, else the offline copies under ``<data_dir()>/benchmarks``, which give
identical rows), tokenises them as lm-eval 0.4.13's Hugging Face backend does, and returns **one row per item**, so
that two models can be compared item by item (paired bootstrap, ``zero_shot_difference``).

Scoring (lm-eval's rules): every choice is a continuation ``" " + choice`` of the context; its log-likelihood is
the sum of its tokens' log-probabilities. ``acc``: the likeliest choice is the gold one; ``acc_norm``: the same
after dividing each log-likelihood by the choice's length in characters (``np.argmax``: ties go to the first
choice). WinoGrande has two contexts and one continuation; LAMBADA scores its last word, ``acc`` = greedy decoding
reproduces every token of it, perplexity = ``exp(-mean log-likelihood)``.

Tokenisation (lm-eval's ``_encode_pair``): trailing whitespace of the context moves to the continuation; then
``whole = encode(context + continuation)``, ``ctx = encode(context)`` and the continuation's tokens are
``whole[len(ctx):]``. ``encode`` is the tokenizer's own default, so a BOS token is prepended exactly when the
tokenizer adds one (Llama-2's does, SmolLM2's does not; lm-eval 0.4.2 never added it), except that a text already
starting with the decoded BOS token (EOS when there is none) gets no special tokens. A context and continuation
longer than ``max_length + 1`` tokens lose tokens at the left, as in lm-eval.

Why it is faster than lm-eval, with the same numbers up to float rounding: lm-eval runs context + choice once per
choice and computes the vocabulary logits at every position. Here the requests that share a context form one packed
row: the context once, then every continuation but its last token, each continuation's position ids restarting at
the context's length and a 4D attention mask letting it see only the context and itself. The context's last
position gives every continuation's first log-probability, so a one-token continuation (LAMBADA's usual word, BoolQ's
" yes"/" no") adds no token at all. Rows are sorted by length and run in few, full right-padded batches, and the
output head runs only where a log-probability is read (``logits_to_keep``). Models whose positions or attention
such a mask cannot express (ALiBi, sliding-window layers, flash or flex attention; see ``_packs``) instead run each
distinct context once (similar lengths batched; with sliding windows only equal lengths, so no padding sits inside
a window), keep its KV cache, and run all its choices' remaining tokens in batches on that cache.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from transformers import Cache, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from .checks import check_choice, check_int
from .data import SOURCES, Source, _hub_or_local, right_pad
from .generation import cache_argument_name
from .hooks import eval_mode, input_device
from .pruning import decoder_config
from .settings import data_dir, progress_bar
from .statistics import Statistic, bootstrap_ci, paired_difference

BENCHMARK_DIR = Path("benchmarks")
"""Offline benchmark copies, relative to ``data_dir()`` (see their README.md)."""

Row = dict[str, object]
TOKENIZER_INFINITY = 1000000000000000019884624838656
"""``model_max_length`` of a tokenizer that sets none (transformers' VERY_LARGE_INTEGER)."""


LM_EVAL_YAMLS = {
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
}
"""Task -> its YAML inside lm-eval's ``lm_eval/tasks`` folder (used by ``lm_eval_reference``)."""


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


def _check_tasks(tasks: Iterable[str]) -> list[str]:
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
    _check_tasks([task])
    check_choice("source", source, SOURCES)
    spec = TASKS[task]
    paths = [data_dir() / BENCHMARK_DIR / name for name in spec.files]
    # A missing labels file must be named as clearly as a missing main file.
    local = next((path for path in paths if not path.is_file()), paths[0])
    dataset = _hub_or_local(source, local, spec.origin, *spec.hub)
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


# --- tokenisation (lm-eval's HFLM) -----------------------------------------------------------------------------------


def max_context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """lm-eval's ``resolve_max_length``: the config's n_positions / max_position_embeddings / n_ctx, else the
    tokenizer's ``model_max_length`` when set, else 2048.

    Args:
        model: the model (its text config when it has one).
        tokenizer: its tokenizer.

    Returns:
        The most tokens a request may hold.
    """
    config = getattr(model.config, "text_config", None) or model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, name, None) is not None:
            return int(getattr(config, name))
    if getattr(tokenizer, "model_max_length", None) not in (None, TOKENIZER_INFINITY):
        return int(tokenizer.model_max_length)
    return 2048


class _Encoder:
    """lm-eval's ``tok_encode`` and ``_encode_pair`` for one tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.prefix_text = tokenizer.decode(prefix_id) if prefix_id is not None else None

    def encode(self, text: str) -> list[int]:
        special = (
            {} if self.prefix_text is None or not text.startswith(self.prefix_text) else {"add_special_tokens": False}
        )
        return self.tokenizer.encode(text, **special)

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            raise ValueError(f"an empty context is not supported (continuation {continuation!r})")
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        whole, ctx = self.encode(stripped + continuation), self.encode(stripped)
        return ctx, whole[len(ctx) :]


# --- scoring --------------------------------------------------------------------------------------------------------


class _Unit(NamedTuple):
    """One distinct context and the requests (index into the request list, continuation ids) that continue it."""

    context: tuple[int, ...]
    requests: list[tuple[int, list[int]]]


def _units(pairs: Sequence[tuple[list[int], list[int]]], max_length: int) -> list[_Unit]:
    """Requests grouped by their (left-truncated, as lm-eval does) context, shortest context first."""
    by_context: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for index, (context, continuation) in enumerate(pairs):
        if not continuation:
            raise ValueError(f"request {index} has a continuation without tokens; nothing to score")
        if len(continuation) > max_length:
            raise ValueError(
                f"request {index}: a continuation of {len(continuation)} tokens exceeds max_length {max_length}"
            )
        keep = max(0, len(context) + len(continuation) - (max_length + 1))
        by_context.setdefault(tuple(context[keep:]), []).append((index, continuation))
    return sorted((_Unit(c, r) for c, r in by_context.items()), key=lambda unit: len(unit.context))


def _has_sliding_window(model: PreTrainedModel) -> bool:
    """True when the model's KV cache keeps a sliding window in some layer (then padding must not enter the cache)."""
    return any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=decoder_config(model)).layers)


PACKED_FAMILIES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "phi",
        "phi3",
        "olmo2",
        "smollm3",
        "starcoder2",
        "gpt2",
        "gpt_neox",
        "gptj",
        "gpt_bigcode",
        "opt",
    }
)
"""Model types whose decoders (read in transformers 5's source) take positions from ``position_ids`` when given
(rotary or learned; OPT infers them from a 2D mask only when none are given) and pass a 4D attention mask through
``create_causal_mask`` unchanged, so that a packed row can be scored; each is checked against a naive loop in the
tests. Left out on purpose: ALiBi families (BLOOM; Falcon, which may use it), whose biases come from a 2D mask, and
every family not checked."""

MASK_CONVENTIONS = {"sdpa": "bool", "eager": "additive"}
"""Attention implementation -> the 4D mask it takes (transformers' ``sdpa_mask``: bool, True = attend;
``eager_mask``: float, 0 = attend, the dtype's minimum = masked). Flash and flex attention take no dense 4D mask."""


def _packs(model: PreTrainedModel) -> bool:
    """True when ``score_requests`` scores ``model`` on packed rows (a family of ``PACKED_FAMILIES``, no
    sliding-window layer, whose window the mask would have to hold, and an attention taking a dense 4D mask)."""
    return (
        decoder_config(model).model_type in PACKED_FAMILIES
        and model.config._attn_implementation in MASK_CONVENTIONS
        and not _has_sliding_window(model)
    )


MAX_PADDING = 0.1
"""Largest share of padded positions a batch may hold: fewer, fuller batches are faster until padding dominates."""


def _batches(lengths: Sequence[int], batch_tokens: int, same_length: bool) -> list[range]:
    """Consecutive runs of ``lengths`` (sorted ascending) to run as one padded batch each.

    A run grows while its padded size (count * longest) stays within ``batch_tokens`` and padding within
    ``MAX_PADDING`` of it (a run always holds at least one row); ``same_length`` puts only equal lengths together.
    """
    batches, start, total = [], 0, 0
    for end, length in enumerate(lengths):
        padded = (end - start + 1) * length
        full = padded > batch_tokens or padded - total - length > MAX_PADDING * padded
        if end > start and (full or (same_length and length != lengths[start])):
            batches.append(range(start, end))
            start, total = end, 0
        total += length
    if lengths:
        batches.append(range(start, len(lengths)))
    return batches


def _select_rows(cache: Cache, rows: torch.Tensor) -> Cache:
    """A cache holding the given batch rows of ``cache``, which stays unchanged (forward calls append to a cache)."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(rows)  # indexing copies only the selected rows
    return selected


def _right_padded(rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, boolean mask) of ``right_pad`` on ``device``; the pad id is irrelevant, as no padded position is read."""
    padded = right_pad(rows, pad_id=0)
    return padded["input_ids"].to(device), padded["attention_mask"].bool().to(device)


class _Reads(NamedTuple):
    """Which kept logit row predicts which token of which request (one entry per scored token)."""

    rows: list[int]
    targets: list[int]
    requests: list[int]


def _add_scores(logits: torch.Tensor, reads: _Reads, loglik: torch.Tensor, greedy: torch.Tensor) -> None:
    """Adds each read's log-probability to its request's ``loglik`` and clears ``greedy`` where it is not the argmax.

    Args:
        logits: the kept logits, (kept positions, vocab).
        reads: the logit row, target token and request of every scored token; a row may serve several reads.
        loglik: float64 per request, updated in place.
        greedy: bool per request, updated in place.
    """
    log_probs = logits.float().log_softmax(dim=-1)
    rows = torch.tensor(reads.rows, device=logits.device)
    targets = torch.tensor(reads.targets, device=logits.device)
    requests = torch.tensor(reads.requests)
    loglik.index_add_(0, requests, log_probs[rows, targets].double().cpu())
    misses = (log_probs.argmax(dim=-1)[rows] != targets).cpu()
    greedy[requests[misses]] = False


def _packed_row(unit: _Unit) -> tuple[list[int], list[int], list[int], list[tuple[int, int, int]]]:
    """``unit`` as one row: its context, then each continuation but its last token as a segment of its own.

    Returns:
        ``(ids, positions, segments, reads)``: the tokens; their position ids (every segment continues the context
        at ``len(context)``); the segment of each token (0: context, i: the i-th continuation); and per scored token
        (position in the row, target, request).
    """
    ids, segments, n = list(unit.context), [0] * len(unit.context), len(unit.context)
    positions = list(range(n))
    reads = [(n - 1, continuation[0], index) for index, continuation in unit.requests]
    for segment, (index, continuation) in enumerate(unit.requests, start=1):
        start = len(ids)
        ids += continuation[:-1]
        positions += range(n, n + len(continuation) - 1)
        segments += [segment] * (len(continuation) - 1)
        reads += [(start + j, target, index) for j, target in enumerate(continuation[1:])]
    return ids, positions, segments, reads


def _packed_mask(segments: torch.Tensor, convention: str, dtype: torch.dtype) -> torch.Tensor:
    """The (batch, 1, T, T) mask of packed rows: a query sees earlier keys of the context and of its own segment.

    ``segments`` is (batch, T): 0 for context tokens, i for the i-th continuation, -1 for padding. A padding query
    sees itself (and other padding), so no query row is fully masked (that would give NaN, spreading through V).
    """
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = (causal & ((key == 0) | (key == query)))[:, None]
    if convention == "bool":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _run_packed(
    model: PreTrainedModel,
    units: list[_Unit],
    batch_tokens: int,
    progress: bool,
    loglik: torch.Tensor,
    greedy: torch.Tensor,
) -> None:
    """Scores ``units`` as packed rows (``_packed_row``), shortest first, in right-padded batches with a 4D mask."""
    device = input_device(model)
    convention = MASK_CONVENTIONS[model.config._attn_implementation]
    rows = sorted((_packed_row(unit) for unit in units), key=lambda row: len(row[0]))
    for batch in progress_bar(_batches([len(row[0]) for row in rows], batch_tokens, False), "zero-shot", progress):
        part = [rows[i] for i in batch]
        ids, _ = _right_padded([row[0] for row in part], device)
        positions = right_pad([row[1] for row in part], pad_id=0)["input_ids"].to(device)
        segments = right_pad([row[2] for row in part], pad_id=-1)["input_ids"].to(device)
        kept = torch.zeros(ids.shape, dtype=torch.bool)
        reads, offset = _Reads([], [], []), 0
        for b, (_, _, _, row_reads) in enumerate(part):
            read_positions = sorted({position for position, _, _ in row_reads})
            kept[b, read_positions] = True
            # logits_to_keep's flattening keeps the True positions in row-major order.
            logit_row = {position: offset + k for k, position in enumerate(read_positions)}
            offset += len(read_positions)
            for position, target, index in row_reads:
                reads.rows.append(logit_row[position])
                reads.targets.append(target)
                reads.requests.append(index)
        mask = _packed_mask(segments, convention, model.dtype)
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=kept.to(device)
        ).logits
        _add_scores(logits, reads, loglik, greedy)


def _run_cached(
    model: PreTrainedModel,
    units: list[_Unit],
    batch_tokens: int,
    progress: bool,
    loglik: torch.Tensor,
    greedy: torch.Tensor,
) -> None:
    """Scores ``units``: each batch of contexts once with the KV cache on, then the continuations on its rows."""
    device, cache_name = input_device(model), cache_argument_name(model)
    batches = _batches([len(unit.context) for unit in units], batch_tokens, _has_sliding_window(model))
    for batch in progress_bar(batches, "zero-shot", progress):
        ids, mask = _right_padded([units[u].context for u in batch], device)
        lengths = mask.sum(dim=1)
        last = torch.zeros_like(mask)
        last[torch.arange(len(batch), device=device), lengths - 1] = True
        positions = torch.arange(ids.shape[1], device=device).expand_as(ids)
        out = model(
            input_ids=ids, attention_mask=mask.long(), position_ids=positions, use_cache=True, logits_to_keep=last
        )
        rows = [(b, index, continuation) for b, u in enumerate(batch) for index, continuation in units[u].requests]
        first = _Reads([b for b, _, _ in rows], [c[0] for _, _, c in rows], [index for _, index, _ in rows])
        _add_scores(out.logits, first, loglik, greedy)  # one logit row per context

        cache = out[cache_name]
        rest = sorted((row for row in rows if len(row[2]) > 1), key=lambda row: len(row[2]))
        for chunk in _batches([len(row[2]) - 1 for row in rest], batch_tokens, False):
            part = [rest[i] for i in chunk]
            ids2, mask2 = _right_padded([continuation[:-1] for _, _, continuation in part], device)
            which = torch.tensor([b for b, _, _ in part], device=device)
            logits = model(
                input_ids=ids2,
                attention_mask=torch.cat([mask[which], mask2], dim=1).long(),
                position_ids=lengths[which, None] + torch.arange(ids2.shape[1], device=device),
                use_cache=True,
                logits_to_keep=mask2,
                **{cache_name: _select_rows(cache, which)},
            ).logits
            reads, offset = _Reads([], [], []), 0
            for _, index, continuation in part:  # mask2 keeps len(continuation) - 1 positions per row, in order
                reads.rows.extend(range(offset, offset + len(continuation) - 1))
                reads.targets.extend(continuation[1:])
                reads.requests.extend([index] * (len(continuation) - 1))
                offset += len(continuation) - 1
            _add_scores(logits, reads, loglik, greedy)


def score_requests(
    model: PreTrainedModel,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    max_length: int,
    batch_tokens: int = 4096,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of each (context ids, continuation ids) pair and whether greedy decoding reproduces it.

    Requests are grouped by their context (``_units``). Models that ``_packs`` accepts (``PACKED_FAMILIES``, no
    sliding-window layer, sdpa or eager attention) score each group as one packed row, context then every
    continuation but its last token, with position ids that restart at the context's length for each continuation
    and a 4D mask that lets a continuation see only the context and itself; rows are batched shortest first. Every
    other model runs each distinct context once with the KV cache on, then the continuations' tokens after the
    first in batches on the rows of that cache they continue. Either way the context's last position gives every
    continuation's first log-probability, and the output head runs only where a log-probability is read.

    A packed row may exceed ``max_length`` (several continuations), but no position id does: a continuation's last
    read position is ``len(context) + len(continuation) - 2 < max_length`` after truncation.

    Args:
        model: the causal LM (run in eval mode, without gradients).
        pairs: (context token ids, continuation token ids) per request.
        max_length: the most tokens a request may hold; longer contexts lose tokens at the left, as in lm-eval.
        batch_tokens: at most this many padded tokens a batch, and ``MAX_PADDING`` of them padding (see ``_batches``).
        progress: show a progress bar.

    Returns:
        ``(loglik, greedy)``: float64 and bool arrays with one entry per pair, in the order of ``pairs``.

    Raises:
        TypeError: if ``batch_tokens`` is not an integer.
        ValueError: if ``batch_tokens`` is below 1, or a continuation has no token or more than ``max_length``.
    """
    check_int("batch_tokens", batch_tokens)
    units = _units(pairs, max_length)
    loglik = torch.zeros(len(pairs), dtype=torch.float64)
    greedy = torch.ones(len(pairs), dtype=torch.bool)
    run = _run_packed if _packs(model) else _run_cached
    with eval_mode(model), torch.inference_mode():
        run(model, units, batch_tokens, progress, loglik, greedy)
    return loglik.numpy(), greedy.numpy()


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
    progress: bool = True,
) -> pd.DataFrame:
    """Zero-shot results of ``model`` per item, one row per (task, item), scored as lm-eval scores them.

    All tasks' requests are scored together (``score_requests``). Works on any in-memory model (inside
    ``skip_blocks``, a ``prune_blocks`` copy; cpu or cuda).

    Args:
        model: the causal LM to evaluate.
        tokenizer: its tokenizer.
        tasks: task names among ``TASK_NAMES`` (a single name is accepted too).
        limit: evaluate ``limit`` rows per task drawn with ``seed`` (``item_ids``); None (with no ``items``) every row.
        seed: the seed of the ``limit`` draw.
        items: explicit rows instead, ``{task: [row index, ...]}`` for every task in ``tasks``.
        source: where the documents come from, as in ``load_task``.
        batch_tokens: padded tokens per batch, as in ``score_requests``.
        progress: show a progress bar.

    Returns:
        A frame with columns ``task``, ``item`` (0-based row index of the hub split = line of the offline file),
        ``gold``, ``loglik`` (tuple: each choice's log-likelihood, LAMBADA: the last word's), ``pred`` and ``acc``
        (argmax; LAMBADA: -1 and greedy match), ``pred_norm`` and ``acc_norm`` (length-normalised; -1 and NaN where
        lm-eval reports no acc_norm).

    Raises:
        ValueError: if ``tasks`` (or the keys of ``items``) are empty, unknown or repeated; both ``limit`` and
            ``items`` are given; ``items`` lacks a task, repeats a row (it would count twice) or has a row index out
            of range; a request has an empty context; or as ``load_task``, ``item_ids`` and ``score_requests``.
        TypeError: as ``load_task``, ``item_ids`` and ``score_requests``.
        FileNotFoundError: as ``load_task``.
    """
    tasks = _check_tasks(tasks)
    if items is not None and limit is not None:
        raise ValueError("give either limit (a seeded draw per task) or items (explicit row indices), not both")
    if items is not None:
        _check_tasks(items)
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
    for task in tasks:
        rows = load_task(task, source=source)
        chosen = item_ids(len(rows), limit, seed) if items is None else list(items[task])
        bad = [i for i in chosen if not 0 <= i < len(rows)]
        if bad:
            raise ValueError(f"{task} has rows 0..{len(rows) - 1}; got item indices {bad}")
        chosen_items += [(task, i, TASKS[task].to_item(rows[i])) for i in chosen]
    encoder = _Encoder(tokenizer)
    records, pairs = [], []
    for task, i, item in chosen_items:
        records.append((task, i, item, len(pairs)))
        pairs += [encoder.pair(context, continuation) for context, continuation in item.requests]
    loglik, greedy = score_requests(
        model, pairs, max_length=max_context_length(model, tokenizer), batch_tokens=batch_tokens, progress=progress
    )

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


def _metric_values(items: pd.DataFrame, task: str, metric: str) -> np.ndarray:
    rows = items[items["task"] == task]
    if metric == "perplexity":
        return np.array([values[0] for values in rows["loglik"]])
    return rows[metric].to_numpy(dtype=float)


def _statistic(metric: str) -> Statistic:
    """The statistic of a metric's per-item values: their mean, or for LAMBADA's perplexity exp(-mean loglik)."""
    if metric == "perplexity":
        return lambda loglik, axis=-1: np.exp(-np.mean(loglik, axis=axis))
    return np.mean


def _check_items(items: pd.DataFrame) -> None:
    """One model's ``evaluate_zero_shot`` frame, each item once (a repeated item would count twice)."""
    needed = {"task", "item", "loglik", "acc", "acc_norm"}
    if not isinstance(items, pd.DataFrame) or not needed <= set(items.columns):
        raise ValueError(f"expected the frame evaluate_zero_shot returns (columns {sorted(needed)})")
    repeated = items[items.duplicated(["task", "item"])]
    if len(repeated):
        pairs = sorted({(task, int(item)) for task, item in zip(repeated["task"], repeated["item"])})
        raise ValueError(f"the frame repeats (task, item) pairs {pairs}; give each item of one model once")


def zero_shot_summary(items: pd.DataFrame, **bootstrap: object) -> pd.DataFrame:
    """One row per task and reported metric, with a bootstrap interval over items.

    LAMBADA's perplexity is ``exp(-mean loglik)``.

    Args:
        items: the frame ``evaluate_zero_shot`` returns.
        **bootstrap: keyword arguments of ``bootstrap_ci`` (``n_boot``, ``confidence``, ``seed``).

    Returns:
        A frame with columns ``task``, ``metric``, ``estimate``, ``low``, ``high`` and ``n`` (items).

    Raises:
        ValueError: if ``items`` is not a frame with the columns ``evaluate_zero_shot`` returns, or repeats an item;
            as ``bootstrap_ci``.
        TypeError: as ``bootstrap_ci``, for its arguments.
    """
    _check_items(items)
    table = []
    for task in items["task"].unique():
        for metric in TASKS[task].metrics:
            values = _metric_values(items, task, metric)
            ci = bootstrap_ci(values, statistic=_statistic(metric), **bootstrap)
            table.append({"task": task, "metric": metric, **ci._asdict(), "n": len(values)})
    return pd.DataFrame(table)


def zero_shot_difference(a: pd.DataFrame, b: pd.DataFrame, **bootstrap: object) -> pd.DataFrame:
    """Paired bootstrap interval of metric(b) - metric(a) per task and metric, for two models on the same items.

    Args:
        a: ``evaluate_zero_shot``'s frame for the first model (the one subtracted).
        b: the frame for the second model; its rows may come in another order.
        **bootstrap: keyword arguments of ``paired_difference`` (``n_boot``, ``confidence``, ``seed``).

    Returns:
        A frame with columns ``task``, ``metric``, ``estimate``, ``low``, ``high``, ``excludes_zero`` (the
        difference is unlikely to be noise) and ``n`` (items).

    Raises:
        ValueError: if a frame lacks ``evaluate_zero_shot``'s columns, or the two cover different (task, item) pairs
            (or repeat one): only the same items can be paired; as ``paired_difference``.
        TypeError: as ``paired_difference``, for its arguments.
    """
    _check_items(a)
    _check_items(b)
    keys_a, keys_b = list(zip(a["task"], a["item"])), list(zip(b["task"], b["item"]))
    if sorted(keys_a) != sorted(keys_b):
        raise ValueError("the two results cover different items; evaluate both models with the same tasks and items")
    b = b.set_index(["task", "item"]).loc[keys_a].reset_index()
    table = []
    for task in a["task"].unique():
        for metric in TASKS[task].metrics:
            ci = paired_difference(
                _metric_values(a, task, metric),
                _metric_values(b, task, metric),
                statistic=_statistic(metric),
                **bootstrap,
            )
            table.append(
                {
                    "task": task,
                    "metric": metric,
                    **ci._asdict(),
                    "excludes_zero": ci.excludes_zero,
                    "n": int((a["task"] == task).sum()),
                }
            )
    return pd.DataFrame(table)


def lm_eval_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: dict[str, Sequence[int]],
    workdir: Path,
    *,
    batch_size: int = 16,
    source: Source = "auto",
    timings: dict[str, float] | None = None,
) -> pd.DataFrame:
    """The same per-item frame as ``evaluate_zero_shot``, computed by lm-eval itself (needs ``lm-eval`` 0.4.x).

    lm-eval reads the hub; to run it offline too, the chosen rows (``load_task``) are written as JSON lines into
    ``workdir`` with task YAMLs that include lm-eval's own YAML and change only where the documents come from, so
    prompts, choices and metrics are lm-eval's. Meant to check this module, not to replace it.

    Args:
        model: the causal LM to evaluate.
        tokenizer: its tokenizer.
        items: ``{task: [row index, ...]}``, the rows to evaluate.
        workdir: folder for the JSON lines, YAMLs and lm-eval's dataset cache; created when missing.
        batch_size: lm-eval's batch size.
        source: where the documents come from, as in ``load_task``.
        timings: when given, receives the seconds lm-eval spent in its log-likelihood requests, added to the key
            ``"loglikelihood"``.

    Returns:
        A frame with columns ``task``, ``item``, ``loglik``, ``acc`` and ``acc_norm`` (NaN where lm-eval reports
        none).

    Raises:
        ModuleNotFoundError: if lm-eval is not installed.
        ValueError: if the tasks of ``items`` are empty, unknown or repeated; as ``load_task``.
        TypeError, FileNotFoundError: as ``load_task``.
    """
    import lm_eval
    import lm_eval.tasks
    from lm_eval.models.huggingface import HFLM

    _check_tasks(items)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    builtin = Path(lm_eval.tasks.__file__).parent
    for task, chosen in items.items():
        rows = load_task(task, source=source)
        data = workdir / f"{task}.jsonl"
        data.write_text("".join(json.dumps(rows[i]) + "\n" for i in chosen), encoding="utf-8")
        (workdir / f"course_{task}.yaml").write_text(
            f"include: {builtin / LM_EVAL_YAMLS[task]}\ntask: course_{task}\ntag: []\ndataset_path: json\n"
            f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {workdir / 'cache'}\n"
            "training_split: null\nvalidation_split: null\ntest_split: test\nfewshot_split: null\n",
            encoding="utf-8",
        )
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    loglikelihood = lm.loglikelihood

    def timed(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        result = loglikelihood(*args, **kwargs)
        if timings is not None:
            timings["loglikelihood"] = timings.get("loglikelihood", 0.0) + time.perf_counter() - start
        return result

    lm.loglikelihood = timed
    with eval_mode(model):
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[f"course_{task}" for task in items],
            num_fewshot=0,
            log_samples=True,
            task_manager=lm_eval.tasks.TaskManager(include_path=str(workdir), include_defaults=False),
            verbosity="ERROR",
        )
    table = []
    for task, chosen in items.items():
        by_doc = {sample["doc_id"]: sample for sample in results["samples"][f"course_{task}"]}
        for doc, item in enumerate(chosen):
            sample = by_doc[doc]
            table.append(
                {
                    "task": task,
                    "item": int(item),
                    "loglik": tuple(float(response[0]) for response in sample["filtered_resps"]),
                    "acc": float(sample["acc"]),
                    "acc_norm": float(sample.get("acc_norm", np.nan)),
                }
            )
    return pd.DataFrame(table)
