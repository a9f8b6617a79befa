"""Helpers for the depth-pruning course: load a model and data, remove blocks, analyse and evaluate them.

Plots and widgets stay in their submodules (``helpers.plots``, ``helpers.widgets``) so that importing the
package does not pull in seaborn and ipywidgets.
"""

from .benefits import (
    benefits_table,
    ideal_speedup,
    kv_cache_bytes,
    measure_latency,
    model_bytes,
    parameter_count,
    size_summary,
)
from .blocks import BLOCK_PATHS, get_blocks, num_blocks
from .classification import ClassificationResult, accuracy_ci, accuracy_difference, sms_accuracy, sms_prompt
from .comparison import compare_variants
from .data import calibration_batches, load_sms, load_wikitext, tokenize_batches
from .display import configure_display, fmt, fmt_ci, fmt_interval, fmt_pct, format_columns
from .data_criteria import ppl_scores, sleb_removal, taylor_scores
from .generation import greedy_continuation
from .hooks import BlockIO, block_hooks, record_block_io, run_model
from .model import load_model, save_pruned
from .perplexity import PerplexityResult, perplexity, perplexity_ci, perplexity_difference
from .pruning import prune_blocks, skip_blocks
from .selection import PLUS_HEURISTIC, removable_blocks, resolve_k, select_blocks
from .ties import TIE_RTOL, first_minimum, tie_groups, tied_order, tied_ranks
from .settings import DEFAULT_MODEL, set_determinism
from .similarity import SimilarityReport, block_similarity
from .zero_shot import evaluate_zero_shot, zero_shot_difference, zero_shot_summary
from .static_criteria import POSITION_STRATEGIES, magnitude_scores, position_blocks
from .statistics import ConfidenceInterval, bootstrap_ci, paired_difference, rank_correlation
