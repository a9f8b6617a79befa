"""Cost of fitting a span's linear map (``helpers.linear_repair.fit_span_map``) relative to the similarity analysis
(``block_similarity``) on the same calibration batches, and its memory: the target is <= 2x the analysis pass, and
memory that grows with d², not with the number of tokens.

The fit runs the model only up to the span's last block (a hook stops the pass there) and accumulates two d x d
float64 matrices per batch; the analysis runs the whole backbone. This times both on the course model with 64
WikiText calibration samples of 128 tokens in batches of 8, for the span of 6 blocks that ends 4 blocks before the
last (the worst case is a span ending at the last block: the whole backbone runs, as in the analysis). Each batch is
timed with both back to back, in alternating order, and the ratio is the median of the per-batch ratios, which
cancels the drifting load of a shared machine. It also prints the fit's accumulator bytes against the bytes that
storing the recorded states would take.
Offline, point ``DEPTH_PRUNING_DATA`` at the data folder and set ``HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

import statistics
import time

from helpers.blocks import num_blocks
from helpers.data import calibration_batches
from helpers.linear_repair import fit_span_map
from helpers.model import load_model
from helpers.settings import set_determinism
from helpers.similarity import block_similarity

SPAN = 6


def ratios() -> dict[str, float]:
    """Median over batches of fit time / analysis time, and the memory figures."""
    set_determinism(seed=0, threads=2)
    model, tokenizer = load_model()
    batches = calibration_batches(tokenizer, "wikitext", n_samples=64, seq_len=128, batch_size=8)
    start = num_blocks(model) - 4 - SPAN
    tasks = {
        "analysis": lambda batch: block_similarity(model, [batch], progress=False),
        "fit": lambda batch: fit_span_map(model, [batch], start, SPAN, progress=False),
    }
    found = []
    for turn, batch in enumerate([batches[0]] + batches):  # the first batch warms up and is not kept
        seconds = {}
        for name in list(tasks)[turn % 2 :] + list(tasks)[: turn % 2]:
            begin = time.perf_counter()
            tasks[name](batch)
            seconds[name] = time.perf_counter() - begin
        if turn:
            found.append(seconds["fit"] / seconds["analysis"])
    d = model.config.hidden_size
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    return {
        "fit_vs_analysis": statistics.median(found),
        "accumulator_MiB": 2 * d * d * 8 / 2**20,
        "recorded_states_MiB": 3 * tokens * d * 4 / 2**20,
    }


if __name__ == "__main__":
    for name, value in ratios().items():
        print(f"{name}: {value:.3f}")
