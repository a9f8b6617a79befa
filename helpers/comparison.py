"""Evaluate several pruned variants of one model the same way, in one table.

Every chapter compares selections (static, by weights, from data); they must all be measured with the same texts,
windows, messages and statistics, or the comparison means nothing. ``compare_variants`` runs each variant with
``skip_blocks`` (no copy) and reports perplexity per text set and SMS accuracy with bootstrap intervals, plus paired
differences against a reference variant, so "within noise" can be read off the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .benefits import ideal_speedup, parameter_count
from .blocks import check_block_indices, get_blocks
from .classification import accuracy_ci, accuracy_difference, sms_accuracy
from .perplexity import perplexity, perplexity_ci, perplexity_difference
from .pruning import skip_blocks
from .settings import progress_bar

FULL = "full"
"""Name of the variant with no block removed; always evaluated, as the default reference."""


def _block_parameters(model: PreTrainedModel, blocks: Sequence[int]) -> int:
    return sum(p.numel() for i in blocks for p in get_blocks(model)[i].parameters())


def compare_variants(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    variants: Mapping[str, Sequence[int]],
    *,
    texts: Mapping[str, Sequence[str]],
    sms: pd.DataFrame | None = None,
    sms_examples: pd.DataFrame | None = None,
    shots: int = 4,
    seq_len: int = 128,
    max_windows: int | None = 32,
    max_sms: int | None = 200,
    reference: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per variant (``{name: removed blocks}``; a ``"full"`` row with nothing removed comes first).

    Columns: ``removed``, ``n_removed``, ``params_removed_pct``, ``ideal_speedup``; for each text set ``t`` in
    ``texts``: ``ppl_t`` with its 95% bootstrap interval ``ppl_t_low``/``ppl_t_high`` and the paired interval of the
    difference to the reference ``ppl_t_diff_low``/``ppl_t_diff_high``; with ``sms``: ``sms_acc`` (few-shot with
    ``shots`` solved examples from ``sms_examples``, the "prior" decision rule), its interval, the majority-class
    ``sms_baseline`` and the paired ``sms_acc_diff_low``/``sms_acc_diff_high``. ``reference`` defaults to "full".
    The raw results stay in ``frame.attrs["results"]`` ({variant: {"ppl_t": PerplexityResult, "sms": ...}}).
    """
    n_blocks = len(get_blocks(model))
    if FULL in variants and check_block_indices(variants[FULL], n_blocks, allow_empty=True):
        raise ValueError(
            f"the variant name {FULL!r} is reserved for the model with no block removed (always evaluated), but it is "
            f"given blocks {list(variants[FULL])}; give that variant another name"
        )
    plan = {FULL: []} | {name: check_block_indices(blocks, n_blocks) for name, blocks in variants.items() if name != FULL}
    reference = FULL if reference is None else reference
    if reference not in plan:
        raise ValueError(f"reference {reference!r} is not a variant; choose one of {list(plan)}")
    if not texts and sms is None:
        raise ValueError("nothing to evaluate: give at least one text set in `texts` or an `sms` frame")
    if sms is not None and shots and sms_examples is None:
        raise ValueError("few-shot SMS needs `sms_examples` (e.g. load_sms('calibration')); or pass shots=0")

    total = parameter_count(model)
    results: dict[str, dict[str, object]] = {}
    for name, removed in progress_bar(plan.items(), "variants", progress):
        found: dict[str, object] = {}
        with skip_blocks(model, removed):
            for label, text_set in texts.items():
                found[f"ppl_{label}"] = perplexity(
                    model, tokenizer, text_set, seq_len=seq_len, max_windows=max_windows, progress=False
                )
            if sms is not None:
                found["sms"] = sms_accuracy(
                    model, tokenizer, sms, shots=shots, examples=sms_examples, max_examples=max_sms,
                    decision="prior", progress=False,
                )
        results[name] = found

    rows = {}
    for name, removed in plan.items():
        row: dict[str, object] = {
            "removed": ",".join(map(str, removed)) or "-",
            "n_removed": len(removed),
            "params_removed_pct": 100 * _block_parameters(model, removed) / total,
            "ideal_speedup": ideal_speedup(model, removed),
        }
        for label in texts:
            key = f"ppl_{label}"
            ci = perplexity_ci(results[name][key])
            diff = perplexity_difference(results[reference][key], results[name][key])
            row |= {key: ci.estimate, f"{key}_low": ci.low, f"{key}_high": ci.high,
                    f"{key}_diff_low": diff.low, f"{key}_diff_high": diff.high}
        if sms is not None:
            result = results[name]["sms"]
            ci = accuracy_ci(result)
            diff = accuracy_difference(results[reference]["sms"], result)
            row |= {"sms_acc": ci.estimate, "sms_acc_low": ci.low, "sms_acc_high": ci.high,
                    "sms_baseline": result.baseline, "sms_acc_diff_low": diff.low, "sms_acc_diff_high": diff.high}
        rows[name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "variant"
    frame.attrs["results"] = results
    return frame
