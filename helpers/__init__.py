"""Helpers for the depth-pruning course: load a model and data, remove blocks, analyse and evaluate them.

``__all__`` is the public API, all of it reachable as ``helpers.<name>``, and holds everything the notebooks call.
The plots, the widgets and LoRA healing are imported on first use (``helpers.plot_block_profiles``,
``helpers.LivePanel``, ``helpers.heal_with_lora``), so that importing the package pulls in neither seaborn,
ipywidgets nor peft.
"""

import importlib
from typing import Any

from .benchmark_results import (
    BENCHMARK_TASKS,
    HEADLINE_METRICS,
    POOLED,
    ZeroShotResult,
    pooled_result,
    zero_shot_measure,
    zero_shot_results,
)
from .benchmark_variants import (
    BenchmarkRun,
    add_pooled,
    benchmark_table,
    benchmark_variants,
    retained_share,
    signal_table,
    word_vs_choice,
)
from .benefits import (
    describe_decode_cost,
    ideal_speedup,
    kv_cache_bytes,
    measure_latency,
    model_bytes,
    parameter_count,
    size_summary,
    speedup_spread,
)
from .blocks import BLOCK_PATHS, check_block_indices, get_blocks, num_blocks
from .classification import (
    ClassificationResult,
    accuracy_ci,
    accuracy_difference,
    sms_accuracy,
    sms_prompt,
    sms_task_batches,
)
from .data import calibration_batches, calibration_texts, disjoint_draws, load_sms, load_wikitext, tokenize_batches
from .data_criteria import (
    BEYOND_NOISE,
    WITHIN_NOISE,
    SampleScores,
    block_influence_by_sample,
    ppl_by_sample,
    ppl_positions,
    ppl_scores,
    resampling_verdict,
    sleb_removal,
    split_half_agreement,
    taylor_scores,
)
from .display import configure_display, fmt, fmt_ci, fmt_interval, fmt_pct, format_columns
from .evaluation import (
    FULL,
    VariantResults,
    benefits_table,
    compare_variants,
    evaluate_variants,
    quality_measures,
    unique_variants,
)
from .fast.stored_results import StoredZeroShot, load_stored_zero_shot, stored_agreement
from .generation import greedy_continuation
from .hooks import BlockIO, block_hooks, input_device, record_block_io, run_model
from .lab import (
    blocks_for_speedup,
    criterion_costs,
    level_results,
    parameters_without,
    prediction_gate,
    relative_update_scores,
    score_mismatch,
)
from .model import load_model, save_pruned
from .perplexity import PerplexityResult, perplexity, perplexity_ci, perplexity_difference
from .pruning import prune_blocks, skip_blocks
from .selection import PLUS_HEURISTIC, count_runs, removable_blocks, resolve_k, select_blocks
from .settings import DEFAULT_MODEL, progress_bar, set_determinism
from .similarity import SimilarityReport, block_similarity
from .static_criteria import POSITION_STRATEGIES, magnitude_scores, position_blocks
from .statistics import MIN_UNITS, ConfidenceInterval, bootstrap_ci, paired_difference, rank_correlation
from .ties import TIE_RTOL, first_minimum, tie_groups, tied_order, tied_ranks
from .zero_shot import evaluate_zero_shot, zero_shot_difference, zero_shot_summary

# Names whose modules need a heavy dependency: {name: submodule}, imported by ``__getattr__`` when first used.
_LAZY = {
    "heal_with_lora": "healing",  # peft
    **dict.fromkeys(
        [
            "plot_angular_distance",
            "plot_before_after",
            "plot_block_heatmap",
            "plot_block_profiles",
            "plot_depth_similarity",
            "plot_metric_by_k",
            "plot_removed_blocks",
            "plot_retained",
            "plot_speedup",
            "plot_token_heatmap",
        ],
        "plots",  # seaborn
    ),
    **dict.fromkeys(["LivePanel", "block_explorer"], "widgets"),  # ipywidgets
}

__all__ = [
    # model, blocks, pruning
    "BLOCK_PATHS",
    "DEFAULT_MODEL",
    "check_block_indices",
    "get_blocks",
    "load_model",
    "num_blocks",
    "prune_blocks",
    "save_pruned",
    "set_determinism",
    "progress_bar",
    "skip_blocks",
    # data
    "calibration_batches",
    "calibration_texts",
    "disjoint_draws",
    "load_sms",
    "load_wikitext",
    "tokenize_batches",
    # hooks
    "BlockIO",
    "block_hooks",
    "input_device",
    "record_block_io",
    "run_model",
    # block selection and the criteria
    "PLUS_HEURISTIC",
    "POSITION_STRATEGIES",
    "magnitude_scores",
    "position_blocks",
    "ppl_scores",
    "removable_blocks",
    "resolve_k",
    "select_blocks",
    "sleb_removal",
    "taylor_scores",
    "SampleScores",
    "ppl_by_sample",
    "ppl_positions",
    "block_influence_by_sample",
    "split_half_agreement",
    "resampling_verdict",
    "BEYOND_NOISE",
    "WITHIN_NOISE",
    "SimilarityReport",
    "block_similarity",
    "TIE_RTOL",
    "first_minimum",
    "tie_groups",
    "tied_order",
    "tied_ranks",
    "count_runs",
    # evaluation and statistics
    "FULL",
    "VariantResults",
    "evaluate_variants",
    "compare_variants",
    "quality_measures",
    "unique_variants",
    "ClassificationResult",
    "PerplexityResult",
    "perplexity",
    "sms_accuracy",
    "sms_prompt",
    "sms_task_batches",
    "evaluate_zero_shot",
    "zero_shot_difference",
    "zero_shot_summary",
    # the zero-shot benchmarks of the course's variants, stored and checked live
    "BENCHMARK_TASKS",
    "HEADLINE_METRICS",
    "POOLED",
    "pooled_result",
    "BenchmarkRun",
    "StoredZeroShot",
    "ZeroShotResult",
    "add_pooled",
    "benchmark_table",
    "benchmark_variants",
    "word_vs_choice",
    "load_stored_zero_shot",
    "retained_share",
    "signal_table",
    "stored_agreement",
    "zero_shot_measure",
    "zero_shot_results",
    "greedy_continuation",
    "ConfidenceInterval",
    "MIN_UNITS",
    "accuracy_ci",
    "accuracy_difference",
    "bootstrap_ci",
    "paired_difference",
    "perplexity_ci",
    "perplexity_difference",
    "rank_correlation",
    # benefits: size and speed
    "benefits_table",
    "describe_decode_cost",
    "ideal_speedup",
    "kv_cache_bytes",
    "measure_latency",
    "model_bytes",
    "parameter_count",
    "size_summary",
    "speedup_spread",
    # the lab's checks
    "blocks_for_speedup",
    "criterion_costs",
    "level_results",
    "parameters_without",
    "prediction_gate",
    "relative_update_scores",
    "score_mismatch",
    # display
    "configure_display",
    "fmt",
    "fmt_ci",
    "fmt_interval",
    "fmt_pct",
    "format_columns",
    # imported on first use
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import the submodule behind a lazy name (``_LAZY``) on first use, and keep the name in the package."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The package's names with the lazy ones, so that tab completion offers ``helpers.plot_block_profiles``."""
    return sorted(set(globals()) | set(_LAZY))
