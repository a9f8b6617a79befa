"""Parameter and byte counts, ideal speedup and the timed decoding loop, against hand counts and uncached decoding."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, VOCAB, tiny_model
from tiny_tokenizer import tiny_tokenizer
from transformers import AutoModelForCausalLM

from helpers import benefits
from helpers.benefits import (
    describe_decode_cost,
    greedy_decode,
    ideal_speedup,
    kv_cache_bytes,
    latency_prompt,
    measure_latency,
    model_bytes,
    parameter_count,
    size_summary,
    speedup_spread,
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
    assert list(latency.index) == [
        "prefill_ms",
        "prefill_ms_q25",
        "prefill_ms_q75",
        "decode_ms_per_token",
        "decode_ms_per_token_q25",
        "decode_ms_per_token_q75",
        "decode_tokens_per_s",
    ]
    assert latency["decode_tokens_per_s"] == pytest.approx(1000 / latency["decode_ms_per_token"])
    assert latency["decode_ms_per_token_q25"] <= latency["decode_ms_per_token"] <= latency["decode_ms_per_token_q75"]
    with pytest.raises(ValueError, match="new_tokens must be at least 2"):
        measure_latency(model, tok, new_tokens=1)


def test_measure_latency_spread_by_hand(monkeypatch):
    # Fixed timings (prefill s, decode s) per run; the first is the warm-up and must not count.
    runs = iter([(9.0, 9.0), (0.4, 1.0), (0.1, 3.0), (0.3, 2.0), (0.2, 5.0), (0.5, 4.0)])
    monkeypatch.setattr(benefits, "greedy_decode", lambda model, prompt, new_tokens: (None, *next(runs)))
    latency = measure_latency(None, tiny_tokenizer(), new_tokens=11, repetitions=5, warmup=1, batch_size=2)
    # Timed prefills 0.1..0.5 s sorted: median 0.3; linear quartiles at positions 1 and 3 -> 0.2 and 0.4.
    assert latency["prefill_ms"] == pytest.approx(300)
    assert (latency["prefill_ms_q25"], latency["prefill_ms_q75"]) == (pytest.approx(200), pytest.approx(400))
    # Decode 1..5 s over 10 steps: 100..500 ms per step; median 300, quartiles 200 and 400.
    assert latency["decode_ms_per_token"] == pytest.approx(300)
    assert latency["decode_ms_per_token_q25"] == pytest.approx(200)
    assert latency["decode_ms_per_token_q75"] == pytest.approx(400)
    assert latency["decode_tokens_per_s"] == pytest.approx(2 * 10 / 3.0)  # two sequences, 10 steps in 3 s
    # Four runs: quartile positions 0.75 and 2.25 fall between runs and are interpolated.
    runs = iter([(0.1, 1.0), (0.1, 2.0), (0.1, 4.0), (0.1, 8.0)])
    latency = measure_latency(None, tiny_tokenizer(), new_tokens=2, repetitions=4, warmup=0)
    assert latency["decode_ms_per_token"] == pytest.approx(3000)
    assert latency["decode_ms_per_token_q25"] == pytest.approx(1000 + 0.75 * 1000)
    assert latency["decode_ms_per_token_q75"] == pytest.approx(4000 + 0.25 * 4000)


def latency_table(rows):
    """A benefits_table-like frame from (name, blocks left, median, q25, q75, ideal speedup) rows."""
    columns = ["blocks_left", "decode_ms_per_token", "decode_ms_per_token_q25", "decode_ms_per_token_q75"]
    return pd.DataFrame([row[1:] for row in rows], index=[row[0] for row in rows], columns=[*columns, "ideal_speedup"])


def test_speedup_spread_by_hand():
    table = latency_table(
        [
            ("full", 10, 100.0, 90.0, 110.0, 1.0),
            ("overlap", 8, 95.0, 85.0, 100.0, 1.2),  # 85..100 overlaps 90..110
            ("touching", 8, 85.0, 80.0, 90.0, 1.2),  # ends exactly at the full model's q25: still overlapping
            ("faster", 6, 50.0, 45.0, 60.0, 1.5),
            ("slower", 9, 150.0, 120.0, 160.0, 1.1),
        ]
    )
    spread = speedup_spread(table)
    assert list(spread.index) == ["overlap", "touching", "faster", "slower"]
    assert spread.loc["faster", "speedup"] == pytest.approx(100 / 50)
    assert spread.loc["faster", "speedup_low"] == pytest.approx(90 / 60)
    assert spread.loc["faster", "speedup_high"] == pytest.approx(110 / 45)
    assert spread["vs_baseline"].tolist() == ["within the spread", "within the spread", "faster", "slower"]
    # Against the ideal: overlap 0.9..1.29 holds 1.2; faster 1.5..2.44 sits above 1.5 only at its end (holds it);
    # slower 0.56..0.92 is below 1.1.
    assert spread["vs_ideal"].tolist() == [
        "ideal within the spread",
        "ideal within the spread",
        "ideal within the spread",
        "below the ideal",
    ]
    table.loc["faster", "ideal_speedup"] = 1.4
    assert speedup_spread(table).loc["faster", "vs_ideal"] == "above the ideal"
    assert "vs_ideal" not in speedup_spread(table, ideal=None).columns
    with pytest.raises(ValueError, match="positive"):
        speedup_spread(table.assign(decode_ms_per_token_q25=0.0))


def test_describe_decode_cost_reads_the_fit_against_the_head_share():
    # Exactly linear: 2 ms per block + 20 ms fixed; full model (30 blocks) 80 ms, so the fixed part is 25%.
    rows = [(name, blocks, 20 + 2.0 * blocks, 0, 0, 1.0) for name, blocks in [("full", 30), ("a", 24), ("b", 18)]]
    table = latency_table(rows)
    text = describe_decode_cost(table, head_share=0.1)
    assert "2.00 ms per block + 20.0 ms per token" in text and "25% of the full model's 80.0 ms step" in text
    assert "the larger share" in text and "below the ideal" in text
    text = describe_decode_cost(table, head_share=0.4)
    assert "no larger than the head's share" in text and "at or above the ideal" in text
    noisy = table.assign(decode_ms_per_token=[80.0, 90.0, 100.0])  # fewer blocks, slower: negative slope
    assert "too noisy" in describe_decode_cost(noisy, head_share=0.2)
    assert "one depth" in describe_decode_cost(table.assign(blocks_left=30), head_share=0.2)
    with pytest.raises(ValueError, match="head_share"):
        describe_decode_cost(table, head_share=1.0)


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
