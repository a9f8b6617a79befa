"""The toolkit's speed claims, measured on the packaged model in one run; one `name: ratio` line each.

    python benchmarks/ratios.py

analysis_vs_forward            similarity analysis / plain forward pass over the same batches (target <= 1.05)
ppl_criterion_cached_vs_naive  cached PPL criterion / the paper's pruned-copy loop (target <= 0.55)
decode_speedup_vs_ideal        measured decode speedup after removing 6 blocks / ideal speedup from their compute
benchmark_eval_vs_lm_eval      helpers.zero_shot / lm-eval on the same 40 items of 4 tasks, 2 threads (target <= 0.45)
linear_map_fit_vs_analysis     fitting one span's linear map / the similarity analysis on the same batches (target <= 2)
Offline, point DEPTH_PRUNING_DATA at the data folder and set HF_DATASETS_OFFLINE=1. Takes several minutes on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere

import bench_analysis  # noqa: E402
import bench_decode  # noqa: E402
import bench_linear_repair  # noqa: E402
import bench_ppl  # noqa: E402
import bench_zero_shot  # noqa: E402


def main() -> None:
    analysis = bench_analysis.ratios()
    ppl = bench_ppl.measure()
    decode = bench_decode.measure()
    zero_shot = bench_zero_shot.measure()
    linear_map = bench_linear_repair.ratios()
    # The analysis's own overhead over a backbone-only pass, so the headline figure hides nothing.
    print(f"analysis_vs_backbone_forward: {analysis['analysis_vs_backbone_forward']:.3f}")
    print(f"analysis_vs_forward: {analysis['analysis_vs_forward']:.3f}")
    print(f"ppl_criterion_cached_vs_naive: {ppl:.3f}")
    print(f"decode_speedup_vs_ideal: {decode:.3f}")
    print(f"benchmark_eval_vs_lm_eval: {zero_shot:.3f}")
    print(f"linear_map_fit_vs_analysis: {linear_map['fit_vs_analysis']:.3f}")


if __name__ == "__main__":
    main()
