"""lm-eval's log-likelihoods of (context, continuation) requests, computed with far less model work than lm-eval.

``score_texts`` is the one call: ``helpers.zero_shot.evaluate_zero_shot`` turns a task's items into requests, and
this module tokenises them as lm-eval 0.4.13's Hugging Face backend does and returns each request's log-likelihood
and whether greedy decoding reproduces its continuation.

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
such a mask cannot express (ALiBi, sliding-window layers, flash or flex attention; see ``packing.packs``) instead run
each distinct context once (similar lengths batched; with sliding windows only equal lengths, so no padding sits
inside a window), keep its KV cache, and run all its choices' remaining tokens in batches on that cache.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from ..blocks import check_decoder
from ..checks import check_int
from ..data import right_pad
from ..generation import cache_argument_name
from ..hooks import eval_mode, input_device
from ..settings import progress_bar
from .packing import MASK_CONVENTIONS, has_sliding_window, packed_mask, packs

TOKENIZER_INFINITY = 1000000000000000019884624838656
"""``model_max_length`` of a tokenizer that sets none (transformers' VERY_LARGE_INTEGER)."""


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
        mask = packed_mask(segments, convention, model.dtype)
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
    batches = _batches([len(unit.context) for unit in units], batch_tokens, has_sliding_window(model))
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

    Requests are grouped by their context (``_units``). Models that ``packs`` accepts (``PACKED_FAMILIES``, no
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
        ValueError: if ``batch_tokens`` is below 1, a continuation has no token or more than ``max_length``, or the
            model gives no next-token logits (``check_decoder``: an encoder, or a backbone without its LM head).
    """
    check_decoder(model, "logits")
    check_int("batch_tokens", batch_tokens)
    units = _units(pairs, max_length)
    loglik = torch.zeros(len(pairs), dtype=torch.float64)
    greedy = torch.ones(len(pairs), dtype=torch.bool)
    run = _run_packed if packs(model) else _run_cached
    with eval_mode(model), torch.inference_mode():
        run(model, units, batch_tokens, progress, loglik, greedy)
    return loglik.numpy(), greedy.numpy()


def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[tuple[str, str]],
    *,
    batch_tokens: int = 4096,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """lm-eval's ``loglikelihood`` of each (context, continuation) text pair, and whether greedy decoding reproduces
    the continuation: the pairs tokenised as lm-eval does (``_Encoder``), then ``score_requests``.

    Args:
        model: the causal LM (run in eval mode, without gradients).
        tokenizer: its tokenizer.
        requests: (context, continuation) texts, e.g. ``(question, " " + choice)``.
        batch_tokens: padded tokens per batch, as in ``score_requests``.
        progress: show a progress bar.

    Returns:
        ``(loglik, greedy)``: float64 and bool arrays with one entry per request, in the order of ``requests``.

    Raises:
        ValueError: if a context is empty; as ``score_requests``.
        TypeError: as ``score_requests``.
    """
    encoder = _Encoder(tokenizer)
    pairs = [encoder.pair(context, continuation) for context, continuation in requests]
    return score_requests(
        model, pairs, max_length=max_context_length(model, tokenizer), batch_tokens=batch_tokens, progress=progress
    )
