"""Depth pruning: remove whole transformer blocks for real (``prune_blocks``) or for a while (``skip_blocks``).

Slicing the block list is not enough. Each attention module carries a ``layer_idx`` that addresses the KV cache,
and the config carries the layer count and per-layer lists (``layer_types``...) that the cache, the attention masks
and ``from_pretrained`` read. Both must describe the blocks that are left, or generation and reloading break.
Both functions share one mechanism, ``_keep_only``, so a skipped model computes exactly what a pruned one does.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from transformers import PretrainedConfig, PreTrainedModel

from .blocks import block_path, check_block_indices, get_blocks

PROVENANCE_KEY = "depth_pruning"
"""Config attribute recording what a pruned model was cut from: ``{"original_num_hidden_layers", "kept_layers"}``."""

# List-valued config attributes whose length can equal the layer count by coincidence.
_NOT_PER_LAYER = {"architectures", "eos_token_id", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens"}


def decoder_config(model: PreTrainedModel) -> PretrainedConfig:
    """The config that owns the layer count (the text config of a multimodal model, else the model's config).

    Args:
        model: a transformers model.

    Returns:
        That config object itself (not a copy).
    """
    return model.config.get_text_config(decoder=True)


def _per_layer_attributes(config: PretrainedConfig, n_layers: int) -> list[str]:
    """Names of config attributes that hold one entry per layer (``layer_types``, ``mlp_layer_types``, ...)."""
    return [
        name
        for name, value in vars(config).items()
        if isinstance(value, (list, tuple)) and len(value) == n_layers and name not in _NOT_PER_LAYER
    ]


def _set_layer_idx(block: torch.nn.Module, index: int) -> None:
    """Renumber every ``layer_idx`` inside a block (attention modules use it to address the KV cache)."""
    for module in block.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = index


def _set_block_list(block_list: torch.nn.ModuleList, modules: list[torch.nn.Module]) -> None:
    block_list._modules = OrderedDict((str(i), m) for i, m in enumerate(modules))


def _describe_depth(model: PreTrainedModel, block_list: torch.nn.ModuleList, kept: list[int]) -> None:
    """Make every ``layer_idx`` and the config agree with ``block_list``, which now holds the blocks at ``kept``.

    The list is passed in rather than looked up: until the config is updated here, its layer count and the list's
    length disagree, which is just what block discovery relies on."""
    for new_index, block in enumerate(block_list):
        _set_layer_idx(block, new_index)
    config = decoder_config(model)
    n_before = config.num_hidden_layers
    previous = getattr(config, PROVENANCE_KEY, None) or {
        "original_num_hidden_layers": n_before,
        "kept_layers": list(range(n_before)),
    }
    for name in _per_layer_attributes(config, n_before):
        values = getattr(config, name)
        setattr(config, name, type(values)(values[i] for i in kept))
    config.num_hidden_layers = len(kept)
    setattr(
        config,
        PROVENANCE_KEY,
        {
            "original_num_hidden_layers": previous["original_num_hidden_layers"],
            "kept_layers": [previous["kept_layers"][i] for i in kept],
        },
    )


def _keep_only(model: PreTrainedModel, kept: list[int]) -> None:
    """In place: keep the blocks at positions ``kept`` (sorted) and make layer indices and config agree."""
    block_list = get_blocks(model)
    _set_block_list(block_list, [block_list[i] for i in kept])
    _describe_depth(model, block_list, kept)


_BUILT_BY_INDEX = {
    "scale_attn_by_inverse_layer_idx": (
        lambda value: bool(value),
        "GPT-2 scales each block's attention by 1/(layer_idx+1)",
    ),
    "decoder_sparse_step": (
        lambda value: value not in (None, 1),
        "Qwen-MoE gives only every decoder_sparse_step-th block experts",
    ),
    "mlp_only_layers": (lambda value: bool(value), "Qwen-MoE gives the blocks listed in mlp_only_layers dense MLPs"),
}
"""Config settings that make a block's structure or output depend on its index, fixed when the block is built:
attribute -> (is it in effect for this value, why). A reloaded block at its new position would be built or compute
differently, so a pruned checkpoint could not reproduce the pruned model."""


def _check_reloadable(model: PreTrainedModel) -> None:
    config = decoder_config(model)
    for name, (in_effect, why) in _BUILT_BY_INDEX.items():
        value = getattr(config, name, None)
        if in_effect(value):
            raise ValueError(
                f"this config sets {name}={value!r} ({why}), so a block depends on its position and a pruned "
                "checkpoint would not reload to the same model; use skip_blocks for what-if evaluation"
            )


def prune_blocks(model: PreTrainedModel, blocks: Iterable[int], *, inplace: bool = False) -> PreTrainedModel:
    """Remove the transformer blocks at the given 0-based indices and return the pruned model.

    The result is an ordinary transformers model: its config states the new layer count, its per-layer lists and
    which original blocks it kept (``config.depth_pruning``), so ``save_pretrained`` -> ``from_pretrained`` gives the
    same model, and ``generate()`` with the KV cache works.

    Args:
        model: the model to prune.
        blocks: 0-based indices of the blocks to remove (negative indices are rejected).
        inplace: False (default) leaves ``model`` untouched and copies only the blocks that stay; True prunes
            ``model`` itself and copies nothing.

    Returns:
        The pruned model: a new one, or ``model`` itself when ``inplace``.

    Raises:
        ValueError: for invalid ``blocks`` (``check_block_indices``: none, all, duplicates, out of range...), a
            config whose blocks depend on their position (``_BUILT_BY_INDEX``; use ``skip_blocks`` there), or a model
            whose block list cannot be found (``block_path``).
        TypeError: if ``blocks`` is a string or not iterable, or holds something other than an integer
            (``check_block_indices``).
    """
    path = block_path(model)
    block_list = model.get_submodule(path)
    n_blocks = len(block_list)
    removed = check_block_indices(blocks, n_blocks)
    _check_reloadable(model)
    kept = [i for i in range(n_blocks) if i not in set(removed)]
    if inplace:
        _keep_only(model, kept)
        return model

    # Deep-copy the model while its block list holds only the kept blocks, so removed weights are never copied.
    all_modules = block_list._modules
    _set_block_list(block_list, [block_list[i] for i in kept])
    try:
        pruned = copy.deepcopy(model)
    finally:
        block_list._modules = all_modules
    _describe_depth(pruned, pruned.get_submodule(path), kept)
    return pruned


@contextmanager
def skip_blocks(model: PreTrainedModel, blocks: Iterable[int]) -> Iterator[PreTrainedModel]:
    """Run ``model`` as if the given blocks were removed, without copying any weight.

    Inside the ``with`` the model computes exactly what ``prune_blocks`` would return (same mechanism), and
    ``generate()`` works. On exit, also after an exception, the block list, every ``layer_idx`` and the config are
    restored exactly.

    Args:
        model: the model to run without the blocks.
        blocks: 0-based indices of the blocks to skip; an empty list is allowed and changes nothing (handy for "no
            block removed" baselines).

    Yields:
        ``model`` itself, without those blocks until the ``with`` ends.

    Raises:
        ValueError: for invalid ``blocks`` (``check_block_indices``; every block at once is refused) or a model whose
            block list cannot be found (``block_path``).
        TypeError: if ``blocks`` is a string or not iterable, or holds something other than an integer
            (``check_block_indices``).
    """
    block_list = get_blocks(model)
    skipped = check_block_indices(blocks, len(block_list), allow_empty=True)
    if not skipped:
        yield model
        return
    config = decoder_config(model)
    saved_modules = block_list._modules
    saved_config = copy.deepcopy(vars(config))
    saved_layer_idx = [
        (module, module.layer_idx)
        for module in block_list.modules()
        if isinstance(getattr(module, "layer_idx", None), int)
    ]
    try:
        _keep_only(model, [i for i in range(len(block_list)) if i not in set(skipped)])
        yield model
    finally:
        block_list._modules = saved_modules
        vars(config).clear()
        vars(config).update(saved_config)
        for module, index in saved_layer_idx:
            module.layer_idx = index
