"""Static block criteria: choose blocks by their position in the stack, or score them by the size of their weights.

Neither looks at any data, which is their appeal (free, instant) and their weakness (a block's weights say nothing
about what it does to the text the pruned model will serve). Every criterion in this package returns a
``pandas.Series`` indexed by block (0..L-1, index name "block") where HIGHER = MORE IMPORTANT;
``helpers.selection.select_blocks`` turns any such Series into the blocks to remove.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import pandas as pd
import torch
from torch.ao.nn.quantized.modules.linear import LinearPackedParams
from transformers import PreTrainedModel

from .blocks import check_decoder, get_blocks
from .checks import check_choice, check_int
from .selection import removable_blocks, resolve_k

PositionStrategy = Literal["first", "last", "middle", "keep_edges"]
WeightSet = Literal["all", "matrices"]
MagnitudeNorm = Literal["l1", "l2"]
POSITION_STRATEGIES: tuple[PositionStrategy, ...] = get_args(PositionStrategy)
WEIGHT_SETS: tuple[WeightSet, ...] = get_args(WeightSet)
"""Which parameters of a block count: "all" (matrices, norm scales, biases) or "matrices" (2-D weights only)."""
MAGNITUDE_NORMS: tuple[MagnitudeNorm, ...] = get_args(MagnitudeNorm)


def block_scores(values: Sequence[float], name: str, blocks: Sequence[int] | None = None) -> pd.Series:
    """The criterion Series: ``values[j]`` for block ``blocks[j]`` (default 0..L-1), refusing non-finite values.

    A NaN or infinite score is an error, never a 0: read as "unimportant", it would get a broken block removed first.

    Args:
        values: one score per block.
        name: the criterion's name, used as the Series name.
        blocks: the block index of each value; None for 0..len(values)-1.

    Returns:
        A float Series named ``name``, indexed by ``block``.

    Raises:
        ValueError: if a value is NaN or infinite (the message names the blocks), or ``blocks`` and ``values`` differ
            in length.
    """
    index = pd.RangeIndex(len(values), name="block") if blocks is None else pd.Index(blocks, name="block")
    scores = pd.Series([float(v) for v in values], index=index, name=name)
    bad = [int(i) for i in scores.index[~scores.map(math.isfinite)]]
    if bad:
        raise ValueError(
            f"criterion {name!r} is not finite for block(s) {bad} (values {scores[bad].tolist()}); "
            "check those blocks' weights and the calibration data for NaN/inf"
        )
    return scores


def block_weights(block: torch.nn.Module, weights: WeightSet = "all") -> list[torch.nn.Parameter]:
    """The parameters of one block that a weight-based criterion sums over (see ``WEIGHT_SETS``).

    Args:
        block: one transformer block.
        weights: "all" (matrices, norm scales, biases) or "matrices" (parameters with 2 or more dimensions).

    Returns:
        The selected parameters, in ``block.parameters()`` order.

    Raises:
        TypeError: if ``weights`` is not a string.
        ValueError: if ``weights`` is not "all" or "matrices", or the block holds dynamically quantized layers (their
            weights are packed outside ``parameters()``, so a criterion would see only norms and biases).
    """
    check_choice("weights", weights, WEIGHT_SETS)
    packed = [name for name, module in block.named_modules() if isinstance(module, LinearPackedParams)]
    if packed:
        raise ValueError(
            f"this block holds dynamically quantized layers (e.g. {packed[0]}), whose weights are packed outside "
            "parameters(): a weight criterion would see only the norms and biases. Score the float model before "
            "quantizing"
        )
    return [p for p in block.parameters() if weights == "all" or p.ndim >= 2]


def position_blocks(
    n_blocks: int, k: int | float, strategy: PositionStrategy, *, protect_first: int = 1, protect_last: int = 1
) -> list[int]:
    """The ``k`` blocks (or fraction ``k`` of ``n_blocks``) a position strategy removes, sorted.

    "keep_edges" removes the deepest blocks that are not protected. That is where ShortGPT, Gromov et al. and
    Shortened LLaMA's Taylor+ find the most removable blocks, and with ``protect_last=2`` it is Taylor+'s choice on
    LLaMA-1-7B (blocks 24-29 of 32).

    Args:
        n_blocks: how many blocks the model has (at least 2: one must stay).
        k: a block count (int) or a fraction of ``n_blocks`` (float in (0, 1), see ``resolve_k``).
        strategy: "first" (blocks 0..k-1), "last" (the final k blocks), "middle" (the k blocks centred in the stack;
            when the margins cannot be equal, the extra block is left at the end: start = (n_blocks - k) // 2) or
            "keep_edges" (keep the first ``protect_first`` and the last ``protect_last`` blocks and remove the k blocks
            just before the last ones).
        protect_first: blocks kept at the start; only "keep_edges" reads it.
        protect_last: blocks kept at the end; only "keep_edges" reads it.

    Returns:
        The k block indices, ascending and consecutive.

    Raises:
        TypeError: if ``strategy`` is not a string, ``n_blocks`` not an integer or ``k`` not a number
            (``resolve_k``); for "keep_edges", if a ``protect_*`` is not an integer.
        ValueError: if ``strategy`` is unknown, ``n_blocks`` is below 2, or ``k`` is invalid (``resolve_k``); for
            "keep_edges", if a ``protect_*`` is negative or the protected blocks leave fewer than k to remove.
    """
    check_choice("strategy", strategy, POSITION_STRATEGIES)
    check_int("n_blocks", n_blocks, minimum=2)  # one block must stay
    k = resolve_k(k, n_blocks)
    if strategy == "first":
        start = 0
    elif strategy == "last":
        start = n_blocks - k
    elif strategy == "middle":
        start = (n_blocks - k) // 2
    else:
        allowed = removable_blocks(n_blocks, k, protect_first=protect_first, protect_last=protect_last)
        start = allowed[-1] - k + 1
    return list(range(start, start + k))


def magnitude_scores(
    model: PreTrainedModel, *, norm: MagnitudeNorm = "l1", weights: WeightSet = "all", per_parameter: bool = False
) -> pd.Series:
    """Weight magnitude of every block: the higher, the more important (Shortened LLaMA's "Magnitude" criterion).

    Args:
        model: the model whose blocks are scored; its weights are only read.
        norm: "l1" = sum of |w| (the paper's criterion), "l2" = sqrt(sum of w²).
        weights: "all" (every parameter of the block, as the paper sums all of a block's weights; the official code
            has no biases to skip on LLaMA) or "matrices" (only the 2-D projection weights; norm scales are ~1 each and
            can dominate in tiny blocks).
        per_parameter: divide by the number of parameters counted (mean |w|, or the RMS for "l2"), so blocks of
            different sizes compare fairly.

    Returns:
        A Series named "magnitude_l1" or "magnitude_l2", indexed by ``block``.

    Raises:
        TypeError: if ``norm`` or ``weights`` is not a string.
        ValueError: if ``norm`` or ``weights`` is not a valid choice, a score is not finite (NaN/inf weights), the
            weights are on the meta device (``check_decoder``) or dynamically quantized (``block_weights``), or the
            model's block list cannot be found (``block_path``).
    """
    check_choice("norm", norm, MAGNITUDE_NORMS)
    check_decoder(model, "weights")
    values = []
    with torch.no_grad():
        for block in get_blocks(model):
            params = block_weights(block, weights)
            count = sum(p.numel() for p in params)
            if norm == "l1":
                total = sum(p.detach().double().abs().sum().item() for p in params)
                values.append(total / count if per_parameter else total)
            else:
                total = sum(p.detach().double().square().sum().item() for p in params)
                values.append(math.sqrt(total / count if per_parameter else total))
    return block_scores(values, f"magnitude_{norm}")
