"""Data-driven block criteria of Shortened LLaMA (Kim et al., 2024) and SLEB (Song et al., 2024).

All of them look at calibration batches (``helpers.data.calibration_batches``: dicts of right-padded ``input_ids``
and ``attention_mask``); the loss is the next-token negative log-likelihood over every real token (labels =
``input_ids`` with padding set to -100). Every score is HIGHER = MORE IMPORTANT, like every criterion in this
package, and the model is left exactly as it was found (weights, training flag, ``requires_grad``, ``.grad``).

The perplexity criterion is the expensive one: the paper runs a full pass of a pruned copy for each of the L
blocks. ``ppl_scores`` computes the same numbers from one pass that caches the hidden state entering every block:
removing block i leaves blocks 0..i-1 untouched, so the model without block i is "cached input of block i, then
blocks i+1..L-1, then the head". Block i costs L-1-i blocks instead of L-1: half the block work. The head still
runs once per block (on real tokens only), so on SmolLM2-135M the whole criterion takes about 0.53-0.56 of the naive
time (``benchmarks/bench_ppl.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from transformers import PreTrainedModel

from .blocks import get_blocks
from .hooks import eval_mode, hidden_input, input_device, raise_non_finite, run_model
from .perplexity import IGNORE, token_nll
from .pruning import prune_blocks, skip_blocks
from .selection import removable_blocks, resolve_k
from .settings import progress_bar
from .static_criteria import WeightSet, block_scores, block_weights
from .ties import first_minimum

Batch = Mapping[str, torch.Tensor]


class _Captured(Exception):
    """Raised by the capture hook once the last block's input is stored: nothing after it is needed."""


def _targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(where, what): which positions predict a real next token, and those tokens."""
    where = labels[:, 1:] != IGNORE
    return where, labels[:, 1:][where]


def _prepare(model: PreTrainedModel, batches: Sequence[Batch]) -> tuple[list[tuple[dict, torch.Tensor]], int]:
    """(model inputs, labels) per batch on the model's input device (labels are -100 on padding), and the number
    of tokens to predict in all batches."""
    if isinstance(batches, Mapping) or not batches:
        raise ValueError("batches must be a non-empty list of dicts with 'input_ids' (and 'attention_mask')")
    device = input_device(model)
    prepared = []
    for number, batch in enumerate(batches):
        ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            raise ValueError(f"batch {number} has no 2-D 'input_ids' tensor; each batch is a dict of token tensors")
        mask = batch.get("attention_mask", torch.ones_like(ids))
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        prepared.append((inputs, ids.masked_fill(mask == 0, IGNORE).to(device)))
    n_tokens = sum(len(_targets(labels)[1]) for _, labels in prepared)
    if n_tokens == 0:
        raise ValueError("the batches hold no token to predict (every row has at most one real token)")
    return prepared, n_tokens


def taylor_scores(
    model: PreTrainedModel, batches: Sequence[Batch], *, weights: WeightSet = "all", progress: bool = True
) -> pd.Series:
    """Shortened LLaMA's Taylor criterion: sum over a block's weights of |W ⊙ ∂L/∂W| (first-order loss change).

    L is the mean next-token loss over all real tokens of all batches; its gradient is accumulated batch by batch
    (one forward and backward pass each) and |W ⊙ g| is taken once at the end, as the official code does (it sums
    W ⊙ g over batches of per-batch mean losses; with its one batch of 10 samples that is the same). Gradients are
    taken with ``torch.autograd.grad``, so no ``.grad`` is written; ``requires_grad`` flags and the training flag are
    restored. "Taylor+" is this score with ``select_blocks(..., **PLUS_HEURISTIC)``.

    Args:
        model: the model to score.
        batches: calibration batches (dicts with 2-D ``input_ids`` and optionally ``attention_mask``).
        weights: "all" parameters of the block (the official code takes every weight, norm scales included) or
            "matrices".
        progress: show a progress bar.

    Returns:
        A Series named "taylor", indexed by ``block``.

    Raises:
        RuntimeError: if called inside ``torch.inference_mode()``, which turns gradients off.
        ValueError: if ``batches`` is one dict or empty, a batch has no 2-D ``input_ids`` tensor, there is no token to
            predict, ``weights`` is not a valid choice, or a score is not finite.
        TypeError: if ``weights`` is not a string.
        FloatingPointError: if the model's logits are NaN or inf (``raise_non_finite`` names where they start).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "taylor_scores needs gradients, which torch.inference_mode() turns off; call it outside the "
            "`with torch.inference_mode():` block"
        )
    prepared, n_tokens = _prepare(model, batches)
    params = [block_weights(block, weights) for block in get_blocks(model)]
    flat = [p for block in params for p in block]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in flat]
    try:
        # Only the blocks' weights need gradients: the embedding/head gradient would be large and unused.
        for p, _ in flags:
            p.requires_grad_(False)
        for p in flat:
            p.requires_grad_(True)
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            for inputs, labels in progress_bar(prepared, "Taylor", progress):
                where, targets = _targets(labels)
                logits = model(**inputs, use_cache=False).logits
                logits = logits[:, :-1][where.to(logits.device)]
                if not torch.isfinite(logits).all():
                    raise_non_finite(model, inputs, "the Taylor criterion's loss")
                loss = token_nll(logits, targets, "sum") / n_tokens
                for total, grad in zip(grads, torch.autograd.grad(loss, flat)):
                    total += grad.float()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    values, start = [], 0
    for block in params:
        pairs = zip(block, grads[start : start + len(block)])
        values.append(sum((p.detach().float() * g).abs().sum().item() for p, g in pairs))
        start += len(block)
    return block_scores(values, "taylor")


def _block_inputs(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The hidden state entering each block in one forward pass (stopped as soon as the last one is known)."""
    blocks = get_blocks(model)
    states: list[torch.Tensor] = []

    def capture(module, args, kwargs):
        states.append(hidden_input(args, kwargs).clone())  # clone: a block may update its input in place
        if len(states) == len(blocks):
            raise _Captured

    handles = [block.register_forward_pre_hook(capture, with_kwargs=True) for block in blocks]
    try:
        model(**inputs, use_cache=False)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return states


@contextmanager
def _without_block(model: PreTrainedModel, index: int, state: torch.Tensor) -> Iterator[None]:
    """Run ``model`` as if block ``index`` were removed, given ``state``, the cached input of block ``index``.

    Blocks 0..index are skipped and the next block gets ``state`` instead of the embeddings. For the last block
    nothing follows, so blocks 0..L-2 are skipped and the last one passes ``state`` straight to the final norm.
    """
    blocks = get_blocks(model)
    last = index == len(blocks) - 1

    def feed(module, args, kwargs):
        if args:
            return (state, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": state}

    def identity(module, args, kwargs, output):
        return state if isinstance(output, torch.Tensor) else (state, *output[1:])

    if last:
        handle = blocks[index].register_forward_hook(identity, with_kwargs=True)
    else:
        handle = blocks[index + 1].register_forward_pre_hook(feed, with_kwargs=True)
    try:
        with skip_blocks(model, range(index if last else index + 1)):
            yield
    finally:
        handle.remove()


def _nll_real_tokens(model: PreTrainedModel, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> float:
    """Summed next-token NLL over the real tokens; the head only sees the positions that predict one."""
    where, targets = _targets(labels)
    # The head (vocab x hidden, as big as several blocks) runs on real positions only; anything the model applies
    # to its logits afterwards (e.g. Gemma-2's soft-capping) is element-wise and works on the shorter input.
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda m, args: (args[0][:, :-1][where.to(args[0].device)],)
    )
    try:
        logits = model(**inputs, use_cache=False).logits
    finally:
        handle.remove()
    return token_nll(logits, targets, "sum").item()


def _cached_nll(model: PreTrainedModel, prepared: list, candidates: Sequence[int], progress: bool) -> list[float]:
    """Summed NLL of the model without each candidate block (positions in the current block list)."""
    states = [_block_inputs(model, inputs) for inputs, _ in prepared]
    nll = []
    for index in progress_bar(candidates, "PPL without each block", progress):
        total = 0.0
        for (inputs, labels), cached in zip(prepared, states):
            with _without_block(model, index, cached[index]):
                total += _nll_real_tokens(model, inputs, labels)
        nll.append(total)
    return nll


def _naive_nll(model: PreTrainedModel, prepared: list, progress: bool) -> list[float]:
    """The paper's loop: for each block a pruned copy and ordinary forward passes with labels."""
    nll = []
    for index in progress_bar(range(len(get_blocks(model))), "PPL without each block (naive)", progress):
        pruned = prune_blocks(model, [index])
        total = 0.0
        for inputs, labels in prepared:
            # transformers' loss is the mean over the batch's real tokens: weight it back by their number.
            loss = pruned(**inputs, labels=labels, use_cache=False).loss
            total += loss.item() * len(_targets(labels)[1])
        nll.append(total)
        del pruned
    return nll


def _refuse_non_finite_model(model: PreTrainedModel, prepared: list, what: str) -> None:
    """Raise, naming where, when the model itself gives non-finite logits on a calibration batch.

    Called when some NLL without a block is not finite: if the model with all its blocks is, that block's removal is
    the cause and ``block_scores`` reports it; if not, a broken block poisons every pass that keeps it.
    """
    for inputs, _ in prepared:
        if not torch.isfinite(run_model(model, inputs).logits).all():
            raise_non_finite(model, inputs, what)


def ppl_scores(
    model: PreTrainedModel, batches: Sequence[Batch], *, cached: bool = True, progress: bool = True
) -> pd.Series:
    """Shortened LLaMA's PPL criterion: the perplexity of the model without each block, named "ppl".

    Higher perplexity without block i = block i is more important. Perplexity = exp(mean NLL over all real tokens
    of all batches).

    Args:
        model: the model to score; it is only skipped through, never modified.
        batches: calibration batches (dicts with 2-D ``input_ids`` and optionally ``attention_mask``).
        cached: compute it from cached block inputs (see the module docstring) in a little over half the time of
            ``cached=False``, the paper's loop of L pruned copies, kept as the reference.
        progress: show a progress bar.

    Returns:
        A Series named "ppl", indexed by ``block``.

    Raises:
        ValueError: if the model has fewer than 2 blocks, ``batches`` is invalid (as ``taylor_scores``), or the
            perplexity without some block is not finite while the full model's is.
        FloatingPointError: if the full model's logits are NaN or inf (``raise_non_finite`` names where they start).
    """
    n_blocks = len(get_blocks(model))
    if n_blocks < 2:
        raise ValueError("the PPL criterion needs a model of at least 2 blocks (one must stay)")
    prepared, n_tokens = _prepare(model, batches)
    with eval_mode(model), torch.inference_mode():
        if cached:
            nll = _cached_nll(model, prepared, range(n_blocks), progress)
        else:
            nll = _naive_nll(model, prepared, progress)
        if not all(map(math.isfinite, nll)):
            _refuse_non_finite_model(model, prepared, "the PPL criterion")
    return block_scores([math.exp(total / n_tokens) for total in nll], "ppl")


def sleb_removal(
    model: PreTrainedModel,
    batches: Sequence[Batch],
    k: int | float,
    *,
    protect_first: int = 0,
    protect_last: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """SLEB: remove the block whose removal raises perplexity least, re-score the rest on the pruned model, k times.

    Near-ties (``ties.TIE_RTOL``) go to the lower block index. The model is only skipped through (``skip_blocks``),
    never modified.

    Args:
        model: the model to prune.
        batches: calibration batches (dicts with 2-D ``input_ids`` and optionally ``attention_mask``).
        k: a block count (int) or a fraction of the blocks (float in (0, 1), see ``resolve_k``).
        protect_first: original blocks at the start that are never candidates (the "+" heuristic).
        protect_last: original blocks at the end that are never candidates.
        progress: show a progress bar.

    Returns:
        A frame indexed by ``step`` (1..k) with ``block`` (original index removed at that step) and ``ppl``
        (calibration perplexity once the blocks of steps 1..step are removed); ``frame["block"].tolist()`` are the
        blocks to remove.

    Raises:
        TypeError: if ``k`` is not a number (``resolve_k``), or ``protect_first`` or ``protect_last`` is not an
            integer.
        ValueError: if ``k`` is invalid (``resolve_k``), the protected blocks leave fewer than k candidates,
            ``batches`` is invalid (as ``taylor_scores``), or a perplexity is not finite while the model's is.
        FloatingPointError: if the model's logits (with the blocks removed so far) are NaN or inf.
    """
    n_blocks = len(get_blocks(model))
    count = resolve_k(k, n_blocks)
    candidates = removable_blocks(n_blocks, count, protect_first=protect_first, protect_last=protect_last)
    prepared, n_tokens = _prepare(model, batches)
    removed, rows = [], []
    with eval_mode(model), torch.inference_mode():
        for step in progress_bar(range(1, count + 1), "SLEB", progress):
            kept = [b for b in range(n_blocks) if b not in removed]
            with skip_blocks(model, removed):
                scored = [b for b in candidates if b not in removed]
                nll = _cached_nll(model, prepared, [kept.index(b) for b in scored], progress=False)
                if not all(map(math.isfinite, nll)):
                    _refuse_non_finite_model(model, prepared, "SLEB's perplexity")
            ppl = block_scores([math.exp(total / n_tokens) for total in nll], "ppl", blocks=scored)
            block = int(first_minimum(ppl))  # near-ties (TIE_RTOL) go to the lower block index
            removed.append(block)
            rows.append({"step": step, "block": block, "ppl": ppl[block]})
    return pd.DataFrame(rows).set_index("step")
