"""How long ``load_model()`` takes for the course model: cold (first use, GGUF conversion) and warm (from the cache).

Cold: an empty temporary cache folder, so the packaged GGUF file is de-quantized and written as float32 safetensors
(a one-off cost per machine; setup.sh pays it with ``python -m helpers``). Warm: the median of 3 loads from
that cache, which is what every notebook pays. Goal: warm at most 3 s. Imports are done before timing starts,
because every notebook pays them anyway and they are not the loader's cost. Run: ``python -m benchmarks.load_time``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from helpers.model import load_model
from helpers.settings import CACHE_ENV

WARM_REPETITIONS = 3


def _timed_load() -> float:
    start = time.perf_counter()
    load_model(device="cpu")
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        # A fresh cache folder makes the first load a cold one, without touching the user's real cache.
        os.environ[CACHE_ENV] = cache
        cold = _timed_load()
        # Median, not mean: one load slowed by another process on the machine should not decide the figure.
        warm = statistics.median(_timed_load() for _ in range(WARM_REPETITIONS))
    print(f"cold_load_s: {cold:.1f}")
    print(f"warm_load_s: {warm:.2f}")


if __name__ == "__main__":
    main()
