"""Data-driven block criteria of Shortened LLaMA (Kim et al., 2024) and SLEB (Song et al., 2024).

All of them look at calibration batches (``helpers.data.calibration_batches``: dicts of right-padded ``input_ids``
and ``attention_mask``; left-padded batches give the same scores); the loss is the next-token negative
log-likelihood over every real token (labels = ``input_ids`` with padding set to -100), or over the tokens a batch's
own ``labels`` mark (``sms_task_batches``: the answer token only). Every score is HIGHER = MORE IMPORTANT, like
every criterion in this package, and the model is left exactly as it was found (weights, training flag,
``requires_grad``, ``.grad``).

The perplexity criterion is the expensive one: the paper runs a full pass of a pruned copy for each of the L
blocks (``ppl_scores(..., cached=False)`` does exactly that). By default ``ppl_scores`` computes the same numbers,
up to float rounding, in a little over half the time, from one pass that caches the hidden state entering every
block, on packed rows (``helpers.fast.ppl_criterion``, which says how).

``ppl_by_sample`` and ``block_influence_by_sample`` keep each calibration sample's share of a score
(``SampleScores``), so the score of any subset of the samples costs no model run: ``split_half_agreement`` and
``resampling_verdict`` use that to measure how much two halves of one calibration set disagree by chance alone, the
baseline a difference between two datasets has to exceed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from .blocks import check_decoder, get_blocks
from .data import disjoint_draws
from .fast.ppl_criterion import nll_without_blocks, positions_per_pass
from .hooks import eval_mode, input_device, raise_non_finite, run_model
from .perplexity import IGNORE, next_token_targets, token_nll
from .pruning import prune_blocks, skip_blocks
from .selection import removable_blocks, resolve_k, select_blocks
from .settings import progress_bar
from .similarity import block_similarity
from .static_criteria import WeightSet, block_scores, block_weights
from .statistics import MIN_UNITS, TOO_FEW, rank_correlation
from .ties import first_minimum

Batch = Mapping[str, torch.Tensor]
BEYOND_NOISE = "beyond resampling noise"
WITHIN_NOISE = "within resampling noise"


@dataclass(frozen=True)
class SampleScores:
    """A token-averaged block score kept per calibration sample, so the score of any subset of the samples is known
    without running the model again (``scores(samples)``), e.g. to measure resampling noise by splitting the samples.

    ``sums``: one row per sample (index ``sample``: the rows of all batches in order), one column per block: the
    sample's sum of the per-token quantity (NLL for the PPL criterion, 1 - cos for Block Influence). ``tokens``: the
    tokens each sample contributes. ``name``: the score's name. ``exponentiate``: the score is exp(token mean)
    (a perplexity) rather than the token mean.
    """

    sums: pd.DataFrame
    tokens: pd.Series
    name: str
    exponentiate: bool = False

    @property
    def n_samples(self) -> int:
        """How many samples the scores are kept for."""
        return len(self.sums)

    def scores(self, samples: Sequence[int] | None = None) -> pd.Series:
        """The block scores of the given samples together, token-weighted as if computed on those samples alone.

        Args:
            samples: sample indices (rows of ``sums``); None for all.

        Returns:
            A Series named ``name``, indexed by ``block``.

        Raises:
            KeyError: if a sample index does not exist.
            ValueError: if the samples hold no token, or a score is not finite.
        """
        rows = slice(None) if samples is None else list(samples)
        tokens = int(self.tokens.loc[rows].sum())
        if tokens == 0:
            raise ValueError(f"samples {samples} hold no scored token")
        mean = self.sums.loc[rows].sum().to_numpy() / tokens
        return block_scores(np.exp(mean) if self.exponentiate else mean, self.name)


def _targets_per_row(labels: torch.Tensor) -> torch.Tensor:
    """How many tokens each row predicts (on the CPU)."""
    return (labels[:, 1:] != IGNORE).sum(dim=1).cpu()


def _right_aligned(*rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(input_ids, attention_mask, labels)`` with each row's leading padding moved to its end: a left-padded batch
    becomes the right-padded batch of the same samples, whose real tokens start at position 0 (otherwise the first
    real token would be scored from a pad and, in families with absolute positions, every token moved). Rows that
    start with a real token, i.e. every right-padded batch, are returned as they are."""
    mask = rows[1]
    lead = (mask.cumsum(dim=1) == 0).sum(dim=1)  # padding before each row's first real token (all of an empty row)
    if not lead.any():
        return rows
    index = (torch.arange(mask.shape[1], device=mask.device) + lead[:, None]) % mask.shape[1]
    return tuple(row.gather(1, index.to(row.device)) for row in rows)


def _prepare(model: PreTrainedModel, batches: Sequence[Batch]) -> tuple[list[tuple[dict, torch.Tensor]], int]:
    """(model inputs, labels) per batch on the model's input device, and the number of tokens to predict in all
    batches.

    The labels are the batch's ``labels`` when it has them (e.g. ``sms_task_batches``: -100 everywhere but the answer
    token), else its ``input_ids``; either way -100 on padding. Left-padded rows are right-aligned first
    (``_right_aligned``), so both paddings give the same scores.
    """
    check_decoder(model, "logits")
    if isinstance(batches, Mapping) or not batches:
        raise ValueError("batches must be a non-empty list of dicts with 'input_ids' (and 'attention_mask')")
    device = input_device(model)
    prepared = []
    for number, batch in enumerate(batches):
        ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            raise ValueError(f"batch {number} has no 2-D 'input_ids' tensor; each batch is a dict of token tensors")
        mask = batch.get("attention_mask", torch.ones_like(ids))
        labels = batch.get("labels", ids)
        if not isinstance(labels, torch.Tensor) or labels.shape != ids.shape:
            raise ValueError(f"batch {number}: 'labels' must be a tensor shaped like 'input_ids' {tuple(ids.shape)}")
        ids, mask, labels = _right_aligned(ids, mask, labels)
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        prepared.append((inputs, labels.masked_fill(mask == 0, IGNORE).to(device)))
    n_tokens = sum(len(next_token_targets(labels)[1]) for _, labels in prepared)
    if n_tokens == 0:
        raise ValueError("the batches hold no token to predict (every row has at most one real token)")
    return prepared, n_tokens


def taylor_scores(
    model: PreTrainedModel, batches: Sequence[Batch], *, weights: WeightSet = "all", progress: bool = True
) -> pd.Series:
    """Shortened LLaMA's Taylor criterion: sum over a block's weights of |W ⊙ ∂L/∂W| (first-order loss change).

    L is the mean next-token loss over all real tokens of all batches; its gradient is accumulated batch by batch
    (one forward and backward pass each) and |W ⊙ g| is taken once at the end, as the official code does (it sums
    W ⊙ g over batches of per-batch mean losses; with its one batch of 10 samples that is the same). Gradients are
    taken with ``torch.autograd.grad``, so no ``.grad`` is written; ``requires_grad`` flags and the training flag are
    restored. "Taylor+" is this score with ``select_blocks(..., **PLUS_HEURISTIC)``.

    Args:
        model: the model to score.
        batches: calibration batches (dicts with 2-D ``input_ids`` and optionally ``attention_mask``).
        weights: "all" parameters of the block (the official code takes every weight, norm scales included) or
            "matrices".
        progress: show a progress bar.

    Returns:
        A Series named "taylor", indexed by ``block``.

    Raises:
        RuntimeError: if called inside ``torch.inference_mode()``, which turns gradients off.
        ValueError: if ``batches`` is one dict or empty, a batch has no 2-D ``input_ids`` tensor, there is no token to
            predict, ``weights`` is not a valid choice, a score is not finite, or the model gives no next-token logits
            (``check_decoder``).
        TypeError: if ``weights`` is not a string.
        FloatingPointError: if the model's logits are NaN or inf (``raise_non_finite`` names where they start), or
            every score is 0 (the gradient vanished, e.g. weights scaled until float32 overflows in a norm).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "taylor_scores needs gradients, which torch.inference_mode() turns off; call it outside the "
            "`with torch.inference_mode():` block"
        )
    prepared, n_tokens = _prepare(model, batches)
    params = [block_weights(block, weights) for block in get_blocks(model)]
    flat = [p for block in params for p in block]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in flat]
    try:
        # Only the blocks' weights need gradients: the embedding/head gradient would be large and unused.
        for p, _ in flags:
            p.requires_grad_(False)
        for p in flat:
            p.requires_grad_(True)
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            for inputs, labels in progress_bar(prepared, "Taylor", progress):
                where, targets = next_token_targets(labels)
                logits = model(**inputs, use_cache=False).logits
                logits = logits[:, :-1][where.to(logits.device)]
                if not torch.isfinite(logits).all():
                    raise_non_finite(model, inputs, "the Taylor criterion's loss")
                loss = token_nll(logits, targets, "sum") / n_tokens
                for total, grad in zip(grads, torch.autograd.grad(loss, flat)):
                    total += grad.float()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    values, start = [], 0
    for block in params:
        pairs = zip(block, grads[start : start + len(block)])
        values.append(sum((p.detach().float() * g).abs().sum().item() for p, g in pairs))
        start += len(block)
    if not any(values):
        name, weight = max(model.named_parameters(), key=lambda item: item[1].detach().abs().max().item())
        raise FloatingPointError(
            "every Taylor score is 0: the loss's gradient vanished for every block weight, as when float32 overflows "
            "(a norm whose input squared exceeds 3.4e38 outputs 0, and the logits stop depending on the blocks). "
            f"The largest weight is {weight.detach().abs().max().item():.3g}, in {name}: check the weights' scale."
        )
    return block_scores(values, "taylor")


def ppl_positions(model: PreTrainedModel, batches: Sequence[Batch]) -> int:
    """How many positions the PPL criterion (``ppl_scores``, ``ppl_by_sample``) computes in one pass over
    ``batches``: their padded size, or less where it packs them (``helpers.fast.ppl_criterion``). It runs L + 1 such
    passes, most of them through part of the blocks only.

    Raises:
        ValueError: if ``batches`` is invalid (as ``taylor_scores``).
    """
    prepared, _ = _prepare(model, batches)
    return positions_per_pass(model, prepared)


def _naive_nll(model: PreTrainedModel, prepared: list, progress: bool) -> list[float]:
    """The paper's loop: for each block a pruned copy and ordinary forward passes with labels."""
    nll = []
    for index in progress_bar(range(len(get_blocks(model))), "PPL without each block (naive)", progress):
        pruned = prune_blocks(model, [index])
        total = 0.0
        for inputs, labels in prepared:
            # transformers' loss is the mean over the batch's real tokens: weight it back by their number.
            loss = pruned(**inputs, labels=labels, use_cache=False).loss
            total += loss.item() * len(next_token_targets(labels)[1])
        nll.append(total)
        del pruned
    return nll


def _refuse_non_finite_model(model: PreTrainedModel, prepared: list, what: str) -> None:
    """Raise, naming where, when the model itself gives non-finite logits on a calibration batch.

    Called when some NLL without a block is not finite: if the model with all its blocks is, that block's removal is
    the cause and ``block_scores`` reports it; if not, a broken block poisons every pass that keeps it.
    """
    for inputs, _ in prepared:
        if not torch.isfinite(run_model(model, inputs).logits).all():
            raise_non_finite(model, inputs, what)


def ppl_by_sample(model: PreTrainedModel, batches: Sequence[Batch], *, progress: bool = True) -> SampleScores:
    """The PPL criterion kept per sample: ``ppl_by_sample(model, batches).scores()`` is ``ppl_scores(model,
    batches)``, and ``.scores(samples)`` the criterion on a subset of the samples, with no further model run.

    Args:
        model: the model to score; it is only skipped through, never modified.
        batches: calibration batches (dicts with 2-D ``input_ids``, optionally ``attention_mask`` and ``labels``).
        progress: show a progress bar.

    Returns:
        A ``SampleScores`` of summed NLL per sample and block, named "ppl", exponentiated.

    Raises:
        ValueError: if the model has fewer than 2 blocks, ``batches`` is invalid (as ``taylor_scores``), or the
            NLL without some block is not finite while the full model's is.
        FloatingPointError: if the full model's logits are NaN or inf (``raise_non_finite`` names where they start).
    """
    n_blocks = len(get_blocks(model))
    if n_blocks < 2:
        raise ValueError("the PPL criterion needs a model of at least 2 blocks (one must stay)")
    prepared, _ = _prepare(model, batches)
    with eval_mode(model), torch.inference_mode():
        nll = nll_without_blocks(model, prepared, range(n_blocks), progress)
        if not torch.isfinite(nll).all():
            _refuse_non_finite_model(model, prepared, "the PPL criterion")
    tokens = torch.cat([_targets_per_row(labels) for _, labels in prepared])
    samples = pd.RangeIndex(nll.shape[1], name="sample")
    return SampleScores(
        sums=pd.DataFrame(nll.T.numpy(), index=samples, columns=pd.RangeIndex(n_blocks, name="block")),
        tokens=pd.Series(tokens.numpy(), index=samples, name="tokens"),
        name="ppl",
        exponentiate=True,
    )


def ppl_scores(
    model: PreTrainedModel, batches: Sequence[Batch], *, cached: bool = True, progress: bool = True
) -> pd.Series:
    """Shortened LLaMA's PPL criterion: the perplexity of the model without each block, named "ppl".

    Higher perplexity without block i = block i is more important. Perplexity = exp(mean NLL over all real tokens
    of all batches).

    Args:
        model: the model to score; it is only skipped through, never modified.
        batches: calibration batches (dicts with 2-D ``input_ids`` and optionally ``attention_mask``).
        cached: compute it from cached block inputs (``helpers.fast.ppl_criterion``) in a little over half the time of
            ``cached=False``, the paper's loop of L pruned copies, kept as the reference.
        progress: show a progress bar.

    Returns:
        A Series named "ppl", indexed by ``block``.

    Raises:
        ValueError: if the model has fewer than 2 blocks, ``batches`` is invalid (as ``taylor_scores``), or the
            perplexity without some block is not finite while the full model's is.
        FloatingPointError: if the full model's logits are NaN or inf (``raise_non_finite`` names where they start).
    """
    n_blocks = len(get_blocks(model))
    if n_blocks < 2:
        raise ValueError("the PPL criterion needs a model of at least 2 blocks (one must stay)")
    if cached:
        return ppl_by_sample(model, batches, progress=progress).scores()
    prepared, n_tokens = _prepare(model, batches)
    with eval_mode(model), torch.inference_mode():
        nll = _naive_nll(model, prepared, progress)
        if not all(map(math.isfinite, nll)):
            _refuse_non_finite_model(model, prepared, "the PPL criterion")
    return block_scores([math.exp(total / n_tokens) for total in nll], "ppl")


def sleb_removal(
    model: PreTrainedModel,
    batches: Sequence[Batch],
    k: int | float,
    *,
    protect_first: int = 0,
    protect_last: int = 0,
    first_step: pd.Series | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """SLEB: remove the block whose removal raises perplexity least, re-score the rest on the pruned model, k times.

    Near-ties (``ties.TIE_RTOL``) go to the lower block index. The model is only skipped through (``skip_blocks``),
    never modified.

    Args:
        model: the model to prune.
        batches: calibration batches (dicts with 2-D ``input_ids`` and optionally ``attention_mask``).
        k: a block count (int) or a fraction of the blocks (float in (0, 1), see ``resolve_k``).
        protect_first: original blocks at the start that are never candidates (the "+" heuristic).
        protect_last: original blocks at the end that are never candidates.
        first_step: the first step's scores when computed already: the perplexity without each block on these same
            batches, indexed by block. SLEB's first step is the one-shot PPL criterion, so
            ``ppl_by_sample(model, all_batches).scores(rows)`` gives it without another pass; None computes it.
        progress: show a progress bar.

    Returns:
        A frame indexed by ``step`` (1..k) with ``block`` (original index removed at that step) and ``ppl``
        (calibration perplexity once the blocks of steps 1..step are removed); ``frame["block"].tolist()`` are the
        blocks to remove.

    Raises:
        TypeError: if ``k`` is not a number (``resolve_k``), ``protect_first`` or ``protect_last`` is not an
            integer, or ``first_step`` is neither None nor a pandas Series.
        ValueError: if ``k`` is invalid (``resolve_k``), the protected blocks leave fewer than k candidates,
            ``batches`` is invalid (as ``taylor_scores``), a perplexity is not finite while the model's is, or
            ``first_step`` lacks a candidate block or holds a value that is not a finite positive perplexity.
        FloatingPointError: if the model's logits (with the blocks removed so far) are NaN or inf.
    """
    n_blocks = len(get_blocks(model))
    count = resolve_k(k, n_blocks)
    candidates = removable_blocks(n_blocks, count, protect_first=protect_first, protect_last=protect_last)
    given = None if first_step is None else _first_step_scores(first_step, candidates)
    prepared, n_tokens = _prepare(model, batches)
    removed, rows = [], []
    with eval_mode(model), torch.inference_mode():
        for step in progress_bar(range(1, count + 1), "SLEB", progress):
            if step == 1 and given is not None:
                ppl = given
            else:
                ppl = _sleb_step(model, prepared, n_tokens, removed, [b for b in candidates if b not in removed])
            block = int(first_minimum(ppl))  # near-ties (TIE_RTOL) go to the lower block index
            removed.append(block)
            rows.append({"step": step, "block": block, "ppl": ppl[block]})
    return pd.DataFrame(rows).set_index("step")


def _sleb_step(
    model: PreTrainedModel, prepared: list, n_tokens: int, removed: list[int], scored: list[int]
) -> pd.Series:
    """Calibration perplexity of the model without ``removed`` and each block of ``scored`` in turn."""
    kept = [b for b in range(len(get_blocks(model))) if b not in removed]
    with skip_blocks(model, removed):
        nll = nll_without_blocks(model, prepared, [kept.index(b) for b in scored], progress=False)
        nll = nll.sum(dim=1).tolist()
        if not all(map(math.isfinite, nll)):
            _refuse_non_finite_model(model, prepared, "SLEB's perplexity")
    return block_scores([math.exp(total / n_tokens) for total in nll], "ppl", blocks=scored)


def _first_step_scores(first_step: object, candidates: list[int]) -> pd.Series:
    """``first_step`` restricted to the candidates, refused when it cannot be SLEB's first step."""
    if not isinstance(first_step, pd.Series):
        kind = type(first_step).__name__
        raise TypeError(f"first_step must be a pandas Series indexed by block (or None); got {kind}")
    missing = [b for b in candidates if b not in first_step.index]
    if missing:
        raise ValueError(f"first_step has no score for candidate blocks {missing}; it must cover blocks {candidates}")
    values = first_step.loc[candidates]
    if not np.isfinite(values.to_numpy(float)).all() or (values <= 0).any():
        raise ValueError("first_step must hold finite positive perplexities; got " + values.to_string())
    return block_scores(values.to_numpy(float), "ppl", blocks=candidates)


def block_influence_by_sample(
    model: PreTrainedModel, batches: Sequence[Batch], *, progress: bool = True
) -> SampleScores:
    """Block Influence (``block_similarity``'s ``block_influence``) kept per sample: each row of each batch is
    measured on its own, so ``.scores(samples)`` is Block Influence on any subset of the samples.

    Any ``labels`` in the batches are ignored: Block Influence averages over every real token's hidden state.

    Args:
        model: the model to measure.
        batches: dicts with 2-D ``input_ids`` and optionally ``attention_mask``.
        progress: show a progress bar.

    Returns:
        A ``SampleScores`` of summed 1 - cos per sample and block, named "block_influence".

    Raises:
        ValueError, TypeError: as ``block_similarity``.
    """
    rows = [
        {name: batch[name][row : row + 1] for name in ("input_ids", "attention_mask") if name in batch}
        for batch in batches
        for row in range(len(batch["input_ids"]))
    ]
    sums, tokens = [], []
    for single in progress_bar(rows, "Block Influence by sample", progress):
        blocks = block_similarity(model, [single], progress=False).blocks
        count = int(blocks["tokens"].iloc[0])
        sums.append((blocks["block_influence"] * count).to_numpy())
        tokens.append(count)
    samples = pd.RangeIndex(len(rows), name="sample")
    return SampleScores(
        sums=pd.DataFrame(sums, index=samples, columns=pd.RangeIndex(len(sums[0]), name="block")),
        tokens=pd.Series(tokens, index=samples, name="tokens"),
        name="block_influence",
    )


def split_half_agreement(
    profiles: Mapping[str, SampleScores],
    *,
    blocks: Sequence[int],
    k: int,
    splits: int = 5,
    seed: int = 0,
    protect_first: int = 0,
    protect_last: int = 0,
) -> pd.DataFrame:
    """How far two halves of one calibration set agree (resampling noise) and halves of two sets agree (noise plus
    the data's effect), for one criterion.

    Each split cuts every set's samples into two disjoint random halves (``disjoint_draws``, seed ``seed + split``)
    and scores each half. For every pair of halves compared, it gives Spearman's rho over ``blocks`` and how many of
    the ``k`` blocks each half would remove (``select_blocks`` with the protection) are the same. Same-set pairs
    (half 0 vs half 1 of one set) show what resampling alone does; cross-set pairs compare half h of one set with
    half h of another, so both sides always have the same sizes as the noise pairs.

    Args:
        profiles: per calibration set, the criterion kept per sample (``ppl_by_sample``, ``block_influence_by_sample``).
        blocks: the blocks to correlate over (e.g. the removable ones).
        k: how many blocks a selection removes.
        splits: how many random splits.
        seed: seed of the first split.
        protect_first: blocks at the start a selection never removes.
        protect_last: blocks at the end a selection never removes.

    Returns:
        One row per split and pair: ``split``, ``first``, ``second`` (set names; equal for a same-set pair),
        ``spearman``, ``overlap`` (blocks in common, 0..k) and ``units`` (the scored tokens of the smaller half).

    Raises:
        ValueError: if a set has fewer than 2 samples; as ``rank_correlation`` and ``select_blocks``.
        TypeError: as ``disjoint_draws`` and ``select_blocks``.
    """
    names = list(profiles)
    rows = []
    for split in range(splits):
        halves = {}
        for name, profile in profiles.items():
            if profile.n_samples < 2:
                raise ValueError(f"{name!r} has {profile.n_samples} sample(s); splitting in halves needs 2 or more")
            draws = disjoint_draws(
                range(profile.n_samples), n_draws=2, n_samples=profile.n_samples // 2, seed=seed + split
            )
            halves[name] = [(profile.scores(draw), int(profile.tokens.loc[list(draw)].sum())) for draw in draws]
        pairs = [(name, name, 0, 1) for name in names]
        pairs += [(a, b, h, h) for i, a in enumerate(names) for b in names[i + 1 :] for h in (0, 1)]
        for first, second, h1, h2 in pairs:
            (x, x_units), (y, y_units) = halves[first][h1], halves[second][h2]
            chosen = [set(select_blocks(s, k, protect_first=protect_first, protect_last=protect_last)) for s in (x, y)]
            rho = rank_correlation(x.loc[list(blocks)], y.loc[list(blocks)])["spearman"]
            rows.append(
                {
                    "split": split,
                    "first": first,
                    "second": second,
                    "spearman": rho,
                    "overlap": len(chosen[0] & chosen[1]),
                    "units": min(x_units, y_units),
                }
            )
    return pd.DataFrame(rows)


def resampling_verdict(agreement: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Whether two calibration sets disagree beyond resampling noise, from ``split_half_agreement``.

    For each measure (``spearman``, ``overlap``), the noise range is that of the same-set pairs of ``first`` and of
    ``second``, the data range that of the ``first`` vs ``second`` pairs. The verdict is "beyond resampling noise"
    only when every cross-set value lies below every same-set value (the two ranges do not touch), else "within
    resampling noise": resampling alone can produce that much disagreement. Where some half holds fewer than
    ``MIN_UNITS`` scored tokens, its scores are too noisy to measure the noise with: the verdict is ``TOO_FEW``.

    Args:
        agreement: the frame ``split_half_agreement`` returns.
        first: one set's name.
        second: the other's.

    Returns:
        One row per measure (index ``measure``) with ``noise_min``, ``noise_max``, ``data_min``, ``data_max``,
        ``units`` (the fewest scored tokens in a half) and ``verdict``.

    Raises:
        ValueError: if ``agreement`` has no same-set or no cross-set pair for these names.
    """
    same = agreement[(agreement["first"] == agreement["second"]) & agreement["first"].isin([first, second])]
    crossed = {(first, second), (second, first)}
    cross = agreement[[pair in crossed for pair in zip(agreement["first"], agreement["second"])]]
    if same.empty or cross.empty:
        raise ValueError(f"agreement has no same-set or no cross-set pairs for {first!r} and {second!r}")
    units = int(min(same["units"].min(), cross["units"].min()))
    rows = {}
    for measure in ("spearman", "overlap"):
        noise, data = same[measure], cross[measure]
        beyond = data.max() < noise.min()
        rows[measure] = {
            "noise_min": noise.min(),
            "noise_max": noise.max(),
            "data_min": data.min(),
            "data_max": data.max(),
            "units": units,
            "verdict": TOO_FEW if units < MIN_UNITS else BEYOND_NOISE if beyond else WITHIN_NOISE,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("measure")
