"""Decoding speedup of a depth-pruned course model, measured against the speedup its removed compute promises.

Full SmolLM2-135M vs the same model without the 6 blocks before the last two (blocks 22-27 of 30: a contiguous deep
run, like Taylor+'s choice in Shortened LLaMA, that keeps the last two blocks as its "+" rule does). Both decode
greedily from the same 32-token prompt for 32 tokens at batch size 1 (a short prompt keeps the run short; decoding
speed, not prefill, is compared); ``time_variants`` alternates the runs between the two (round-robin) so that
drifting machine load hits both alike, and each one's median decode speed is used.
Ratio = measured decode speedup ÷ ``ideal_speedup`` (at the mean context length while decoding): 1 means the
removed share of the compute turned fully into speed; above 1, per-block overheads made blocks cost more than
their compute share.
"""

from __future__ import annotations

from helpers.benefits import ideal_speedup, time_variants
from helpers.blocks import num_blocks
from helpers.model import load_model
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
    ideal = ideal_speedup(model, removed, seq_len=PROMPT_TOKENS + NEW_TOKENS // 2)
    speeds = time_variants(
        model,
        tokenizer,
        {"full": [], "pruned": removed},
        prompt_tokens=PROMPT_TOKENS,
        new_tokens=NEW_TOKENS,
        repetitions=ROUNDS,
        progress=False,
    )["decode_tokens_per_s"]
    return speeds["pruned"] / speeds["full"] / ideal


if __name__ == "__main__":
    print(f"decode_speedup_vs_ideal: {measure():.3f}")
