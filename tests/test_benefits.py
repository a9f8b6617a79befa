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
    check_decode_physics,
    greedy_decode,
    ideal_speedup,
    kv_cache_bytes,
    latency_prompt,
    model_bytes,
    parameter_count,
    size_summary,
    speedup_spread,
    time_variants,
)
from helpers.blocks import num_blocks

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


LATENCY_COLUMNS = [
    "prefill_ms",
    "prefill_ms_q25",
    "prefill_ms_q75",
    "decode_ms_per_token",
    "decode_ms_per_token_q25",
    "decode_ms_per_token_q75",
    "decode_tokens_per_s",
]


def test_time_variants_reports_medians_and_rejects_bad_arguments():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    timed = time_variants(model, tok, {"full": [], "-2": [1, 4]}, prompt_tokens=8, new_tokens=5, repetitions=2)
    assert list(timed.index) == ["full", "-2"] and list(timed.columns) == LATENCY_COLUMNS
    assert num_blocks(model) == N_LAYERS  # restored after the runs
    assert (timed["decode_tokens_per_s"] == 1000 / timed["decode_ms_per_token"]).all()
    assert (timed["decode_ms_per_token_q25"] <= timed["decode_ms_per_token"]).all()
    assert (timed["decode_ms_per_token"] <= timed["decode_ms_per_token_q75"]).all()
    with pytest.raises(ValueError, match="new_tokens must be at least 2"):
        time_variants(model, tok, {"full": []}, new_tokens=1)
    with pytest.raises(ValueError, match="variants is empty"):
        time_variants(model, tok, {})
    with pytest.raises(TypeError, match="variants must be a mapping"):
        time_variants(model, tok, [[1]])
    with pytest.raises(ValueError, match="out of range"):
        time_variants(model, tok, {"bad": [N_LAYERS]})


def test_time_variants_runs_round_robin_in_a_rotating_order(monkeypatch):
    """Every variant is timed `repetitions` times after one warm-up pass, and each pass starts one variant later."""
    model, names = tiny_model("llama"), {N_LAYERS: "a", N_LAYERS - 1: "b", N_LAYERS - 3: "c"}  # named by depth
    order = []

    def fake_decode(variant, prompt, new_tokens):
        order.append(names[num_blocks(variant)])
        run = len(order)  # 1, 2, 3...: prefill `run` s, decode 10 x `run` s over the 10 steps
        return None, float(run), 10.0 * run

    monkeypatch.setattr(benefits, "greedy_decode", fake_decode)
    timed = time_variants(model, tiny_tokenizer(), {"a": [], "b": [2], "c": [0, 1, 5]}, new_tokens=11, repetitions=4)
    # Written out by hand: the warm-up pass, then passes starting at b, c, a, b.
    assert order == [*"abc", *"bca", *"cab", *"abc", *"bca"]
    # Timed runs (numbered from 1 in `order`): a at 6, 8, 10, 15; b at 4, 9, 11, 13; c at 5, 7, 12, 14.
    runs = {"a": [6, 8, 10, 15], "b": [4, 9, 11, 13], "c": [5, 7, 12, 14]}
    for name, numbers in runs.items():
        ms = [1000.0 * n for n in numbers]  # both the prefill and the per-step decode time of run n are n s
        # Median of four = mean of the middle two; linear quartiles at positions 0.75 and 2.25.
        assert timed.loc[name, "prefill_ms"] == pytest.approx((ms[1] + ms[2]) / 2)
        assert timed.loc[name, "decode_ms_per_token_q25"] == pytest.approx(ms[0] + 0.75 * (ms[1] - ms[0]))
        assert timed.loc[name, "decode_ms_per_token_q75"] == pytest.approx(ms[2] + 0.25 * (ms[3] - ms[2]))
    assert num_blocks(model) == N_LAYERS


def test_time_variants_spread_by_hand(monkeypatch):
    # Fixed timings (prefill s, decode s) per run; the first is the warm-up and must not count.
    runs = iter([(9.0, 9.0), (0.4, 1.0), (0.1, 3.0), (0.3, 2.0), (0.2, 5.0), (0.5, 4.0)])
    monkeypatch.setattr(benefits, "greedy_decode", lambda model, prompt, new_tokens: (None, *next(runs)))
    model, tok = tiny_model("llama"), tiny_tokenizer()
    latency = time_variants(model, tok, {"full": []}, new_tokens=11, repetitions=5, batch_size=2).loc["full"]
    # Timed prefills 0.1..0.5 s sorted: median 0.3; linear quartiles at positions 1 and 3 -> 0.2 and 0.4.
    assert latency["prefill_ms"] == pytest.approx(300)
    assert (latency["prefill_ms_q25"], latency["prefill_ms_q75"]) == (pytest.approx(200), pytest.approx(400))
    # Decode 1..5 s over 10 steps: 100..500 ms per step; median 300, quartiles 200 and 400.
    assert latency["decode_ms_per_token"] == pytest.approx(300)
    assert latency["decode_ms_per_token_q25"] == pytest.approx(200)
    assert latency["decode_ms_per_token_q75"] == pytest.approx(400)
    assert latency["decode_tokens_per_s"] == pytest.approx(2 * 10 / 3.0)  # two sequences, 10 steps in 3 s


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
    with pytest.raises(ValueError, match="positive"):
        speedup_spread(table.assign(decode_ms_per_token_q25=0.0))


def physics_table(steps, ideals, spread=0.01):
    """Full model of 30 blocks and variants of 24 and 18: median steps in ms, quartiles `spread` either side."""
    rows = [("full", 30, steps[0], 1.0)] + [(f"-{30 - b}", b, t, i) for b, t, i in zip((24, 18), steps[1:], ideals)]
    return latency_table([(n, b, t, t * (1 - spread), t * (1 + spread), i) for n, b, t, i in rows])


def test_check_decode_physics_passes_a_clean_line_and_reads_it_against_the_macs():
    # 2 ms per block + 20 ms fixed: 80, 68, 56 ms. Speedups 80/68 = 1.18 and 80/56 = 1.43, under the hard bounds
    # 30/24 = 1.25 and 30/18 = 1.67; the quartile ranges (1% either side) span about 1.15..1.20 and 1.40..1.46.
    table = physics_table([80.0, 68.0, 56.0], ideals=[1.10, 1.43])
    physics = check_decode_physics(table, head_share=0.4)
    assert physics.consistent and physics.verdict == "consistent" and physics.problems == ()
    assert physics.variants["hard_bound"].tolist() == [pytest.approx(1.25), pytest.approx(30 / 18)]
    readings = ["above the MAC ideal: per-block overheads", "MAC ideal within the spread"]
    assert physics.variants["reading"].tolist() == readings
    assert (physics.per_block_ms, physics.fixed_ms) == (pytest.approx(2.0), pytest.approx(20.0))
    # Fixed 20 of 80 ms = 25%, below the head's 40% of the MACs (32 ms): per-block overheads. An exact line: no error.
    assert "2.00 ms per block + 20.0 ms per token whatever the depth" in physics.reading
    assert "full model's 80.0 ms step, 32.0 ms, whatever the depth; the fit finds 20.0 ms (25%)" in physics.reading
    assert "The fixed part is the smaller" in physics.reading
    below = check_decode_physics(physics_table([80.0, 68.0, 56.0], ideals=[1.3, 1.6]), head_share=0.1)
    assert below.consistent and below.variants["reading"].tolist() == ["below the MAC ideal"] * 2
    assert "The fixed part is the larger" in below.reading  # 20 ms fixed against the head's 8 ms


def test_check_decode_physics_reads_a_noisy_fit_as_undecided():
    # Medians 80, 70, 56: slope 2, fixed 20.67, residuals -2/3, 4/3, -2/3; standard error
    # sqrt((4/9 + 16/9 + 4/9) / 1 * (1/3 + 24**2 / 72)) = 4.71, so 20.67 ± 9.43 holds the head's 30% of 80 = 24 ms.
    physics = check_decode_physics(physics_table([80.0, 70.0, 56.0], ideals=[1.1, 1.3], spread=0.10), head_share=0.3)
    assert physics.consistent and physics.fixed_ms_se == pytest.approx(4.714, abs=1e-3)
    assert "(± 9.43 ms, 2 standard errors)" in physics.reading
    assert "may be smaller or larger than that" in physics.reading


def test_check_decode_physics_fails_a_speedup_above_n_over_n_minus_k_beyond_its_range():
    # -6 decodes 80/62 = 1.29x; its range 79.2/62.62 = 1.265 .. 80.8/61.38 = 1.316 lies above 30/24 = 1.25.
    physics = check_decode_physics(physics_table([80.0, 62.0, 56.0], ideals=[1.1, 1.3]), head_share=0.2)
    assert not physics.consistent
    readings = ["bad: above the hard bound", "above the MAC ideal: per-block overheads"]
    assert physics.variants["reading"].tolist() == readings
    assert physics.verdict.startswith("bad measurement: -6 decodes 1.29x [1.26, 1.32], above its hard bound 30/24")
    assert "re-measure" in physics.reading
    # With 5% quartiles the range 76/65.1 = 1.17 .. 84/58.9 = 1.43 reaches below 1.25: not evidence of a bad run.
    assert check_decode_physics(physics_table([80.0, 62.0, 56.0], [1.1, 1.3], spread=0.05), 0.2).consistent


def test_check_decode_physics_fails_a_negative_fixed_cost_and_a_slower_variant():
    # Medians near -4 + 3 ms per block: 86, 68.5, 50. With 10% quartiles no single speedup range leaves [1, N/(N-k)].
    table = physics_table([86.0, 68.5, 50.0], ideals=[1.1, 1.3], spread=0.10)
    physics = check_decode_physics(table, head_share=0.2)
    x, y = table["blocks_left"].to_numpy(float), table["decode_ms_per_token"].to_numpy()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    fixed = y.mean() - slope * x.mean()
    residual = y - (fixed + slope * x)
    se = ((residual**2).sum() / (len(x) - 2) * (1 / len(x) + x.mean() ** 2 / ((x - x.mean()) ** 2).sum())) ** 0.5
    assert (physics.fixed_ms, physics.fixed_ms_se) == (pytest.approx(fixed), pytest.approx(se))
    assert fixed + 2 * se < 0  # by hand: slope 3, fixed -3.83, standard error 1.18
    assert not any(r.startswith("bad") for r in physics.variants["reading"])
    assert physics.problems == (
        "the fitted fixed cost is -3.83 ms per token, more than 2 standard errors below 0, which no machine can do",
    )
    assert "3.00 ms per block − 3.83 ms per token whatever the depth" in physics.reading  # not "+ -3.83"
    slower = check_decode_physics(physics_table([80.0, 90.0, 56.0], ideals=[1.1, 1.3]), head_share=0.2)
    assert slower.variants.loc["-6", "reading"] == "bad: slower than the full model"
    assert "-6 decodes 0.889x [0.871, 0.907]: slower than the full model" in slower.verdict


def test_check_decode_physics_needs_two_depths_and_a_share():
    one_depth = physics_table([80.0, 68.0, 56.0], ideals=[1.1, 1.3]).assign(blocks_left=30)
    assert "one depth" in check_decode_physics(one_depth, head_share=0.2).reading
    with pytest.raises(ValueError, match="head_share"):
        check_decode_physics(physics_table([80.0, 68.0, 56.0], ideals=[1.1, 1.3]), head_share=1.0)


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
