"""Tiny randomly initialised causal LMs, one per supported family, built from config classes (no download)."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    FalconConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTBigCodeConfig,
    GPTJConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Olmo2Config,
    OPTConfig,
    Phi3Config,
    PhiConfig,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
    SmolLM3Config,
    Starcoder2Config,
)

VOCAB = 96
N_LAYERS = 6
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=4,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
)

# Sliding-window families get a window shorter than the test inputs so both attention kinds really differ.
TINY_CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON, num_key_value_heads=2),
    "mistral": lambda: MistralConfig(**_COMMON, num_key_value_heads=2, sliding_window=5),
    "qwen2": lambda: Qwen2Config(
        **_COMMON, num_key_value_heads=2, use_sliding_window=True, sliding_window=5, max_window_layers=2
    ),
    "qwen3": lambda: Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=8),
    "gemma": lambda: GemmaConfig(**_COMMON, num_key_value_heads=2, head_dim=8),
    "gemma2": lambda: Gemma2Config(**_COMMON, num_key_value_heads=2, head_dim=8, sliding_window=5),
    "gemma3_text": lambda: Gemma3TextConfig(**_COMMON, num_key_value_heads=2, head_dim=8, sliding_window=5),
    "phi3": lambda: Phi3Config(**_COMMON, num_key_value_heads=2, pad_token_id=0),
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=N_LAYERS, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2
    ),
    "gpt_neox": lambda: GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "opt": lambda: OPTConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=1,
        eos_token_id=2,
    ),
    # Families that helpers.blocks has no entry for: their block lists are found from the model's structure.
    # SmolLM3 leaves RoPE out of every 4th layer (no_rope_layers, a per-layer list); Mixtral and Qwen3-MoE route
    # tokens to experts; Falcon, Bloom, GPT-BigCode and GPT-J keep their blocks at transformer.h. Bloom's default
    # initialisation leaves its logits nearly uniform, so that removing a block hardly shows: it gets a wider one.
    "smollm3": lambda: SmolLM3Config(**_COMMON, num_key_value_heads=2, pad_token_id=0),
    "olmo2": lambda: Olmo2Config(**_COMMON, num_key_value_heads=2),
    "phi": lambda: PhiConfig(**_COMMON),
    "starcoder2": lambda: Starcoder2Config(**_COMMON, num_key_value_heads=2, sliding_window=5),
    "mixtral": lambda: MixtralConfig(**_COMMON, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": lambda: Qwen3MoeConfig(
        **_COMMON, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16
    ),
    "falcon": lambda: FalconConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "bloom": lambda: BloomConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        n_layer=N_LAYERS,
        n_head=4,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "gpt_bigcode": lambda: GPTBigCodeConfig(
        vocab_size=VOCAB, n_embd=32, n_layer=N_LAYERS, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2
    ),
    "gptj": lambda: GPTJConfig(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=N_LAYERS,
        n_head=4,
        rotary_dim=4,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
    ),
}

BLOCK_PATH = {
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
    "falcon": "transformer.h",
    "bloom": "transformer.h",
    "gpt_bigcode": "transformer.h",
    "gptj": "transformer.h",
}
"""Where each family keeps its blocks, read off the transformers source by hand; every other family: model.layers.
Written out here so that tests check helpers.blocks' discovery instead of reusing it."""


def block_path(family: str) -> str:
    """The hand-written block path of ``family`` (see ``BLOCK_PATH``)."""
    return BLOCK_PATH.get(family, "model.layers")


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of ``family`` in eval mode, deterministic for a given seed."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[family]())
    # Random init leaves some norms at exactly 1/0; perturb everything so every block really matters.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def tiny_inputs(seed: int = 0, batch: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    """Random token ids with a right-padded second row, so masks matter."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[1, length - 3 :] = 0
    return {"input_ids": ids, "attention_mask": mask}
