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
from transformers import PreTrainedModel

from .blocks import get_blocks
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
    """The parameters of one block that a weight-based criterion sums over (see ``WEIGHT_SETS``)."""
    check_choice("weights", weights, WEIGHT_SETS)
    return [p for p in block.parameters() if weights == "all" or p.ndim >= 2]


def position_blocks(
    n_blocks: int, k: int | float, strategy: PositionStrategy, *, protect_first: int = 1, protect_last: int = 1
) -> list[int]:
    """The ``k`` blocks (or fraction ``k`` of ``n_blocks``) a position strategy removes, sorted.

    "first": blocks 0..k-1. "last": the final k blocks. "middle": the k blocks centred in the stack (when the
    margins cannot be equal, the extra block is left at the end: start = (n_blocks - k) // 2).
    "keep_edges": keep the first ``protect_first`` and the last ``protect_last`` blocks (only this strategy reads
    them) and remove the k blocks just before the last ones, i.e. the deepest blocks that are not protected. That is
    where ShortGPT, Gromov et al. and Shortened LLaMA's Taylor+ find the most removable blocks, and with
    ``protect_last=2`` it is Taylor+'s choice on LLaMA-1-7B (blocks 24-29 of 32).
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

    ``norm``: "l1" = sum of |w| (the paper's criterion), "l2" = sqrt(sum of w²). ``weights``: "all" (every
    parameter of the block, as the paper sums all of a block's weights; the official code has no biases to skip on
    LLaMA) or "matrices" (only the 2-D projection weights; norm scales are ~1 each and can dominate in tiny
    blocks). ``per_parameter=True`` divides by the number of parameters counted (mean |w|, or the RMS for "l2"),
    so blocks of different sizes compare fairly. Named "magnitude_l1" or "magnitude_l2".
    """
    check_choice("norm", norm, MAGNITUDE_NORMS)
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
