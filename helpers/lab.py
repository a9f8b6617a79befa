"""The hands-on lab's checks (chapter 7): each exercise's result against an independent computation.

Every check keeps two questions apart. *Is your code right?* The same result as the course's own code on the same
inputs: the same recorded states, the same logits with the KV cache, the same scores, exact counts. *Is your choice
of blocks good?* Measured on held-out data against the baselines, with paired 95% intervals. A check whose exercise
is not attempted yet (a stub that raises NotImplementedError, a variable still None) says so and returns None;
otherwise it prints what holds and returns whether all of it does. Nothing here stores an answer: a measured answer
is computed when its check runs, from the model and the data the check was given.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from numbers import Real
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .benefits import ideal_speedup, parameter_count, size_summary
from .blocks import check_block_indices, get_blocks
from .checks import check_choice, check_int
from .display import fmt, fmt_ci
from .evaluation import Measure, VariantResults, evaluate_variants
from .generation import cache_argument_name
from .hooks import block_hooks, eval_mode, input_device, record_block_io, run_model
from .linear_repair import down_projection, fit_span_map, fold_map, mlp_output, spans
from .perplexity import perplexity_ci, perplexity_difference
from .pruning import decoder_config, prune_blocks, skip_blocks
from .selection import removable_blocks, select_blocks
from .ties import first_minimum, tied_order

Requirement = Literal["beat", "match"]
REQUIREMENTS: dict[str, str] = {
    "beat": "lower perplexity beyond noise (interval below 0)",
    "match": "not worse beyond noise (interval reaches 0 or lies below it, on enough windows to decide)",
}
"""What each kind of level asks of the learner's selection against its baseline, in words."""

READABLE_COSINE = 0.02
"""Two cosines of a heatmap closer than this look the same to the eye: the heatmap exercise accepts either."""

MAP_RTOL = 1e-3
"""How far a learner's linear map may lie from ``fit_span_map``'s, relative to its size (Frobenius norms). On the course
model's SMS calibration messages (blocks 13-18), a float32 solve lands about 1e-5 away, forgetting the padding mask
about 0.4 and a ridge ten times too large about 0.03."""


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


def _map_mismatch(candidate: object, reference: torch.Tensor, *, rtol: float = MAP_RTOL) -> str | None:
    """What is wrong with a learner's linear map ``T``, compared with the reference map; None if nothing is.

    Args:
        candidate: the learner's result, expected to be a d x d tensor of finite numbers.
        reference: ``fit_span_map``'s map on the same batches.
        rtol: the largest ||candidate - reference|| / ||reference|| that counts as equal.

    Returns:
        None when ``candidate`` matches ``reference`` within ``rtol``, else a sentence saying what differs.
    """
    if not isinstance(candidate, torch.Tensor):
        return f"expected a torch.Tensor T of shape {tuple(reference.shape)}, got {type(candidate).__name__}"
    if tuple(candidate.shape) != tuple(reference.shape):
        return f"T has shape {tuple(candidate.shape)}, expected {tuple(reference.shape)} (hidden size x hidden size)"
    mine = candidate.detach().cpu().double()
    if not torch.isfinite(mine).all():
        return f"T holds {int((~torch.isfinite(mine)).sum())} NaN or infinite entries"
    relative = float((mine - reference.double()).norm() / reference.double().norm())
    if relative > rtol:
        return (
            f"T differs from the reference by {relative:.2g} of its size (at most {rtol:g} counts as equal): check "
            "that only real tokens count (attention_mask), that the target is L - Y with Y = block output - M, and "
            "the ridge term ridge * trace(M^T M) / d"
        )
    return None


@contextmanager
def _folded_map(model: PreTrainedModel, block: int, span_map: torch.Tensor) -> Iterator[PreTrainedModel]:
    """Inside the ``with``, block ``block``'s MLP down projection is a copy with ``span_map`` folded in
    (``fold_map``); the original module comes back on exit, also after an exception. Its weights are never written,
    so results measured before (the lab's reference, ``judge``'s) stay valid for the model."""
    mlp = get_blocks(model)[block].mlp
    original = down_projection(get_blocks(model)[block])
    mlp.down_proj = copy.deepcopy(original)
    try:
        fold_map(get_blocks(model)[block], span_map)
        yield model
    finally:
        mlp.down_proj = original


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


class _CheckError(Exception):
    """Raised by a check inside a learner's ``with``, to see that the hooks go and the error goes on."""


def _not_attempted(error: NotImplementedError) -> None:
    print(f"not attempted yet: {error}")


def _report(checks: Mapping[str, bool]) -> bool:
    """Print each check with ✓ or ✗; True when all hold."""
    for text, ok in checks.items():
        print(("✓ " if ok else "✗ ") + text)
    return all(checks.values())


def _hook_ids(model: torch.nn.Module) -> set[tuple[int, int]]:
    """Every forward hook and pre-hook on the model's modules, as (module id, handle id)."""
    return {
        (id(module), key)
        for module in model.modules()
        for hooks in (module._forward_hooks, module._forward_pre_hooks)
        for key in hooks
    }


def _remove_hooks_since(model: torch.nn.Module, before: set[tuple[int, int]]) -> int:
    """Remove the hooks registered since ``before`` (what a recorder left behind); return how many there were."""
    removed = 0
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [key for key in hooks if (id(module), key) not in before]:
                del hooks[key]
                for extra in (
                    "_forward_hooks_with_kwargs",
                    "_forward_hooks_always_called",
                    "_forward_pre_hooks_with_kwargs",
                ):
                    getattr(module, extra, {}).pop(key, None)
                removed += 1
    return removed


def _records_mismatch(records: object, expected: Mapping[int, Any]) -> str | None:
    """What differs between a learner's {block: (input, output)} and ``record_block_io``'s; None if nothing."""
    if not isinstance(records, Mapping):
        return f"the recorder should yield a dict {{block index: (input, output)}}, got {type(records).__name__}"
    if sorted(records) != sorted(expected):
        return f"expected one record per block 0..{len(expected) - 1}, got the keys {sorted(records)[:10]}"
    for index, io in expected.items():
        mine = records[index]
        if not (isinstance(mine, Sequence) and len(mine) == 2 and all(isinstance(t, torch.Tensor) for t in mine)):
            return f"block {index}: expected a pair of tensors (input, output), got {type(mine).__name__}"
        for name, got, want in (("input", mine[0], io.input), ("output", mine[1], io.output)):
            if tuple(got.shape) != tuple(want.shape):
                return f"block {index}'s {name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
            if not torch.allclose(got.detach().cpu().float(), want.float(), rtol=1e-5, atol=1e-6):
                return f"block {index}'s {name} differs from the hidden state that entered/left the block"
    return None


def _layer_indices(model: PreTrainedModel) -> list[list[int]]:
    """Per block of ``model``, the distinct ``layer_idx`` values its modules carry."""
    return [
        sorted({m.layer_idx for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)})
        for block in get_blocks(model)
    ]


def _structure(model: PreTrainedModel) -> tuple:
    """What pruning may change: the block modules, their layer indices, the config's layer count and lists."""
    config = decoder_config(model)
    return (
        [id(block) for block in get_blocks(model)],
        _layer_indices(model),
        config.num_hidden_layers,
        list(getattr(config, "layer_types", None) or []),
    )


def _cached_logits(model: PreTrainedModel, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding with the KV cache: the last position's logits after the prompt and after each new token."""
    cache = cache_argument_name(model)
    with eval_mode(model), torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        logits = [out.logits[:, -1].float().cpu()]
        for _ in range(steps):
            token = logits[-1].argmax(-1, keepdim=True).to(ids.device)
            out = model(input_ids=token, **{cache: out[cache]}, use_cache=True)
            logits.append(out.logits[:, -1].float().cpu())
    return torch.stack(logits, dim=1)


def _parameters_without(model: PreTrainedModel, blocks: Iterable[int]) -> int:
    """The parameter count once ``blocks`` are removed, counted from the full model: its count minus the blocks'."""
    block_list = get_blocks(model)
    return parameter_count(model) - sum(parameter_count(block_list[i]) for i in blocks)


class Lab:
    """The lab's checks on one model: its block scores, the budget ``k``, the held-out measures and the levels.

    Building it measures the full model and the baselines once (``reference``); every selection checked later is
    measured on the same windows and kept, so no selection is measured twice.

    Args:
        model: the full model.
        tokenizer: its tokenizer.
        scores: one column per criterion, one row per block (higher = more important).
        k: how many blocks a selection removes.
        protect: ``protect_first`` / ``protect_last`` of the "+" heuristic.
        measures: the held-out measures (``quality_measures``); the first is the metric the levels read.
        baselines: ``{name: blocks}``, the data-free selections the levels compare against.
        levels: ``{level: (baseline, requirement)}``, the requirement "beat" or "match" (``REQUIREMENTS``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        scores: pd.DataFrame,
        *,
        k: int,
        protect: Mapping[str, int],
        measures: Mapping[str, Measure],
        baselines: Mapping[str, Sequence[int]],
        levels: Mapping[str, tuple[str, Requirement]],
    ) -> None:
        for level, (baseline, requirement) in levels.items():
            check_choice(f"level {level}'s baseline", baseline, list(baselines))
            check_choice(f"level {level}'s requirement", requirement, list(REQUIREMENTS))
        self.model, self.tokenizer, self.scores = model, tokenizer, scores
        self.k, self.protect, self.measures = k, dict(protect), dict(measures)
        self.baselines = {name: sorted(blocks) for name, blocks in baselines.items()}
        self.levels, self.metric = dict(levels), next(iter(measures))
        self.n_blocks = len(get_blocks(model))
        self.reference = evaluate_variants(model, self.baselines, self.measures)
        self._measured: dict[tuple[int, ...], VariantResults] = {}
        self._calibration: dict[tuple, tuple[str, str, VariantResults | None]] = {}

    def judge(self, blocks: Sequence[int]) -> tuple[VariantResults, pd.DataFrame]:
        """The model without ``blocks`` (variant "yours") beside the baselines, and its row per level."""
        key = tuple(sorted(blocks))
        if key not in self._measured:
            self._measured[key] = evaluate_variants(
                self.model, {**self.baselines, "yours": list(key)}, self.measures, reuse=self.reference
            )
        results = self._measured[key]
        return results, level_results(results, "yours", self.levels, self.metric)

    def _valid_selection(self, blocks: object, variable: str) -> list[int] | None:
        """``blocks`` as a sorted list of k valid indices, or None after saying what is wrong with them."""
        try:
            checked = check_block_indices(blocks, self.n_blocks)
        except (TypeError, ValueError) as error:
            return print(f"✗ {variable} is not a valid selection: {error}")
        if len(checked) != self.k:
            return print(f"✗ Remove exactly k = {self.k} blocks for a fair comparison; {variable} has {len(checked)}.")
        return checked

    def check_selection(self, blocks: object, variable: str = "MY_BLOCKS") -> pd.DataFrame | None:
        """Exercise "beat the baselines": the levels ``blocks`` passes, each from a paired interval.

        A baseline itself passes no level: the levels measure a selection against the baselines, so typing one of
        them (the static middle, say) is the starting point, not a pass.

        Returns:
            The levels frame (``level_results``), or None when ``blocks`` is unset, invalid or a baseline.
        """
        if blocks is None:
            return print(f"not attempted yet: set {variable} (k = {self.k} block indices), then run this cell again.")
        checked = self._valid_selection(blocks, variable)
        if checked is None:
            return None
        same = [name for name, chosen in self.baselines.items() if chosen == checked]
        if same:
            return print(
                f"✗ {variable} {checked} is the baseline '{same[0]}' itself: it passes no level. The levels "
                "measure a selection of yours against the baselines; choose one from data."
            )
        results, levels = self.judge(checked)
        print(f"{variable} {checked}: perplexity {results.formatted('yours', self.metric)}")
        for level, row in levels.iterrows():
            print(
                f"level {level}: yours - {row['baseline']} = {row['difference']}, {row['verdict']}; it needs "
                f"{row['requirement']} -> {'✓ pass' if row['passed'] else '✗ not yet'}"
            )
        return levels

    def check_heatmap(self, depth: pd.DataFrame, least: object, most: object) -> bool | None:
        """Exercise "read a heatmap": the blocks whose cell (d, d+1) is the brightest and the darkest.

        The answer is read from ``depth`` itself, so it holds for any model; a block whose cosine is within
        ``READABLE_COSINE`` of the extreme one counts as right (the eye cannot tell them apart).
        """
        if least is None or most is None:
            return print(
                "not attempted yet: set both LEAST_CHANGE and MOST_CHANGE (block indices), then run this cell again."
            )
        neighbours = pd.Series([float(depth.iloc[d, d + 1]) for d in range(self.n_blocks)])
        # Near 1 two quiet blocks' cosines agree to 3 decimals: read 1 - cos (Block Influence) for the extremes.
        brightest, darkest = int(first_minimum(1 - neighbours)), int(first_minimum(neighbours))
        checks = {}
        for name, answer, extreme, word in (
            ("LEAST_CHANGE", least, brightest, "brightest"),
            ("MOST_CHANGE", most, darkest, "darkest"),
        ):
            if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < self.n_blocks:
                checks[f"{name} = {answer!r} is not a block index 0..{self.n_blocks - 1}"] = False
                continue
            close = abs(neighbours[answer] - neighbours[extreme]) <= READABLE_COSINE
            checks[
                f"{name} = block {answer}: cell ({answer}, {answer + 1}) = cos {fmt(neighbours[answer], decimals=3)}"
                f"; the {word} is block {extreme}'s, cos {fmt(neighbours[extreme], decimals=3)}"
            ] = close
        return _report(checks)

    def calibration_answer(
        self, picks: Mapping[str, Sequence[int]], sms_measures: Mapping[str, Measure]
    ) -> tuple[str, str, VariantResults | None]:
        """Exercise "which calibration data": measure the two selections on held-out SMS; the answer and why.

        Args:
            picks: ``{"wikitext": blocks, "sms": blocks}``, one selection per calibration set.
            sms_measures: the measure ``sms_acc`` (``quality_measures``).

        Returns:
            ("A", "B" or "C", the reason, the results or None when both sets pick the same blocks).
        """
        key = tuple((name, tuple(blocks)) for name, blocks in picks.items())
        if key in self._calibration:
            return self._calibration[key]
        if list(picks["wikitext"]) == list(picks["sms"]):
            answer = ("C", "both calibration sets pick the same blocks, so the pruned models are identical.", None)
        else:
            variants = {f"Taylor+ · {data}": list(blocks) for data, blocks in picks.items()}
            results = evaluate_variants(self.model, variants, sms_measures)
            diff = results.difference("Taylor+ · wikitext", "Taylor+ · sms", "sms_acc")
            verdict = diff.verdict(better="higher")  # "too few to decide" below helpers.MIN_UNITS messages
            reason = {
                "better": "the SMS-calibrated selection is better, beyond noise.",
                "worse": "the WikiText-calibrated selection is better, beyond noise.",
                "within noise": "the interval contains 0: on these messages the two cannot be told apart.",
            }.get(verdict, f"{verdict}: too few messages to tell the two apart.")
            print(
                f"SMS-calibrated minus WikiText-calibrated accuracy: {fmt_ci(diff, decimals=3, sign=True)} "
                f"(paired 95% interval, {len(results.results['full']['sms_acc'].correct)} messages)"
            )
            answer = ({"better": "B", "worse": "A"}.get(verdict, "C"), reason, results)
        self._calibration[key] = answer
        return answer

    def check_prediction(
        self, prediction: object, picks: Mapping[str, Sequence[int]], sms_measures: Mapping[str, Measure]
    ) -> bool | None:
        """Exercise "which calibration data": nothing is measured or shown before ``prediction`` is set."""
        if prediction not in ("A", "B", "C"):
            return print(
                f'not attempted yet: set PREDICTION_3 to "A", "B" or "C" (now {prediction!r}); the '
                "measured answer shows after."
            )
        answer, reason, _ = self.calibration_answer(picks, sms_measures)
        print(f"Measured answer: {answer}, {reason}")
        return _report({f"you predicted {prediction}": prediction == answer})

    def check_recorder(
        self, recorder: Callable[[PreTrainedModel], Any], batch: Mapping[str, torch.Tensor]
    ) -> bool | None:
        """Exercise "write the hook": ``with recorder(model) as records`` fills ``{block: (input, output)}``.

        Checked against ``record_block_io`` on ``batch``, and for the hooks left on the model after a normal exit
        and after an exception inside the ``with`` (any left are removed here, so the notebook goes on clean).
        """
        before = _hook_ids(self.model)
        problem, swallowed = None, False
        try:
            with recorder(self.model) as records:
                run_model(self.model, batch)
            problem = _records_mismatch(records, record_block_io(self.model, batch))
        except NotImplementedError as error:
            return _not_attempted(error)
        except Exception as error:  # the learner's code: report what it raised, then check the hooks all the same
            problem = f"the forward pass inside your recorder raised {type(error).__name__}: {error}"
        left = _remove_hooks_since(self.model, before)
        try:
            with recorder(self.model):
                raise _CheckError("the check's error inside the with")
            swallowed = True
        except _CheckError:
            pass
        left_after_error = _remove_hooks_since(self.model, before)
        return _report(
            {
                f"the recorded states equal record_block_io's for all {self.n_blocks} blocks"
                + (f" (✗ {problem})" if problem else ""): problem is None,
                f"hooks left on the model after the with: {left}": left == 0,
                f"hooks left after an error inside the with: {left_after_error}": left_after_error == 0,
                "the error inside the with went on to the caller (not swallowed)": not swallowed,
            }
        )

    def check_prune(
        self,
        prune: Callable[[PreTrainedModel, list[int]], PreTrainedModel],
        blocks: Sequence[int],
        prompt: str,
        new_tokens: int = 4,
    ) -> bool | None:
        """Exercise "the surgery": ``prune(model, blocks)`` against ``prune_blocks`` on the same blocks.

        Checks the original model is untouched, the block count, each block's ``layer_idx`` (which block carries
        which, when wrong), the config, and the logits of greedy decoding with the KV cache on ``prompt``.
        """
        removed = check_block_indices(blocks, self.n_blocks)
        kept = [i for i in range(self.n_blocks) if i not in removed]
        before = _structure(self.model)
        try:
            mine = prune(self.model, list(removed))
        except NotImplementedError as error:
            return _not_attempted(error)
        checks = {
            "the original model is untouched (blocks, layer_idx, config)": _structure(self.model) == before,
            "it returns a new model (a deep copy), not the original": mine is not self.model,
        }
        if not isinstance(mine, PreTrainedModel):
            checks[f"it returns a transformers model, not {type(mine).__name__}"] = False
            return _report(checks)
        expected = prune_blocks(self.model, removed)
        n_mine = len(get_blocks(mine))
        checks[f"blocks: {n_mine}, expected {self.n_blocks} - {len(removed)} = {len(kept)}"] = n_mine == len(kept)
        wrong = [(i, got) for i, got in enumerate(_layer_indices(mine)) if got and got != [i]]
        checks[
            "every block's layer_idx is its new position"
            + "".join(
                f"; block {i} (block {kept[i] if i < len(kept) else '?'} of the full model) has layer_idx "
                f"{got[0] if len(got) == 1 else got}, expected {i}"
                for i, got in wrong[:3]
            )
        ] = not wrong
        config, reference = decoder_config(mine), decoder_config(expected)
        checks[f"config.num_hidden_layers: {config.num_hidden_layers}, expected {reference.num_hidden_layers}"] = (
            config.num_hidden_layers == reference.num_hidden_layers
        )
        if getattr(reference, "layer_types", None):
            checks["config.layer_types lists the kept blocks' types"] = list(
                getattr(config, "layer_types", None) or []
            ) == list(reference.layer_types)
        if all(checks.values()):
            ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"].to(input_device(self.model))
            try:
                same = torch.allclose(
                    _cached_logits(mine, ids, new_tokens),
                    _cached_logits(expected, ids, new_tokens),
                    rtol=1e-4,
                    atol=1e-4,
                )
                text = f"with the KV cache, {new_tokens} greedy tokens' logits equal prune_blocks'"
            except Exception as error:  # the learner's model: say what generation raised
                same, text = False, f"generation with the KV cache raised {type(error).__name__}: {error}"
            checks[text] = same
        return _report(checks)

    def check_criterion(
        self,
        criterion: Callable[[PreTrainedModel, Sequence[Mapping[str, torch.Tensor]]], pd.Series],
        batches: Sequence[Mapping[str, torch.Tensor]],
    ) -> bool | None:
        """Exercise "a criterion from hooks": your code (scores equal ``relative_update_scores``'), then your blocks
        (the "+" selection from them, what it shares with each column of ``scores``, and the levels)."""
        try:
            mine = criterion(self.model, batches)
        except NotImplementedError as error:
            return _not_attempted(error)
        problem = score_mismatch(mine, relative_update_scores(self.model, batches))
        if not _report(
            {
                f"your code: the scores equal the reference for all {self.n_blocks} blocks"
                + (f" (✗ {problem})" if problem else ""): problem is None
            }
        ):
            return False
        blocks = select_blocks(mine, self.k, **self.protect)
        shared = {
            column: len(set(blocks) & set(select_blocks(self.scores[column], self.k, **self.protect)))
            for column in self.scores.columns
        }
        print(
            f"your blocks: with the '+' protection they remove {blocks}; of these {self.k}, shared with "
            + ", ".join(f"{column} {count}" for column, count in shared.items())
        )
        self.check_selection(blocks, "your criterion's selection")
        return True

    def check_save_reload(
        self, function: Callable[[list[int], str], Any], blocks: object, variable: str = "the blocks"
    ) -> bool | None:
        """Exercise "prune, save, reload": what ``function(blocks, folder)`` loads back against independent numbers:
        its block and parameter counts, and its perplexity window by window against ``skip_blocks``'."""
        if blocks is None:
            return print(f"not attempted yet: set {variable} (k block indices), then run this cell again.")
        checked = self._valid_selection(blocks, variable)
        if checked is None:
            return None
        with tempfile.TemporaryDirectory() as folder:  # about as large as the model; removed at the end
            try:
                loaded = function(checked, folder)
            except NotImplementedError as error:
                return _not_attempted(error)
            small = loaded[0] if isinstance(loaded, tuple) else loaded
            size, reloaded = size_summary(small), self.measures[self.metric](small)
        skipped = self.judge(checked)[0].results["yours"][self.metric]
        expected = _parameters_without(self.model, checked)
        passed = _report(
            {
                f"blocks: {size['blocks']}, expected {self.n_blocks} - {self.k} = {self.n_blocks - self.k}": size[
                    "blocks"
                ]
                == self.n_blocks - self.k,
                f"parameters: {size['parameters']:,}, expected {expected:,} (the full model's minus those of blocks "
                f"{checked})": size["parameters"] == expected,
                f"perplexity: reloaded {fmt_ci(perplexity_ci(reloaded))}, skip_blocks "
                f"{fmt_ci(perplexity_ci(skipped))}, every window's loss within 0.01%": np.allclose(
                    reloaded.window_nll, skipped.window_nll, rtol=1e-4
                ),
            }
        )
        print(f"size: {fmt(size_summary(self.model)['MiB'])} MiB -> {fmt(size['MiB'])} MiB")
        return passed

    def check_speedup(self, choose: Callable[[pd.Series, float], Sequence[int]], target: float) -> bool | None:
        """Exercise "a speedup budget": ``choose(scores, target)`` equals ``blocks_for_speedup`` for every column."""
        checks = {}
        for column in self.scores.columns:
            try:
                mine = choose(self.scores[column], target)
            except NotImplementedError as error:
                return _not_attempted(error)
            expected = blocks_for_speedup(self.model, self.scores[column], target, **self.protect)
            ok = mine is not None and sorted(mine) == expected
            checks[
                f"{column}: yours {mine}, expected {expected} ({len(expected)} blocks, ideal speedup "
                f"{fmt(ideal_speedup(self.model, expected))})"
            ] = ok
        return _report(checks)

    def check_linear_map(
        self,
        fit: Callable[[PreTrainedModel, Sequence[Mapping[str, torch.Tensor]], int, int], torch.Tensor],
        batches: Sequence[Mapping[str, torch.Tensor]],
        repair_batches: Sequence[Mapping[str, torch.Tensor]],
        span: Sequence[int],
    ) -> bool | None:
        """Exercise "heal without training": ``fit(model, batches, start, length)`` returns the span's map ``T``.

        Your code: ``T`` against ``fit_span_map``'s on ``batches`` (padded: forgetting the mask shows), within
        ``MAP_RTOL`` of its size. Your repair: ``T`` fitted on ``repair_batches``, folded into block ``start - 1`` of
        the model without ``span``, and its held-out perplexity against the pruned model's, paired window by window
        (the pruned model's is ``judge``'s, measured once). A right solve can still be "within noise" or "worse":
        that is the repair's property, not the code's. A family whose blocks cannot carry a map, or carry it only
        approximately (a norm after the MLP: Gemma 2/3), gets one line.

        Raises:
            ValueError: if ``span`` is not one run of consecutive valid blocks.
        """
        removed = check_block_indices(span, self.n_blocks)
        runs = spans(removed)
        if len(runs) != 1 or runs[0][0] == 0:
            raise ValueError(f"span must be one run of consecutive blocks after block 0; got {removed}")
        start, length = runs[0]
        try:
            down_projection(get_blocks(self.model)[start - 1])
        except ValueError as error:
            return print(f"this model's family cannot carry a linear map, so this exercise measures nothing: {error}")
        if mlp_output(get_blocks(self.model)[start - 1]) is not get_blocks(self.model)[start - 1].mlp:
            return print(
                "this model's family normalises its MLP output before adding it (post_feedforward_layernorm), so a map "
                "folds only approximately and M is not the MLP's output: this exercise, written for families that add "
                "it as it is, measures nothing"
            )
        try:
            mine = fit(self.model, batches, start, length)
        except NotImplementedError as error:
            return _not_attempted(error)
        problem = _map_mismatch(mine, fit_span_map(self.model, batches, start, length, progress=False).map)
        text = f"your code: T equals fit_span_map's for blocks {start}-{start + length - 1} on the same batches"
        if not _report({text + (f" (✗ {problem})" if problem else ""): problem is None}):
            return False
        tokens = sum(int(batch["attention_mask"].sum()) for batch in repair_batches)
        print(f"your repair: fitting your map on {tokens} calibration tokens, then measuring it on held-out windows")
        repair_map = fit(self.model, repair_batches, start, length)
        pruned = self.judge(removed)[0].results["yours"][self.metric]
        with _folded_map(self.model, start - 1, repair_map), skip_blocks(self.model, removed) as repaired_model:
            repaired = self.measures[self.metric](repaired_model)
        difference = perplexity_difference(pruned, repaired)
        verdict = difference.verdict(better="lower")
        print(
            f"without blocks {removed}: perplexity {fmt_ci(perplexity_ci(pruned))}; with your map "
            f"{fmt_ci(perplexity_ci(repaired))}; repaired - pruned {fmt_ci(difference, sign=True)} (paired 95% "
            f"interval, {len(pruned.window_nll)} windows): {verdict}. "
            + {
                "better": "The map gives back part of what the blocks did.",
                "worse": "The map hurts on held-out text: a property of this repair, not of your code.",
                "within noise": "Its effect cannot be told from noise: a property of this repair, not of your code.",
            }.get(verdict, "Too few windows to tell.")
        )
        return True
