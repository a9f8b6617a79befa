"""Parameter and byte counts, ideal speedup and the timed decoding loop, against hand counts and uncached decoding."""

from __future__ import annotations

import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, VOCAB, tiny_model
from tiny_tokenizer import tiny_tokenizer
from transformers import AutoModelForCausalLM

from helpers.benefits import (
    greedy_decode,
    ideal_speedup,
    kv_cache_bytes,
    latency_prompt,
    measure_latency,
    model_bytes,
    parameter_count,
    size_summary,
)

# Tiny llama: hidden 32, MLP 64, 4 heads of 8, 2 key-value heads (16 wide), RMSNorm weights only, no biases.
D, MLP, HEADS, HEAD_DIM, KV = 32, 64, 4, 8, 16
LLAMA_BLOCK = D * D + 2 * D * KV + D * D + 3 * D * MLP + 2 * D  # q, k+v, o, gate+up+down, two norms
EMBEDDING = VOCAB * D


def llama(tied: bool) -> torch.nn.Module:
    config = TINY_CONFIGS["llama"]()
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_count_counts_tied_weights_once(tied):
    model = llama(tied)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    expected = EMBEDDING + N_LAYERS * LLAMA_BLOCK + D + (0 if tied else EMBEDDING)
    assert parameter_count(model) == expected
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    assert model_bytes(model) == 4 * expected + buffer_bytes
    # transformers' own counts agree on a model whose tied weight is one Parameter object; the package keeps its
    # own because it also counts a ModuleList of blocks and two views of one storage once.
    assert parameter_count(model) == model.num_parameters()
    assert model_bytes(model) == model.get_memory_footprint()


def test_parameter_count_of_a_tied_gpt2_by_hand():
    model = tiny_model("gpt2")
    # wte + wpe; per block: 2 LayerNorms, qkv and output projections, MLP 4x wide, all with biases; final LayerNorm.
    block = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D)
    assert parameter_count(model) == EMBEDDING + 128 * D + N_LAYERS * block + 2 * D


def test_size_summary_splits_blocks_from_the_rest():
    summary = size_summary(llama(tied=True))
    assert summary["blocks"] == N_LAYERS
    assert summary["block_parameters"] == N_LAYERS * LLAMA_BLOCK
    assert summary["other_parameters"] == EMBEDDING + D
    assert summary["MiB"] == pytest.approx(summary["bytes"] / 2**20)


@pytest.mark.parametrize("tied", [False, True])
def test_ideal_speedup_by_hand(tied):
    model = llama(tied)
    # Per token: every block, the final norm and the LM head matmul (tied or not); the embedding lookup is free.
    total = N_LAYERS * LLAMA_BLOCK + D + EMBEDDING
    assert ideal_speedup(model, [1, 4]) == pytest.approx(1 / (1 - 2 * LLAMA_BLOCK / total))
    assert ideal_speedup(model, []) == 1.0
    attention = 2 * 10 * HEADS * HEAD_DIM  # q·K and softmax·V over 10 keys
    with_attention = N_LAYERS * (LLAMA_BLOCK + attention) + D + EMBEDDING
    expected = 1 / (1 - 2 * (LLAMA_BLOCK + attention) / with_attention)
    assert ideal_speedup(model, [1, 4], seq_len=10) == pytest.approx(expected)


def test_ideal_speedup_rejects_bad_blocks_and_seq_len():
    model = llama(tied=True)
    with pytest.raises(ValueError, match="out of range"):
        ideal_speedup(model, [N_LAYERS])
    with pytest.raises(ValueError, match="seq_len"):
        ideal_speedup(model, [1], seq_len=0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cached_greedy_decoding_matches_uncached_argmax_and_ignores_eos(family):
    model = tiny_model(family)
    prompt = latency_prompt(tiny_tokenizer(), prompt_tokens=7, batch_size=2)
    assert prompt.shape == (2, 7)
    generated, prefill_s, decode_s = greedy_decode(model, prompt, new_tokens=6)

    ids = prompt.clone()
    with torch.no_grad():
        for _ in range(6):  # recompute the whole sequence every step: no cache involved
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, ids[:, 7:])
    assert prefill_s > 0 and decode_s > 0


def test_measure_latency_reports_medians_and_rejects_bad_arguments():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    latency = measure_latency(model, tok, prompt_tokens=8, new_tokens=5, repetitions=2)
    assert list(latency.index) == ["prefill_ms", "decode_ms_per_token", "decode_tokens_per_s"]
    assert latency["decode_tokens_per_s"] == pytest.approx(1000 / latency["decode_ms_per_token"])
    with pytest.raises(ValueError, match="new_tokens must be at least 2"):
        measure_latency(model, tok, new_tokens=1)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma2", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("length", [3, 5, 12])  # shorter than, equal to and longer than the sliding window (5)
def test_kv_cache_bytes_match_the_cache_a_forward_pass_fills(family, length):
    model = tiny_model(family)
    with torch.no_grad():
        cache = model(input_ids=torch.arange(3, 3 + length)[None], use_cache=True).past_key_values
    filled = [
        layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
        for layer in cache.layers
    ]
    assert kv_cache_bytes(model, length).tolist() == filled


def test_kv_cache_bytes_of_sliding_layers_stop_growing_at_the_window():
    model = tiny_model("gemma3_text")  # sliding window 5; layer 5 of 6 is global
    short, long = kv_cache_bytes(model, 4), kv_cache_bytes(model, 100)
    assert (long[:5] == short[:5]).all() and long[5] == 25 * short[5]
    with pytest.raises(ValueError, match="context_tokens"):
        kv_cache_bytes(model, 0)
