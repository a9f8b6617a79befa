"""Packed rows: several sequences in one row, each with its own position ids and a 4D attention mask that lets a
token see only the shared start of the row and its own sequence, so each gets the logits it gets alone.

Padding short sequences to the longest one wastes most of a batch when lengths differ much (SMS messages beside
long ones; a question's four answers that share one context). Packing computes the shared part once and no padding
in between. Only models whose positions and attention such a mask can express are packed (``packs``); the
zero-shot scorer and the PPL criterion run every other model the plain way.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from ..pruning import decoder_config

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


def has_sliding_window(model: PreTrainedModel) -> bool:
    """True when the model's KV cache keeps a sliding window in some layer (then padding must not enter the cache)."""
    return any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=decoder_config(model)).layers)


def packs(model: PreTrainedModel) -> bool:
    """True when ``model`` can run packed rows: a family of ``PACKED_FAMILIES``, no sliding-window layer (whose
    window the mask would have to hold) and an attention implementation that takes a dense 4D mask."""
    return (
        decoder_config(model).model_type in PACKED_FAMILIES
        and model.config._attn_implementation in MASK_CONVENTIONS
        and not has_sliding_window(model)
    )


def packed_mask(segments: torch.Tensor, convention: str, dtype: torch.dtype) -> torch.Tensor:
    """The (batch, 1, T, T) mask of packed rows: a query sees earlier keys of the context and of its own segment.

    ``segments`` is (batch, T): 0 for the shared start (a context), i for the i-th sequence, -1 for padding. A padding
    query sees itself (and other padding), so no query row is fully masked (that would give NaN, spreading through V).
    ``convention`` is a value of ``MASK_CONVENTIONS``; ``dtype`` the model's, for an additive mask.
    """
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = (causal & ((key == 0) | (key == query)))[:, None]
    if convention == "bool":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
