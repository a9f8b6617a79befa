"""Time of the PPL criterion on packed rows relative to the same batches run as given, on chapter 5's SMS sets.

``ppl_by_sample`` packs short samples several to a row and, when every sample starts with the same unscored tokens,
holds those once per row (``helpers.fast.ppl_criterion._packed_runs``). Here the same calls run once with packing and
once with it switched off, on chapter 5's two SMS calibration sets (its defaults): 32 raw messages batched by length,
and 8 prompts in the task format with 2 solved examples each, scored on the answer only. Both must select the same
blocks. Positions per pass come from ``ppl_positions``. Measured on a 2-core machine (2 threads), one run of 2
minutes: sms 31.2 s packed (1019 positions a pass) vs 43.0 s as given (1512), ratio 0.725; sms-task 13.4 s (541
positions) vs 27.3 s (1204), ratio 0.491; the same blocks selected both ways.
Offline, point ``DEPTH_PRUNING_DATA`` at the data folder and set ``HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

import time
from unittest import mock

import torch

from helpers.classification import sms_task_batches
from helpers.data import calibration_batches, load_sms
from helpers.data_criteria import ppl_by_sample, ppl_positions
from helpers.fast import ppl_criterion
from helpers.model import load_model
from helpers.selection import PLUS_HEURISTIC, resolve_k, select_blocks
from helpers.settings import set_determinism


def _timed(model, batches) -> tuple[float, list[int], int]:
    """(seconds, the PPL criterion's "+" selection at 20%, positions per pass)."""
    start = time.perf_counter()
    scores = ppl_by_sample(model, batches, progress=False).scores()
    seconds = time.perf_counter() - start
    k = resolve_k(0.2, len(scores))
    return seconds, select_blocks(scores, k, **PLUS_HEURISTIC), ppl_positions(model, batches)


def measure(threads: int = 2) -> dict[str, float]:
    """Packed seconds / as-given seconds for each SMS calibration set; prints positions and selections."""
    set_determinism(seed=0, threads=threads)
    model, tokenizer = load_model()
    calibration = load_sms("calibration")
    sets = {
        "sms": calibration_batches(tokenizer, "sms", n_samples=32, seq_len=128, seed=0, by_length=True),
        "sms-task": sms_task_batches(
            tokenizer, calibration, examples=calibration, shots=2, n_samples=8, seed=0, batch_size=2
        ),
    }
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection are not timed
        model(input_ids=torch.arange(100, 228)[None])
    ratios = {}
    for name, batches in sets.items():
        packed = _timed(model, batches)
        with mock.patch.object(ppl_criterion, "_packed_runs", return_value=None):
            given = _timed(model, batches)
        assert packed[1] == given[1], f"{name}: packed selects {packed[1]}, as given {given[1]}"
        print(f"{name}: {packed[0]:.1f} s packed ({packed[2]} positions a pass) vs {given[0]:.1f} s as given "
              f"({given[2]}); both remove {packed[1]}", flush=True)  # fmt: skip
        ratios[name] = packed[0] / given[0]
    return ratios


if __name__ == "__main__":
    for name, ratio in measure().items():
        print(f"{name}: {ratio:.3f}")
