"""Helpers for the depth-pruning course: load a model and data, remove blocks, analyse and evaluate them.

The front door is ``__all__``: the names a learner meets in every chapter (``helpers.<name>``). Everything else
is reached through its module, ``helpers.<module>.<name>`` (``helpers.display.fmt``, ``helpers.plots.plot_speedup``),
so the call says where to read it. The plots, the widgets and LoRA healing are imported on first use, so that
importing the package pulls in neither seaborn, ipywidgets nor peft.
"""

import importlib
import pkgutil
from typing import Any

from .benchmark_results import POOLED
from .benefits import ideal_speedup, parameter_count, size_summary
from .blocks import get_blocks, num_blocks
from .classification import sms_accuracy
from .data import calibration_batches, load_sms, load_wikitext
from .data_criteria import taylor_scores
from .evaluation import evaluate_variants, quality_measures
from .hooks import block_hooks, record_block_io
from .model import load_model, save_pruned
from .perplexity import perplexity, perplexity_ci, perplexity_difference
from .pruning import prune_blocks, skip_blocks
from .selection import PLUS_HEURISTIC, removable_blocks, resolve_k, select_blocks
from .settings import set_determinism
from .similarity import block_similarity
from .static_criteria import magnitude_scores, position_blocks
from .statistics import MIN_UNITS, rank_correlation
from .ties import first_minimum, tied_order
from .variant_benchmarks import benchmark_table, benchmark_variants, signal_table

# Front-door names whose modules need a heavy dependency: {name: submodule}, imported when first used.
_LAZY = {
    "heal_with_lora": "healing",  # peft
    "plot_block_heatmap": "plots",  # seaborn
    "plot_block_profiles": "plots",
    "plot_depth_similarity": "plots",
    "LivePanel": "widgets",  # ipywidgets
    "block_explorer": "widgets",
}
_MODULES = {info.name for info in pkgutil.iter_modules(__path__)}

__all__ = [
    # model, data and determinism
    "load_model",
    "save_pruned",
    "set_determinism",
    "load_wikitext",
    "load_sms",
    "calibration_batches",
    # blocks: count, remove, skip
    "num_blocks",
    "get_blocks",
    "parameter_count",
    "prune_blocks",
    "skip_blocks",
    # hooks and similarity
    "block_hooks",
    "record_block_io",
    "block_similarity",
    # criteria and selection
    "position_blocks",
    "magnitude_scores",
    "taylor_scores",
    "removable_blocks",
    "resolve_k",
    "select_blocks",
    "PLUS_HEURISTIC",
    "tied_order",
    "first_minimum",
    "rank_correlation",
    # evaluation with intervals
    "MIN_UNITS",
    "perplexity",
    "perplexity_ci",
    "perplexity_difference",
    "sms_accuracy",
    "evaluate_variants",
    "quality_measures",
    "benchmark_variants",
    "benchmark_table",
    "signal_table",
    "POOLED",
    # size and speed
    "ideal_speedup",
    "size_summary",
    # imported on first use: healing, plots, widgets
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import a lazy front-door name (``_LAZY``) or a submodule (``helpers.plots``) on first use, and keep it."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The package's names with the lazy ones and the submodules, so that tab completion offers them."""
    return sorted(set(globals()) | set(_LAZY) | _MODULES)
