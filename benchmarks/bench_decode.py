"""Decoding speedup of a depth-pruned course model, measured against the speedup its removed compute promises.

Full SmolLM2-135M vs a ``prune_blocks`` copy without the 6 blocks before the last two (blocks 22-27 of 30: a
contiguous deep run, like Taylor+'s choice in Shortened LLaMA, that keeps the last two blocks as its "+" rule does).
Both decode greedily from the same 32-token prompt for 32 tokens at batch size 1 (a short prompt keeps the run
short; decoding speed, not prefill, is compared); runs alternate between the two models so that drifting machine
load hits both alike, and each model's median decode speed is used.
Ratio = measured decode speedup ÷ ``ideal_speedup`` (at the mean context length while decoding): 1 means the
removed share of the compute turned fully into speed; above 1, per-block overheads made blocks cost more than
their compute share.
"""

from __future__ import annotations

import statistics

from helpers.benefits import ideal_speedup, measure_latency
from helpers.blocks import num_blocks
from helpers.model import load_model
from helpers.pruning import prune_blocks
from helpers.settings import set_determinism

PROMPT_TOKENS = 32
NEW_TOKENS = 32
ROUNDS = 5
N_REMOVED = 6
KEEP_LAST = 2


def measure() -> float:
    """Measured decode speedup of the pruned model ÷ its ideal speedup (median speeds over alternated runs)."""
    set_determinism(seed=0, threads=2)
    model, tokenizer = load_model()
    n = num_blocks(model)
    removed = list(range(n - KEEP_LAST - N_REMOVED, n - KEEP_LAST))
    pruned = prune_blocks(model, removed)
    ideal = ideal_speedup(model, removed, seq_len=PROMPT_TOKENS + NEW_TOKENS // 2)

    speeds = {"full": [], "pruned": []}
    settings = dict(prompt_tokens=PROMPT_TOKENS, new_tokens=NEW_TOKENS, repetitions=1)
    for round_ in range(ROUNDS):
        for name, variant in (("full", model), ("pruned", pruned)):
            # The first round also warms each model up (allocations, kernel choice); later rounds need no warm-up.
            latency = measure_latency(variant, tokenizer, warmup=int(round_ == 0), **settings)
            speeds[name].append(latency["decode_tokens_per_s"])
    measured = statistics.median(speeds["pruned"]) / statistics.median(speeds["full"])
    return measured / ideal


if __name__ == "__main__":
    print(f"decode_speedup_vs_ideal: {measure():.3f}")
