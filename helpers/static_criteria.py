"""Static block criteria: choose blocks by their position in the stack, or score them by the size of their weights.

Neither looks at any data, which is their appeal (free, instant) and their weakness (a block's weights say nothing
about what it does to the text the pruned model will serve). Every criterion in this package returns a
``pandas.Series`` indexed by block (0..L-1, index name "block") where HIGHER = MORE IMPORTANT;
``helpers.selection.select_blocks`` turns any such Series into the blocks to remove.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import pandas as pd
import torch
from transformers import PreTrainedModel

from .blocks import get_blocks
from .selection import removable_blocks, resolve_k

POSITION_STRATEGIES = ("first", "last", "middle", "keep_edges")
WEIGHT_SETS = ("all", "matrices")
"""Which parameters of a block count: "all" (matrices, norm scales, biases) or "matrices" (2-D weights only)."""
MAGNITUDE_NORMS = ("l1", "l2")


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


def block_weights(block: torch.nn.Module, weights: str = "all") -> list[torch.nn.Parameter]:
    """The parameters of one block that a weight-based criterion sums over (see ``WEIGHT_SETS``)."""
    if weights not in WEIGHT_SETS:
        raise ValueError(f"weights must be one of {WEIGHT_SETS}; got {weights!r}")
    return [p for p in block.parameters() if weights == "all" or p.ndim >= 2]


def position_blocks(
    n_blocks: int, k: int | float, strategy: str, *, protect_first: int = 1, protect_last: int = 1
) -> list[int]:
    """The ``k`` blocks (or fraction ``k`` of ``n_blocks``) a position strategy removes, sorted.

    "first": blocks 0..k-1. "last": the final k blocks. "middle": the k blocks centred in the stack (when the
    margins cannot be equal, the extra block is left at the end: start = (n_blocks - k) // 2).
    "keep_edges": keep the first ``protect_first`` and the last ``protect_last`` blocks (only this strategy reads
    them) and remove the k blocks just before the last ones, i.e. the deepest blocks that are not protected. That is
    where ShortGPT, Gromov et al. and Shortened LLaMA's Taylor+ find the most removable blocks, and with
    ``protect_last=2`` it is Taylor+'s choice on LLaMA-1-7B (blocks 24-29 of 32).
    """
    if strategy not in POSITION_STRATEGIES:
        raise ValueError(f"strategy must be one of {POSITION_STRATEGIES}; got {strategy!r}")
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, Integral) or n_blocks < 2:
        raise ValueError(f"n_blocks must be an integer of at least 2 (one block must stay); got {n_blocks!r}")
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
    model: PreTrainedModel, *, norm: str = "l1", weights: str = "all", per_parameter: bool = False
) -> pd.Series:
    """Weight magnitude of every block: the higher, the more important (Shortened LLaMA's "Magnitude" criterion).

    ``norm``: "l1" = sum of |w| (the paper's criterion), "l2" = sqrt(sum of w²). ``weights``: "all" (every
    parameter of the block, as the paper sums all of a block's weights; the official code has no biases to skip on
    LLaMA) or "matrices" (only the 2-D projection weights; norm scales are ~1 each and can dominate in tiny
    blocks). ``per_parameter=True`` divides by the number of parameters counted (mean |w|, or the RMS for "l2"),
    so blocks of different sizes compare fairly. Named "magnitude_l1" or "magnitude_l2".
    """
    if norm not in MAGNITUDE_NORMS:
        raise ValueError(f"norm must be one of {MAGNITUDE_NORMS}; got {norm!r}")
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
