"""Where each decoder family keeps its transformer blocks, and checking lists of block indices.

Supporting a new family is one entry in ``BLOCK_PATHS``: the attribute path from the causal-LM model to its
``nn.ModuleList`` of blocks. Everything else (renumbering ``layer_idx``, per-layer config lists) is found generically.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral

import torch
from transformers import PreTrainedModel

BLOCK_PATHS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
}
"""model_type -> attribute path of the block list in the ``...ForCausalLM`` class."""


def _resolve(obj: object, path: str) -> object | None:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def get_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """Return the model's list of transformer blocks (the modules depth pruning removes).

    Works on the causal-LM class and on the bare backbone (``model.model``) of every family in ``BLOCK_PATHS``.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    path = BLOCK_PATHS.get(model_type)
    if path is None:
        raise ValueError(
            f"{type(model).__name__} (model_type={model_type!r}) is not supported; "
            f"supported families: {', '.join(sorted(BLOCK_PATHS))}. Add its block path to helpers.blocks.BLOCK_PATHS."
        )
    # The backbone alone has the same path minus its first attribute (model.layers -> layers).
    for candidate in (path, path.split(".", 1)[-1]):
        blocks = _resolve(model, candidate)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise ValueError(f"{type(model).__name__} has no block list at {path!r}, although its model_type is {model_type!r}")


def num_blocks(model: PreTrainedModel) -> int:
    """How many transformer blocks the model has now."""
    return len(get_blocks(model))


def check_block_indices(
    blocks: Iterable[int], n_blocks: int, *, allow_empty: bool = False, allow_all: bool = False
) -> list[int]:
    """Validate 0-based block indices against a model of ``n_blocks`` blocks and return them sorted.

    ``allow_all`` accepts every block at once (fine for watching blocks, not for removing them).

    Negative indices are rejected rather than counted from the end: after a first pruning step "-1" would name a
    different block than before, and an index list that silently means two things is a bug waiting to happen.
    """
    valid = f"valid indices are 0..{n_blocks - 1} (0-based; negative indices are not accepted)"
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Iterable):
        raise ValueError(f"blocks must be a list of block indices, got {blocks!r}; {valid}")
    blocks = list(blocks)
    for b in blocks:
        if isinstance(b, bool) or not isinstance(b, Integral):
            raise ValueError(f"block index {b!r} is not an integer; {valid}")
    out_of_range = [int(b) for b in blocks if not 0 <= b < n_blocks]
    if out_of_range:
        raise ValueError(f"block indices {out_of_range} are out of range for a model with {n_blocks} blocks; {valid}")
    if len(set(blocks)) != len(blocks):
        dupes = sorted({int(b) for b in blocks if blocks.count(b) > 1})
        raise ValueError(f"block indices {dupes} are given more than once; list each block once ({valid})")
    if not blocks and not allow_empty:
        raise ValueError(f"no blocks given; name at least one block to remove ({valid})")
    if len(blocks) >= n_blocks and not allow_all:
        raise ValueError(f"cannot remove all {n_blocks} blocks; keep at least one")
    return sorted(int(b) for b in blocks)
