"""Heal without training (ReplaceMe, Shopkhoev et al. 2025): replace each removed span of blocks by one linear map.

When the blocks ``[i, i + n)`` are removed, block ``i - 1``'s output ``Y + M`` (``Y``: the residual stream after its
attention, ``M``: its MLP's output) goes straight to block ``i + n``, where the full model delivered ``L``, the output
of block ``i + n - 1``. A d x d map ``T`` with ``M T + Y ≈ L``, fitted by least squares on calibration tokens, gives
back part of what the span did. ``M`` is the MLP's down projection applied to its hidden activations ``a``
(``M = a W_down^T``), so ``M T = a (T^T W_down)^T``: the map folds into that one weight and the repaired model is a
plain, smaller model of its family (``save_pretrained`` -> ``from_pretrained`` works, nothing extra to carry).

Which tokens the squares are summed over matters. Padding is always masked (the published code counts it). Each
sequence's first position is an attention sink whose residual stream has a norm about 100 times the others' on the
course model, but the fit regresses the span's change ``L - Y`` on the MLP output ``M``, which is small there, so
those rows do not dominate it: on the course model (blocks 20-25 removed, 64 WikiText samples) leaving them out moved
held-out perplexity by -0.2 [-0.6, +0.1], within noise. So by default every real token counts (``skip_first=False``);
chapter 6 shows the learner both on its own selection. The map has d² parameters and wants thousands of tokens:
there, 2k tokens gave held-out perplexity 330, 7k gave 190 and 28k gave 176 (paired: better than 7k).
``benchmarks/linear_repair_evidence.py`` measures both. Memory grows with d², not with the number of tokens:
``M^T M`` and ``M^T (L - Y)`` accumulate batch by batch (float64) and one solve gives ``T``.

Families that normalise the MLP's output before adding it (``post_feedforward_layernorm``: Gemma 2/3, OLMo 2) add
``M = g * z / rms(z)``, with ``z`` the down projection's output and ``g`` the norm's gain. No weight change turns that
into ``M T`` exactly (the norm is not linear), but ``z (diag(g) T diag(g)^-1)`` gives the norm an input whose output
points exactly along ``M T``; the norm then sets its length (``rms`` of the new input, not of the old). So the fold is
approximate there (``SpanMap.exact`` is False), and held-out data decides whether it helps, as everywhere.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .blocks import check_block_indices, get_blocks
from .checks import check_bool
from .hooks import block_hooks, run_model
from .perplexity import PerplexityResult, perplexity, perplexity_difference
from .pruning import prune_blocks, skip_blocks
from .settings import progress_bar
from .statistics import ConfidenceInterval


@dataclass(frozen=True)
class SpanMap:
    """The map that replaces one removed span: ``T`` (d x d), fitted on ``tokens`` calibration tokens.

    Attributes:
        start: the span's first removed block (original numbering); the map folds into block ``start - 1``.
        length: how many consecutive blocks it replaces.
        map: ``T``, float32, shape (d, d): the MLP output ``M`` of block ``start - 1`` becomes ``M @ T``.
        tokens: the calibration positions the squares were summed over.
        exact: whether the fold gives ``M @ T`` exactly; False where the block normalises its MLP output (the fold
            then keeps the direction of ``M @ T`` and the norm sets its length: see the module docstring).
    """

    start: int
    length: int
    map: torch.Tensor
    tokens: int
    exact: bool = True


def spans(blocks: Iterable[int]) -> list[tuple[int, int]]:
    """The maximal runs of consecutive indices in ``blocks`` as ``(start, length)``, in block order."""
    runs: list[tuple[int, int]] = []
    for block in sorted(blocks):
        if runs and block == runs[-1][0] + runs[-1][1]:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((block, 1))
    return runs


def down_projection(block: torch.nn.Module) -> torch.nn.Linear:
    """The linear map a block's MLP ends in (``mlp.down_proj``), where a span's map folds.

    Raises:
        ValueError: naming what is missing: an MLP without one final linear map (a mixture of experts, another
            layout).
    """
    down = getattr(getattr(block, "mlp", None), "down_proj", None)
    if not isinstance(down, torch.nn.Linear):
        mlp = getattr(block, "mlp", None)
        raise ValueError(
            f"a linear map folds into the MLP's final linear layer `mlp.down_proj`, but this block's MLP "
            f"({type(mlp).__name__}) has none (a mixture of experts or another layout): supported are families whose "
            "MLP ends in one `down_proj` Linear, e.g. LLaMA, Mistral, Qwen 2/3, Gemma 1/2/3, Phi-3"
        )
    return down


def mlp_output(block: torch.nn.Module) -> torch.nn.Module:
    """The module whose output ``M`` the block adds to its residual stream: the norm after the MLP where the family
    has one (``post_feedforward_layernorm``: Gemma 2/3, OLMo 2), else the MLP itself."""
    return getattr(block, "post_feedforward_layernorm", None) or block.mlp


@torch.no_grad()
def _post_norm_gain(block: torch.nn.Module) -> torch.Tensor | None:
    """The gain ``g`` of the RMS norm a block applies to its MLP output (None where it adds the output as it is).

    Read off the norm itself: on a constant vector an RMS norm returns its gain, whatever the family's convention
    (Gemma stores ``g - 1``). A random vector then confirms ``g * x / rms(x)``.

    Raises:
        ValueError: for a norm that is not an RMS norm (centring, a bias), or a gain with a zero entry (the fold
            divides by it).
    """
    norm = mlp_output(block)
    if norm is getattr(block, "mlp", None):
        return None
    d = down_projection(block).out_features
    parameter = next(norm.parameters(), None)
    device, dtype = (parameter.device, parameter.dtype) if parameter is not None else ("cpu", torch.float32)
    gain = norm(torch.full((1, d), 1e3, device=device, dtype=dtype)).double().cpu()[0]
    probe = torch.randn(1, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = gain * probe / probe.pow(2).mean().sqrt()
    got = norm(probe.to(device, dtype)).double().cpu()
    if not torch.allclose(got, expected, rtol=1e-2, atol=1e-3 * float(gain.abs().max())):
        raise ValueError(
            f"{type(norm).__name__} after the MLP is not an RMS norm (g * x / rms(x)), so a map cannot fold through "
            "it; supported are families that add the MLP output as it is or through an RMS norm"
        )
    if bool((gain.abs() < 1e-6 * gain.abs().max()).any()):
        raise ValueError(
            f"the gain of {type(norm).__name__} after the MLP has a zero entry: the fold divides by the gain, so a "
            "map cannot fold into this block"
        )
    return gain


def _fit_mask(attention_mask: torch.Tensor, skip_first: bool) -> torch.Tensor:
    """The positions whose squares count: real tokens, without each row's first real token when ``skip_first``."""
    mask = attention_mask.bool()
    if skip_first:
        mask = mask & (mask.long().cumsum(dim=1) > 1)
    return mask


class _SpanDone(Exception):
    """Raised by the last hook of a fit: nothing after the span is needed, so the forward pass stops there."""


def fit_span_map(
    model: PreTrainedModel,
    batches: Sequence[Mapping[str, torch.Tensor]],
    start: int,
    length: int,
    *,
    ridge: float = 1e-4,
    skip_first: bool = False,
    progress: bool = True,
) -> SpanMap:
    """Fit ``T`` minimising ``sum ||M T + Y - L||^2 + ridge * trace(M^T M) / d * ||T||^2`` for the span
    ``[start, start + length)`` of ``model`` as it is now (earlier spans may be skipped or repaired already).

    Args:
        model: the model whose blocks ``start - 1`` .. ``start + length - 1`` are run (stopped after the span).
        batches: calibration batches with ``input_ids`` and ``attention_mask`` (e.g. ``calibration_batches``).
        start: the span's first block, at least 1 (the map folds into block ``start - 1``).
        length: the span's number of blocks.
        ridge: the ridge term relative to the mean eigenvalue of ``M^T M`` (0: plain least squares).
        skip_first: leave each sequence's first real token (the attention sink) out of the squares (see the module
            docstring: on the course model it changes nothing beyond noise).
        progress: show a bar over the batches.

    Returns:
        The ``SpanMap``.

    Raises:
        ValueError: for a span outside the model or starting at block 0, a negative ridge, no token to fit on, or a
            block the map cannot fold into (``down_projection``).
    """
    blocks = get_blocks(model)
    check_bool("skip_first", skip_first)
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive number of blocks; got {length!r}")
    check_block_indices(range(start, start + length), len(blocks))
    if start == 0:
        raise ValueError("a span starting at block 0 has no block before it whose MLP could carry the map; start >= 1")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0 (0: plain least squares); got {ridge}")
    before, last = blocks[start - 1], start + length - 1
    down = down_projection(before)
    exact = _post_norm_gain(before) is None  # also refuses a norm a map cannot fold through
    seen: dict[str, torch.Tensor] = {}

    def keep_mlp(module, args, output):
        seen["M"] = output

    def record(index: int, block_input: torch.Tensor, block_output: torch.Tensor) -> None:
        seen[index] = block_output
        if index == last:
            raise _SpanDone

    d = down.out_features
    mtm = torch.zeros(d, d, dtype=torch.float64)
    mtr = torch.zeros(d, d, dtype=torch.float64)
    tokens = 0
    handle = mlp_output(before).register_forward_hook(keep_mlp)
    try:
        for batch in progress_bar(batches, f"fitting the map for blocks {start}-{last}", progress):
            # The last hook raises _SpanDone: the pass stops after the span's last block.
            with block_hooks(model, record, [start - 1, last]), suppress(_SpanDone):
                run_model(model, batch)
            rows = _fit_mask(batch["attention_mask"], skip_first).to(seen["M"].device)
            m = seen["M"][rows].double().cpu()
            y = (seen[start - 1][rows] - seen["M"][rows]).double().cpu()  # block output = Y + M
            target = seen[last][rows].double().cpu() - y
            mtm += m.T @ m
            mtr += m.T @ target
            tokens += int(rows.sum())
    finally:
        handle.remove()
    if tokens == 0:
        raise ValueError("no token to fit on: the batches hold no real token (skip_first: none after a row's first)")
    damping = ridge * torch.trace(mtm) / d
    solved = torch.linalg.solve(mtm + damping * torch.eye(d, dtype=torch.float64), mtr)
    return SpanMap(start=start, length=length, map=solved.float(), tokens=tokens, exact=exact)


@torch.no_grad()
def fold_map(block: torch.nn.Module, span_map: torch.Tensor) -> None:
    """Fold ``T`` into ``block``'s MLP down projection, in place: the block's MLP output ``M`` becomes ``M @ T``
    (behind an RMS norm with gain ``g``: ``diag(g) T diag(g)^-1`` is folded, so the output points along ``M @ T``)."""
    down = down_projection(block)
    if span_map.shape != (down.out_features, down.out_features):
        raise ValueError(f"the map must be {down.out_features} x {down.out_features}; got {tuple(span_map.shape)}")
    t = span_map.to(down.weight.device, torch.float64)
    gain = _post_norm_gain(block)
    if gain is not None:  # z -> z diag(g) T diag(g)^-1, whose normalised output is g * (z diag(g) T) / rms
        gain = gain.to(t.device)
        t = gain[:, None] * t / gain[None, :]
    down.weight.copy_((t.T @ down.weight.double()).to(down.weight.dtype))
    if down.bias is not None:
        down.bias.copy_((down.bias.double() @ t).to(down.bias.dtype))


@dataclass(frozen=True)
class LinearRepair:
    """A pruned model repaired by linear maps, with what held-out data says of the maps.

    Attributes:
        model: the pruned model with each span's map folded in (a plain model of its family).
        maps: one ``SpanMap`` per removed span, in block order.
        pruned: held-out perplexity of the pruned model without the maps.
        repaired: held-out perplexity of ``model``, on the same windows.
        difference: repaired - pruned perplexity, paired over the windows (lower is better).
        seconds: how long fitting and folding the maps took (the held-out measurements not included).
    """

    model: PreTrainedModel
    maps: list[SpanMap]
    pruned: PerplexityResult
    repaired: PerplexityResult
    difference: ConfidenceInterval
    seconds: float

    @property
    def verdict(self) -> str:
        """The maps on held-out data: "better", "worse", "within noise" or "too few to decide"."""
        return self.difference.verdict(better="lower")


def linear_repair(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    blocks: Iterable[int],
    calibration: Sequence[Mapping[str, torch.Tensor]],
    held_out: Sequence[str],
    *,
    ridge: float = 1e-4,
    skip_first: bool = False,
    seq_len: int = 128,
    max_windows: int | None = 20,
    pruned: PerplexityResult | None = None,
    progress: bool = True,
) -> LinearRepair:
    """Remove ``blocks`` and replace each span of them by a fitted linear map, then measure the maps on held-out text.

    Spans are fitted in block order, each on the model with the earlier spans already removed and repaired, as the
    repaired model will run. ``model`` is not changed. The held-out perplexity with and without the maps comes back
    with the model, so a map that hurts is never handed over silently: keep it only where ``verdict`` is "better".

    Args:
        model: the full model.
        tokenizer: its tokenizer.
        blocks: the blocks to remove (no span may start at block 0).
        calibration: the batches the maps are fitted on (``calibration_batches``).
        held_out: texts the fit never saw (e.g. ``load_wikitext("evaluation")``).
        ridge: as for ``fit_span_map``.
        skip_first: as for ``fit_span_map``.
        seq_len: tokens per held-out perplexity window.
        max_windows: held-out windows (None: all).
        pruned: the pruned model's perplexity on these held-out windows when measured already (``evaluate_variants``
            gives it); None measures it here. Results on other windows are refused, as by ``perplexity_difference``.
        progress: show progress bars.

    Returns:
        A ``LinearRepair``.

    Raises:
        ValueError: as ``check_block_indices``, ``fit_span_map`` and ``perplexity``; as ``perplexity_difference`` for a
            ``pruned`` result measured on other windows.
        TypeError: if ``pruned`` is neither None nor a ``PerplexityResult``.
    """
    removed = check_block_indices(blocks, len(get_blocks(model)))
    if pruned is not None and not isinstance(pruned, PerplexityResult):
        raise TypeError(
            "pruned must be a PerplexityResult (from perplexity or evaluate_variants) or None; "
            f"got {type(pruned).__name__}"
        )
    for start, _ in spans(removed):
        if start == 0:
            raise ValueError("a span starting at block 0 has no block before it to carry its map; keep block 0")
        down_projection(get_blocks(model)[start - 1])
        _post_norm_gain(get_blocks(model)[start - 1])
    began = time.perf_counter()
    repaired = copy.deepcopy(model)
    originals = get_blocks(repaired)
    maps, done = [], []
    for start, length in spans(removed):
        shift = len(done)  # earlier spans are skipped, so this span's blocks sit that many places lower
        with skip_blocks(repaired, done) as current:
            span_map = fit_span_map(
                current, calibration, start - shift, length, ridge=ridge, skip_first=skip_first, progress=progress
            )
        fold_map(originals[start - 1], span_map.map)
        maps.append(SpanMap(start, length, span_map.map, span_map.tokens, span_map.exact))
        done += range(start, start + length)
    repaired = prune_blocks(repaired, removed, inplace=True)
    seconds = time.perf_counter() - began
    window_args = dict(seq_len=seq_len, max_windows=max_windows, progress=progress)
    if pruned is None:
        with skip_blocks(model, removed) as pruned_model:
            pruned = perplexity(pruned_model, tokenizer, held_out, **window_args)
    after = perplexity(repaired, tokenizer, held_out, **window_args)
    return LinearRepair(repaired, maps, pruned, after, perplexity_difference(pruned, after), seconds)
