"""Finding a model's transformer blocks, checking that it is a model depth pruning handles, and checking lists of
block indices.

Almost every decoder in transformers keeps its blocks in one ``nn.ModuleList`` whose length is the (text) config's
layer count, because its forward pass loops over ``layers[: config.num_hidden_layers]``. ``block_path`` finds that
list from the model's structure, so a family needs no entry anywhere to be pruned. ``BLOCK_PATHS`` is only for
overrides: a family whose structure is ambiguous (several such lists, none on the decoder path) gets its path there.
``check_decoder`` refuses models whose blocks are no decoder's (T5, BERT) or that cannot run as asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral
from typing import Literal

import torch
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

BLOCK_PATHS: dict[str, str] = {}
"""Overrides: model_type -> attribute path of the block list in the ``...ForCausalLM`` class. Discovery
(``block_path``) finds every family tested here by itself; add an entry only for a family it cannot resolve."""

LAYER_COUNT_NAMES = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
"""Config attributes that hold the layer count, in the order they are tried (most configs map all to the first)."""

DECODER_SEGMENTS = {"decoder", "language_model", "text_model"}
"""Path segments that mark the decoder in models with several stacks (encoder-decoder, vision-language)."""


DECODER_ONLY = (
    "depth pruning here handles decoder-only causal language models (a ...ForCausalLM such as LlamaForCausalLM, or "
    "its backbone for hooks and pruning)"
)
Need = Literal["blocks", "weights", "logits"]


def check_decoder(model: PreTrainedModel, needs: Need = "blocks") -> None:
    """Refuse a model that depth pruning here cannot handle, before anything runs or changes.

    Encoder-decoders (T5, BART) and bidirectional encoders (BERT: a model type with a masked-LM class whose config
    is not a decoder) have blocks too, but removing them or reading their logits as next-token predictions gives
    silently wrong answers. ``block_path`` calls this for every model; what runs or reads the model asks for more.

    Args:
        model: the model to check.
        needs: "blocks" (a decoder-only model, the causal LM or its backbone); "weights": also real weights, not an
            empty model on the meta device (a model split by ``device_map`` may keep offloaded weights there);
            "logits": also an LM head that predicts the next token.

    Raises:
        ValueError: for an encoder-decoder, a bidirectional encoder, weights on the meta device or a model without an
            LM head, as ``needs`` asks; the message names the model and what is valid.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    name = f"{type(model).__name__} (model_type {model_type!r})"
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{name} is an encoder-decoder model; {DECODER_ONLY}")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        raise ValueError(
            f"{name} is a bidirectional encoder (config.is_decoder is False: every token sees the whole text), not a "
            f"causal language model; {DECODER_ONLY}"
        )
    if needs == "blocks":
        return
    if getattr(model, "hf_device_map", None) is None and any(p.is_meta for p in model.parameters()):
        raise ValueError(
            f"the weights of {type(model).__name__} are on the meta device (a model built without weights, e.g. "
            "under torch.device('meta')), so there is nothing to run, read or save; load real weights first "
            "(load_model, or from_pretrained)"
        )
    if needs == "logits" and model.get_output_embeddings() is None:
        causal_lm = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, "its ...ForCausalLM class")
        raise ValueError(
            f"{type(model).__name__} has no LM head (get_output_embeddings() is None): it returns hidden states, not "
            f"next-token logits; pass the causal LM (e.g. {causal_lm}, as load_model returns it), not its backbone"
        )


def layer_count(model: PreTrainedModel) -> int:
    """The layer count of the model's (text) config: how many blocks the forward pass runs.

    Args:
        model: a transformers model (the causal-LM class or the bare backbone).

    Returns:
        The first int among the config's ``LAYER_COUNT_NAMES``.

    Raises:
        ValueError: if the model has no config, or its config states no layer count or one below 1.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config; depth pruning needs a transformers model")
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for name in LAYER_COUNT_NAMES:
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value < 1:
            raise ValueError(
                f"the config of {type(model).__name__} states {value} layers: depth pruning needs a model with at "
                "least one transformer block"
            )
        if isinstance(value, int):
            return value
    raise ValueError(
        f"the config of {type(model).__name__} states no layer count (none of {', '.join(LAYER_COUNT_NAMES)})"
    )


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths that lie inside another path of the list (a per-block list of experts is not a block list)."""
    return [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]


def _carries_layer_idx(blocks: torch.nn.ModuleList) -> bool:
    """True when every element holds a module with an int ``layer_idx`` (attention, for the KV cache)."""
    return len(blocks) > 0 and all(
        any(isinstance(getattr(m, "layer_idx", None), int) for m in block.modules()) for block in blocks
    )


def block_path(model: PreTrainedModel) -> str:
    """Dotted attribute path from ``model`` to its list of transformer blocks (``"model.layers"``, ``"transformer.h"``).

    Works on the causal-LM class and on the bare backbone. The candidates are the outermost ``nn.ModuleList``s whose
    length is the config's layer count; of several, those on the decoder path (``DECODER_SEGMENTS``). A list edited by
    hand (a block deleted without updating the config) no longer has that length; it is still found when it is the
    only list whose blocks carry a ``layer_idx``. ``BLOCK_PATHS`` overrides all of this for its families.

    Args:
        model: a transformers model.

    Returns:
        The path, for ``model.get_submodule``.

    Raises:
        ValueError: for a model that is not decoder-only (``check_decoder``), if no single block list can be told apart
            (the message names the candidates), if the ``BLOCK_PATHS`` override names no ``nn.ModuleList``, or as
            ``layer_count``.
    """
    check_decoder(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    override = BLOCK_PATHS.get(model_type)
    if override is not None:
        # The backbone alone has the same path minus its first attribute (model.layers -> layers).
        for candidate in (override, override.split(".", 1)[-1]):
            try:
                if isinstance(model.get_submodule(candidate), torch.nn.ModuleList):
                    return candidate
            except AttributeError:
                continue
        raise ValueError(
            f"{type(model).__name__} has no block list at {override!r}, the path helpers.blocks.BLOCK_PATHS gives "
            f"for model_type {model_type!r}"
        )

    n_layers = layer_count(model)
    lists = {path: m for path, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)}
    candidates = _outermost([path for path, m in lists.items() if len(m) == n_layers])
    if len(candidates) > 1:
        candidates = [p for p in candidates if DECODER_SEGMENTS & set(p.split("."))] or candidates
    elif not candidates:
        hand_edited = _outermost([path for path, m in lists.items() if _carries_layer_idx(m)])
        candidates = hand_edited if len(hand_edited) == 1 else []
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        problem = "several nn.ModuleLists have that length: " + ", ".join(f"{p} ({len(lists[p])})" for p in candidates)
    else:
        found = ", ".join(f"{p} ({len(m)})" for p, m in lists.items()) or "none"
        problem = f"no nn.ModuleList has that length; found (path and length): {found}"
    raise ValueError(
        f"cannot tell which nn.ModuleList of {type(model).__name__} (model_type={model_type!r}) holds its transformer "
        f"blocks: the config states {n_layers} layers, but {problem}. "
        f"Add the right path to helpers.blocks.BLOCK_PATHS[{model_type!r}]."
    )


def get_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """Return the model's list of transformer blocks (the modules depth pruning removes); see ``block_path``.

    Args:
        model: a transformers model.

    Returns:
        The ``nn.ModuleList`` itself (not a copy): changing it changes the model.

    Raises:
        ValueError: as ``block_path``.
    """
    return model.get_submodule(block_path(model))


def num_blocks(model: PreTrainedModel) -> int:
    """How many transformer blocks the model has now.

    Args:
        model: a transformers model.

    Returns:
        The length of its block list (which can differ from the config's layer count after a deletion by hand).

    Raises:
        ValueError: as ``block_path``.
    """
    return len(get_blocks(model))


def check_block_indices(
    blocks: Iterable[int], n_blocks: int | None, *, allow_empty: bool = False, allow_all: bool = False
) -> list[int]:
    """Validate 0-based block indices against a model of ``n_blocks`` blocks and return them sorted.

    Negative indices are rejected rather than counted from the end: after a first pruning step "-1" would name a
    different block than before, and an index list that silently means two things is a bug waiting to happen.

    Args:
        blocks: the block indices.
        n_blocks: how many blocks the model has; None when no model is at hand (indices have no upper bound).
        allow_empty: accept an empty list.
        allow_all: accept every block at once (fine for watching blocks, not for removing them).

    Returns:
        The indices as sorted Python ints.

    Raises:
        TypeError: if ``blocks`` is a string or not iterable, or holds something other than an integer (a bool
            included).
        ValueError: if ``blocks`` holds an index outside 0..n_blocks-1 (below 0 without ``n_blocks``) or an index
            twice; if it is empty without ``allow_empty``, or names every block without ``allow_all``.
    """
    indices = "integers from 0" if n_blocks is None else f"0..{n_blocks - 1}"
    valid = f"valid indices are {indices} (0-based; negative indices are not accepted)"
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Iterable):
        raise TypeError(f"blocks must be a list of block indices, got {blocks!r} ({type(blocks).__name__}); {valid}")
    blocks = list(blocks)
    for b in blocks:
        if isinstance(b, bool) or not isinstance(b, Integral):
            raise TypeError(f"block index {b!r} is not an integer ({type(b).__name__}); {valid}")
    out_of_range = [int(b) for b in blocks if b < 0 or (n_blocks is not None and b >= n_blocks)]
    if out_of_range:
        model = "" if n_blocks is None else f" for a model with {n_blocks} blocks"
        raise ValueError(f"block indices {out_of_range} are out of range{model}; {valid}")
    if len(set(blocks)) != len(blocks):
        dupes = sorted({int(b) for b in blocks if blocks.count(b) > 1})
        raise ValueError(f"block indices {dupes} are given more than once; list each block once ({valid})")
    if not blocks and not allow_empty:
        raise ValueError(f"no blocks given; name at least one block to remove ({valid})")
    if n_blocks is not None and len(blocks) >= n_blocks and not allow_all:
        raise ValueError(f"cannot remove all {n_blocks} blocks; keep at least one")
    return sorted(int(b) for b in blocks)
