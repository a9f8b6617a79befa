"""Cost of the similarity analysis relative to a plain forward pass over the same calibration batches.

``block_similarity`` runs the backbone once per batch (no LM head: it needs hidden states, not logits) with hooks
that copy each block's output, plus one batched matrix product per batch. This times it on the course model with 16
WikiText calibration samples of 128 tokens in batches of 8, against
- a plain forward pass of the whole model (``use_cache=False``, no grad): the figure ``measure()`` returns;
- a forward pass of the backbone alone: the analysis's own overhead (hooks and statistics), printed as well.
Each batch is timed with all three back to back, in rotating order, and the ratios are medians of the ratios within
those triples, which cancels the drifting load of a shared machine. Target: <= 1.05.
Offline, point ``DEPTH_PRUNING_DATA`` at the data folder and set ``HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

import statistics
import time

from helpers.data import calibration_batches
from helpers.hooks import run_model
from helpers.model import load_model
from helpers.settings import set_determinism
from helpers.similarity import block_similarity

REPETITIONS = 5


def ratios(repetitions: int = REPETITIONS) -> dict[str, float]:
    """Median over (repetition, batch) of analysis time / forward time, against the whole model and the backbone.

    Each batch is timed with all three tasks back to back, in rotating order, and the ratio is taken within that
    triple: on a shared machine the load drifts over seconds, and only measurements this close together see the
    same load. The first repetition warms up and is not kept.
    """
    set_determinism(seed=0, threads=2)
    model, tokenizer = load_model()
    batches = calibration_batches(tokenizer, "wikitext", n_samples=16, seq_len=128, batch_size=8)
    tasks = {
        "forward": lambda batch: run_model(model, batch),
        "backbone_forward": lambda batch: run_model(model.base_model, batch),
        "analysis": lambda batch: block_similarity(model, [batch], progress=False),
    }
    names = list(tasks)
    found: dict[str, list[float]] = {"analysis_vs_forward": [], "analysis_vs_backbone_forward": []}
    turn = 0
    for repetition in range(repetitions + 1):
        for batch in batches:
            seconds = {}
            for name in names[turn % 3 :] + names[: turn % 3]:
                start = time.perf_counter()
                tasks[name](batch)
                seconds[name] = time.perf_counter() - start
            turn += 1
            if repetition:
                found["analysis_vs_forward"].append(seconds["analysis"] / seconds["forward"])
                found["analysis_vs_backbone_forward"].append(seconds["analysis"] / seconds["backbone_forward"])
    return {name: statistics.median(values) for name, values in found.items()}


def measure(repetitions: int = REPETITIONS) -> float:
    """Time of ``block_similarity`` / time of a plain forward pass of the model, on the same batches (median)."""
    return ratios(repetitions)["analysis_vs_forward"]


if __name__ == "__main__":
    for name, value in ratios().items():
        print(f"{name}: {value:.3f}")
