"""What the hands-on lab (chapter 7) checks a learner's work against: reference answers, exact counts and verdicts.

Each exercise of the lab has a cell the learner edits and a check cell. The checks compare the learner's result with
an independent computation from here: a reference criterion computed by another code path (``block_hooks`` instead
of ``record_block_io``), exact parameter counts, the block choice under a speedup budget, the verdict of a level
read from paired intervals. They also refuse to reveal a measured answer before the learner has predicted it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from typing import Literal

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from .benefits import ideal_speedup, parameter_count
from .blocks import check_block_indices, get_blocks
from .checks import check_choice, check_int
from .evaluation import VariantResults
from .hooks import block_hooks, run_model
from .selection import removable_blocks
from .ties import tied_order

Requirement = Literal["beat", "match"]
REQUIREMENTS: dict[str, str] = {
    "beat": "lower perplexity beyond noise (interval below 0)",
    "match": "not worse beyond noise (interval reaches 0 or lies below it, on enough windows to decide)",
}
"""What each kind of level asks of the learner's selection against its baseline, in words."""


def relative_update_scores(model: PreTrainedModel, batches: Sequence[Mapping[str, torch.Tensor]]) -> pd.Series:
    """Per block, the mean relative size of its update, ||output - input|| / ||input||, over all real tokens.

    The lab's reference for the criterion the learner writes with ``record_block_io``; computed here by another code
    path, ``block_hooks``, reducing each block's states as they pass instead of recording them. Higher = the block
    changes the hidden state more = more important, like every criterion of the course.

    Args:
        model: the model to score.
        batches: calibration batches (dicts with 2-D ``input_ids`` and ``attention_mask``).

    Returns:
        A Series named "relative_update", indexed by ``block`` (0..L-1).

    Raises:
        ValueError: if ``batches`` is empty or holds no real token.
        FloatingPointError: if the score of some block is NaN or infinite (the message names those blocks).
    """
    n_blocks = len(get_blocks(model))
    totals = torch.zeros(n_blocks, dtype=torch.float64)
    n_tokens = 0
    mask = torch.ones(0, dtype=torch.bool)

    def accumulate(index: int, block_input: torch.Tensor, block_output: torch.Tensor) -> None:
        relative = (block_output - block_input).norm(dim=-1) / block_input.norm(dim=-1)
        totals[index] += relative[mask.to(relative.device)].double().sum().cpu()

    with block_hooks(model, accumulate):
        for batch in batches:
            ids = batch["input_ids"]
            mask = batch.get("attention_mask", torch.ones_like(ids)).bool()
            n_tokens += int(mask.sum())
            run_model(model, batch)
    if n_tokens == 0:
        raise ValueError("the batches hold no real token (empty, or every attention_mask is 0)")
    bad = torch.nonzero(~torch.isfinite(totals)).flatten().tolist()
    if bad:
        raise FloatingPointError(
            f"the relative update is NaN or infinite for block(s) {bad}: a hidden state entering or leaving them is "
            "NaN/inf, or one entering them is all zeros. Check the weights of the first of them for NaN/inf."
        )
    return pd.Series((totals / n_tokens).numpy(), index=pd.RangeIndex(n_blocks, name="block"), name="relative_update")


def score_mismatch(candidate: object, reference: pd.Series, *, rtol: float = 1e-3) -> str | None:
    """What is wrong with a learner's per-block scores, compared with the reference scores; None if nothing is.

    Args:
        candidate: the learner's result, expected to be a Series of finite numbers indexed by the blocks 0..L-1.
        reference: the reference scores, indexed by the blocks 0..L-1.
        rtol: the relative tolerance within which a score counts as equal (float32 sums differ in the last bits
            with the order of the additions).

    Returns:
        None when ``candidate`` matches ``reference`` within ``rtol``, else a sentence saying what differs.
    """
    n_blocks = len(reference)
    if not isinstance(candidate, pd.Series):
        return f"expected a pandas Series with one score per block, got {type(candidate).__name__}"
    if sorted(candidate.index.tolist()) != list(range(n_blocks)):
        return f"expected the index to be the blocks 0..{n_blocks - 1}, got {candidate.index.tolist()}"
    values = pd.to_numeric(candidate, errors="coerce").astype(float).sort_index()
    if not np.isfinite(values.to_numpy()).all():
        return f"scores are missing, NaN or infinite for blocks {values.index[~np.isfinite(values)].tolist()}"
    close = np.isclose(values.to_numpy(), reference.sort_index().to_numpy(dtype=float), rtol=rtol, atol=0.0)
    if not close.all():
        block = int(values.index[~close][0])
        return (
            f"{int((~close).sum())} of {n_blocks} scores differ from the reference, e.g. block {block}: yours "
            f"{values[block]:.4g}, expected {float(reference[block]):.4g}"
        )
    return None


def blocks_for_speedup(
    model: PreTrainedModel,
    scores: pd.Series,
    target: float,
    *,
    protect_first: int = 0,
    protect_last: int = 0,
    seq_len: int | None = None,
) -> list[int]:
    """The least important removable blocks, taken in score order until the ideal speedup reaches ``target``.

    Near-ties in the scores go to the lower block index (``tied_order``), as in ``select_blocks``.

    Args:
        model: the full model.
        scores: one score per block (higher = more important), indexed by the blocks 0..L-1.
        target: the ideal speedup to reach (``ideal_speedup``), above 1 and at most that of removing every removable
            block but one of the model's (the error says how much that is).
        protect_first: blocks at the start that are never removed.
        protect_last: blocks at the end that are never removed.
        seq_len: context length for the attention term of ``ideal_speedup``; None leaves it out.

    Returns:
        The blocks to remove, ascending: the shortest prefix of the score order that reaches ``target``.

    Raises:
        TypeError: if ``target`` is not a number.
        ValueError: if ``target`` is not above 1, ``scores`` is not indexed by the model's blocks, or removing as
            many removable blocks as may go (one block must stay) does not reach ``target``.
    """
    n_blocks = len(get_blocks(model))
    if isinstance(target, bool) or not isinstance(target, Real):
        raise TypeError(f"target must be a number above 1 (an ideal speedup, e.g. 1.5); got {target!r}")
    if not target > 1:
        raise ValueError(f"target must be an ideal speedup above 1 (e.g. 1.5), got {target}")
    if sorted(scores.index.tolist()) != list(range(n_blocks)):
        raise ValueError(f"scores must be indexed by the blocks 0..{n_blocks - 1}; got {scores.index.tolist()}")
    allowed = removable_blocks(n_blocks, 1, protect_first=protect_first, protect_last=protect_last)
    order = tied_order(pd.to_numeric(scores).astype(float)[allowed])[: n_blocks - 1]  # one block must stay
    for count in range(1, len(order) + 1):
        chosen = sorted(order[:count])
        if ideal_speedup(model, chosen, seq_len=seq_len) >= target:
            return chosen
    best = ideal_speedup(model, order, seq_len=seq_len)
    raise ValueError(
        f"target={target} cannot be reached: removing {len(order)} of the {n_blocks} blocks, the most that may go "
        f"(protect_first={protect_first}, protect_last={protect_last}, and one block must stay), gives an ideal "
        f"speedup of {best:.4g}; choose a target above 1 and at most {math.floor(best * 1000) / 1000}"
    )


def parameters_without(model: PreTrainedModel, blocks: Iterable[int]) -> int:
    """How many parameters the model keeps once ``blocks`` are removed: its count minus those of the blocks.

    Args:
        model: the full model.
        blocks: the block indices to remove.

    Returns:
        The parameter count of the pruned model.

    Raises:
        TypeError, ValueError: for invalid ``blocks`` (``check_block_indices``).
    """
    block_list = get_blocks(model)
    removed = check_block_indices(blocks, len(block_list))
    return parameter_count(model) - sum(parameter_count(block_list[i]) for i in removed)


def prediction_gate(prediction: object, choices: Sequence[str], variable: str) -> str | None:
    """The message to print instead of a measured answer while no valid prediction is set; None once it is.

    Args:
        prediction: the learner's prediction (None while unset).
        choices: the valid answers, e.g. ``["A", "B", "C"]``.
        variable: the name of the learner's variable, for the message.

    Returns:
        None when ``prediction`` is one of ``choices``, else what to set.
    """
    options = ", ".join(f'"{choice}"' for choice in choices)
    if prediction is None:
        return f"Set {variable} first (one of {options}), then run this cell again: the measured answer shows after."
    if prediction not in choices:
        return f"{variable} = {prediction!r} is not one of {options}: set it to one of them, then run this cell again."
    return None


def level_results(
    results: VariantResults, variant: str, levels: Mapping[str, tuple[str, Requirement]], metric: str
) -> pd.DataFrame:
    """Whether ``variant`` passes each level: its paired difference to the level's baseline and the verdict.

    Args:
        results: variants measured on the same windows (``evaluate_variants``).
        variant: the learner's variant.
        levels: ``{level: (baseline variant, requirement)}``; "beat" needs the verdict "better", "match" "better"
            or "within noise" (see ``REQUIREMENTS``): "too few to decide" passes neither.
        metric: the metric compared (e.g. "ppl_wikitext").

    Returns:
        A frame indexed by ``level`` with ``baseline``, ``requirement`` (in words), ``difference`` (variant minus
        baseline, "value [low, high]"), ``verdict`` and ``passed`` (bool).

    Raises:
        KeyError: for an unknown variant, baseline or metric.
        ValueError: for an unknown requirement.
    """
    rows = []
    for level, (baseline, requirement) in levels.items():
        check_choice("requirement", requirement, list(REQUIREMENTS))
        comparison = results.compare([(baseline, variant)], metric).iloc[0]
        verdict = comparison["verdict for b"]
        rows.append(
            {
                "level": level,
                "baseline": baseline,
                "requirement": REQUIREMENTS[requirement],
                "difference": comparison["shown"],
                "verdict": verdict,
                "passed": verdict in (("better",) if requirement == "beat" else ("better", "within noise")),
            }
        )
    return pd.DataFrame(rows).set_index("level")


def criterion_costs(
    n_blocks: int, k: int, n_batches: int, *, protect_first: int = 0, protect_last: int = 0
) -> pd.DataFrame:
    """What each criterion of the course costs, in passes over the calibration batches.

    A forward pass is one run of the model (full or with blocks skipped) over one batch; a backward pass is one
    gradient computation. Counts follow the definitions: magnitude reads weights only; Block Influence and the
    relative update need one recorded forward pass per batch; Taylor one forward and one backward; the PPL criterion
    one pass of the model without each block (Shortened LLaMA's loop; ``ppl_scores`` caches the unchanged prefix and
    does about half that block work); SLEB repeats the PPL criterion over the remaining candidates at each of its
    ``k`` steps.

    Args:
        n_blocks: the model's block count L.
        k: how many blocks are removed.
        n_batches: calibration batches.
        protect_first: blocks never candidates at the start (SLEB only scores candidates).
        protect_last: blocks never candidates at the end.

    Returns:
        A frame indexed by ``criterion`` with ``forward passes``, ``backward passes`` and ``needs data``.

    Raises:
        TypeError: if a count is not an integer.
        ValueError: if a count is below 1, or the protected blocks leave fewer than ``k`` candidates.
    """
    check_int("n_blocks", n_blocks)
    check_int("k", k)
    check_int("n_batches", n_batches)
    candidates = len(removable_blocks(n_blocks, k, protect_first=protect_first, protect_last=protect_last))
    per_batch = {
        "magnitude": (0, 0, False),
        "Block Influence": (1, 0, True),
        "relative update": (1, 0, True),
        "Taylor": (1, 1, True),
        "PPL": (n_blocks, 0, True),
        "SLEB": (sum(candidates - step for step in range(k)), 0, True),
    }
    return pd.DataFrame(
        [
            {"criterion": name, "forward passes": f * n_batches, "backward passes": b * n_batches, "needs data": data}
            for name, (f, b, data) in per_batch.items()
        ]
    ).set_index("criterion")
