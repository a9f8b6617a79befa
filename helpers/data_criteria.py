"""Data-driven block criteria of Shortened LLaMA (Kim et al., 2024) and SLEB (Song et al., 2024).

All of them look at calibration batches (``helpers.data.calibration_batches``: dicts of right-padded ``input_ids``
and ``attention_mask``; left-padded batches give the same scores); the loss is the next-token negative
log-likelihood over every real token (labels = ``input_ids`` with padding set to -100), or over the tokens a batch's
own ``labels`` mark (``sms_task_batches``: the answer token only). Every score is HIGHER = MORE IMPORTANT, like
every criterion in this package, and the model is left exactly as it was found (weights, training flag,
``requires_grad``, ``.grad``).

The perplexity criterion is the expensive one: the paper runs a full pass of a pruned copy for each of the L
blocks. ``ppl_scores`` computes the same numbers from one pass that caches the hidden state entering every block:
removing block i leaves blocks 0..i-1 untouched, so the model without block i is "cached input of block i, then
blocks i+1..L-1, then the head". Block i costs L-1-i blocks instead of L-1: half the block work. The head still
runs once per block (on real tokens only), so on SmolLM2-135M the whole criterion takes about 0.53-0.56 of the naive
time (``benchmarks/bench_ppl.py``). Short samples batched with long ones (SMS messages) would spend most of that on
padding, so they are packed several to a row, each seeing only itself (``_packed_runs``): chapter 5's 32 SMS samples
run 1019 positions a pass instead of 1512, with the same scores up to float rounding.

``ppl_by_sample`` and ``block_influence_by_sample`` keep each calibration sample's share of a score
(``SampleScores``), so the score of any subset of the samples costs no model run: ``split_half_agreement`` and
``resampling_verdict`` use that to measure how much two halves of one calibration set disagree by chance alone, the
baseline a difference between two datasets has to exceed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from .blocks import check_decoder, get_blocks
from .data import disjoint_draws
from .hooks import eval_mode, head_only_at, hidden_input, input_device, raise_non_finite, run_model
from .perplexity import IGNORE, token_nll
from .pruning import prune_blocks, skip_blocks
from .selection import removable_blocks, resolve_k, select_blocks
from .settings import progress_bar
from .similarity import block_similarity
from .static_criteria import WeightSet, block_scores, block_weights
from .statistics import rank_correlation
from .ties import first_minimum

# The packed scorer's mask and family check (zero_shot keeps the names private: its code is fingerprinted).
from .zero_shot import MASK_CONVENTIONS, _packed_mask, _packs

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


class _Captured(Exception):
    """Raised by the capture hook once the last block's input is stored: nothing after it is needed."""


def _targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(where, what): which positions predict a real next token, and those tokens."""
    where = labels[:, 1:] != IGNORE
    return where, labels[:, 1:][where]


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
    n_tokens = sum(len(_targets(labels)[1]) for _, labels in prepared)
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
                where, targets = _targets(labels)
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


def _block_inputs(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The hidden state entering each block in one forward pass (stopped as soon as the last one is known)."""
    blocks = get_blocks(model)
    states: list[torch.Tensor] = []

    def capture(module, args, kwargs):
        states.append(hidden_input(args, kwargs).clone())  # clone: a block may update its input in place
        if len(states) == len(blocks):
            raise _Captured

    handles = [block.register_forward_pre_hook(capture, with_kwargs=True) for block in blocks]
    try:
        model(**inputs, use_cache=False)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return states


@contextmanager
def _without_block(model: PreTrainedModel, index: int, state: torch.Tensor) -> Iterator[None]:
    """Run ``model`` as if block ``index`` were removed, given ``state``, the cached input of block ``index``.

    Blocks 0..index are skipped and the next block gets ``state`` instead of the embeddings. For the last block
    nothing follows, so blocks 0..L-2 are skipped and the last one passes ``state`` straight to the final norm.
    """
    blocks = get_blocks(model)
    last = index == len(blocks) - 1

    def feed(module, args, kwargs):
        if args:
            return (state, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": state}

    def identity(module, args, kwargs, output):
        return state if isinstance(output, torch.Tensor) else (state, *output[1:])

    if last:
        handle = blocks[index].register_forward_hook(identity, with_kwargs=True)
    else:
        handle = blocks[index + 1].register_forward_pre_hook(feed, with_kwargs=True)
    try:
        with skip_blocks(model, range(index if last else index + 1)):
            yield
    finally:
        handle.remove()


def _nll_by_sample(
    model: PreTrainedModel, inputs: dict[str, torch.Tensor], labels: torch.Tensor, samples: torch.Tensor, n: int
) -> torch.Tensor:
    """Summed next-token NLL of each of the ``n`` samples over its scored tokens (float64, on the CPU), ``samples``
    giving the sample of every position; the head only sees the positions that predict one."""
    where, targets = _targets(labels)
    # Position p predicts token p + 1, so the last position is never read.
    with head_only_at(model, torch.nn.functional.pad(where, (0, 1))):
        logits = model(**inputs, use_cache=False).logits
    per_token = token_nll(logits, targets).double().cpu()
    return torch.zeros(n, dtype=torch.float64).index_add_(0, samples[:, 1:][where.cpu()], per_token)


class _Run(NamedTuple):
    """One forward batch of the PPL criterion: model inputs, labels, and the calibration sample of every position."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    samples: torch.Tensor


def _unpacked_runs(prepared: list) -> list[_Run]:
    """The batches as given; a position's sample is its row's number across batches."""
    runs, offset = [], 0
    for inputs, labels in prepared:
        rows = torch.arange(offset, offset + len(labels))
        runs.append(_Run(inputs, labels, rows[:, None].expand(labels.shape)))
        offset += len(labels)
    return runs


def _right_padded(mask: torch.Tensor) -> bool:
    """True when every row of a 2-D 0/1 mask is ones, then zeros."""
    return mask.ndim == 2 and bool(((mask == 0) | (mask == 1)).all()) and bool((mask[:, 1:] <= mask[:, :-1]).all())


def _pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Samples (by index) packed into rows of at most ``width`` tokens: first fit, longest first."""
    rows: list[list[int]] = []
    used: list[int] = []
    for sample in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, total in enumerate(used) if total + lengths[sample] <= width), None)
        if row is None:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(sample)
        used[row] += lengths[sample]
    return rows


def _unscored_prefix(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """How many leading tokens all samples share with none of them scored, nor the token after (a few-shot prompt's
    solved examples when the loss reads only the answer): packed rows then hold them once. Each sample keeps at
    least one token of its own; 0 without such a prefix."""
    first, shared = samples[0][0], min(len(ids) for ids, _ in samples) - 1
    for ids, labels in samples:
        differ = (ids[:shared] != first[:shared]).nonzero()
        scored = (labels[1 : shared + 1] != IGNORE).nonzero()  # labels[p] is read at position p - 1
        shared = min([shared, *(int(d) for d in differ[:1]), *(int(s) for s in scored[:1])])
    return shared if len(samples) > 1 else 0


def _packed_runs(model: PreTrainedModel, prepared: list) -> list[_Run] | None:
    """The batches' samples packed several to a row, when that computes fewer positions than the batches; else None.

    A packed row holds whole samples one after another, each with position ids from 0 and a 4D mask that lets a token
    see only its own sample (``zero_shot``'s packed mask), so every sample gets the logits it gets in a row of its
    own, up to float rounding; a sample's first token is not scored, as at the start of a row. Rows are at most as
    long as the widest batch, batched as many as the largest batch's positions allow. When the samples begin with
    the same unscored tokens (``_unscored_prefix``), a row holds them once, at its start and visible to every sample
    after it, whose positions go on from there, and rows may be as long as the largest batch. Only for right-padded
    batches of models ``zero_shot._packs`` accepts. It pays where short samples share batches with long ones (SMS
    messages) or samples repeat the same examples (``sms_task_batches``).
    """
    if not _packs(model) or not all(_right_padded(inputs["attention_mask"]) for inputs, _ in prepared):
        return None
    samples = [  # (ids, labels) of every row's real tokens, rows numbered across batches
        (ids[real], row_labels[real])
        for inputs, labels in prepared
        for ids, row_labels, real in zip(inputs["input_ids"], labels, inputs["attention_mask"].bool())
    ]
    budget = max(labels.numel() for _, labels in prepared)
    prefix = _unscored_prefix(samples)
    width = budget if prefix else max(labels.shape[1] for _, labels in prepared)
    rows = _pack_rows([len(ids) - prefix for ids, _ in samples], width - prefix)
    per_batch = max(1, budget // width)
    batches = [rows[start : start + per_batch] for start in range(0, len(rows), per_batch)]
    lengths = [[prefix + sum(len(samples[i][0]) - prefix for i in row) for row in part] for part in batches]
    if sum(len(part) * max(part) for part in lengths) >= sum(labels.numel() for _, labels in prepared):
        return None
    device, convention = input_device(model), MASK_CONVENTIONS[model.config._attn_implementation]
    runs = []
    for part, part_lengths in zip(batches, lengths):
        shape = (len(part), max(part_lengths))
        ids, positions = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
        labels, segments, numbers = (torch.full(shape, value, dtype=torch.long) for value in (IGNORE, -1, -1))
        for b, row in enumerate(part):
            # segment 0, seen by every later token of the row: the shared prefix (unscored, so no sample's)
            ids[b, :prefix], positions[b, :prefix] = samples[0][0][:prefix].cpu(), torch.arange(prefix)
            segments[b, :prefix] = 0
            at = prefix
            for segment, number in enumerate(row, start=1):
                sample_ids, sample_labels = samples[number][0][prefix:], samples[number][1][prefix:]
                span = slice(at, at + len(sample_ids))
                ids[b, span], labels[b, span] = sample_ids.cpu(), sample_labels.cpu()
                labels[b, at] = IGNORE  # the token before it in the row is not its own sample's
                positions[b, span] = torch.arange(prefix, prefix + len(sample_ids))
                segments[b, span], numbers[b, span] = segment, number
                at += len(sample_ids)
        mask = _packed_mask(segments, convention, model.dtype)
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}
        runs.append(_Run(inputs, labels.to(device), numbers))
    return runs


def ppl_positions(model: PreTrainedModel, batches: Sequence[Batch]) -> int:
    """How many positions the PPL criterion (``ppl_scores``, ``ppl_by_sample``) computes in one pass over
    ``batches``: their padded size, or less where it packs them (see the module docstring). It runs L + 1 such passes,
    most of them through part of the blocks only.

    Raises:
        ValueError: if ``batches`` is invalid (as ``taylor_scores``).
    """
    prepared, _ = _prepare(model, batches)
    return sum(run.labels.numel() for run in _packed_runs(model, prepared) or _unpacked_runs(prepared))


def _cached_nll(model: PreTrainedModel, prepared: list, candidates: Sequence[int], progress: bool) -> torch.Tensor:
    """Summed NLL of each row (all batches' rows in order) without each candidate block (positions in the current
    block list): shape (candidates, rows). Short rows run packed where that saves work (``_packed_runs``)."""
    n_rows = sum(len(labels) for _, labels in prepared)
    runs = _packed_runs(model, prepared) or _unpacked_runs(prepared)
    states = [_block_inputs(model, run.inputs) for run in runs]
    nll = []
    for index in progress_bar(candidates, "PPL without each block", progress):
        total = torch.zeros(n_rows, dtype=torch.float64)
        for run, cached in zip(runs, states):
            with _without_block(model, index, cached[index]):
                total += _nll_by_sample(model, run.inputs, run.labels, run.samples, n_rows)
        nll.append(total)
    return torch.stack(nll)


def _naive_nll(model: PreTrainedModel, prepared: list, progress: bool) -> list[float]:
    """The paper's loop: for each block a pruned copy and ordinary forward passes with labels."""
    nll = []
    for index in progress_bar(range(len(get_blocks(model))), "PPL without each block (naive)", progress):
        pruned = prune_blocks(model, [index])
        total = 0.0
        for inputs, labels in prepared:
            # transformers' loss is the mean over the batch's real tokens: weight it back by their number.
            loss = pruned(**inputs, labels=labels, use_cache=False).loss
            total += loss.item() * len(_targets(labels)[1])
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
        nll = _cached_nll(model, prepared, range(n_blocks), progress)
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
        cached: compute it from cached block inputs (see the module docstring) in a little over half the time of
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
        progress: show a progress bar.

    Returns:
        A frame indexed by ``step`` (1..k) with ``block`` (original index removed at that step) and ``ppl``
        (calibration perplexity once the blocks of steps 1..step are removed); ``frame["block"].tolist()`` are the
        blocks to remove.

    Raises:
        TypeError: if ``k`` is not a number (``resolve_k``), or ``protect_first`` or ``protect_last`` is not an
            integer.
        ValueError: if ``k`` is invalid (``resolve_k``), the protected blocks leave fewer than k candidates,
            ``batches`` is invalid (as ``taylor_scores``), or a perplexity is not finite while the model's is.
        FloatingPointError: if the model's logits (with the blocks removed so far) are NaN or inf.
    """
    n_blocks = len(get_blocks(model))
    count = resolve_k(k, n_blocks)
    candidates = removable_blocks(n_blocks, count, protect_first=protect_first, protect_last=protect_last)
    prepared, n_tokens = _prepare(model, batches)
    removed, rows = [], []
    with eval_mode(model), torch.inference_mode():
        for step in progress_bar(range(1, count + 1), "SLEB", progress):
            kept = [b for b in range(n_blocks) if b not in removed]
            with skip_blocks(model, removed):
                scored = [b for b in candidates if b not in removed]
                nll = _cached_nll(model, prepared, [kept.index(b) for b in scored], progress=False).sum(dim=1).tolist()
                if not all(map(math.isfinite, nll)):
                    _refuse_non_finite_model(model, prepared, "SLEB's perplexity")
            ppl = block_scores([math.exp(total / n_tokens) for total in nll], "ppl", blocks=scored)
            block = int(first_minimum(ppl))  # near-ties (TIE_RTOL) go to the lower block index
            removed.append(block)
            rows.append({"step": step, "block": block, "ppl": ppl[block]})
    return pd.DataFrame(rows).set_index("step")


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
        ``spearman`` and ``overlap`` (blocks in common, 0..k).

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
            halves[name] = [profile.scores(draw) for draw in draws]
        pairs = [(name, name, 0, 1) for name in names]
        pairs += [(a, b, h, h) for i, a in enumerate(names) for b in names[i + 1 :] for h in (0, 1)]
        for first, second, h1, h2 in pairs:
            x, y = halves[first][h1], halves[second][h2]
            chosen = [set(select_blocks(s, k, protect_first=protect_first, protect_last=protect_last)) for s in (x, y)]
            rho = rank_correlation(x.loc[list(blocks)], y.loc[list(blocks)])["spearman"]
            rows.append(
                {
                    "split": split,
                    "first": first,
                    "second": second,
                    "spearman": rho,
                    "overlap": len(chosen[0] & chosen[1]),
                }
            )
    return pd.DataFrame(rows)


def resampling_verdict(agreement: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Whether two calibration sets disagree beyond resampling noise, from ``split_half_agreement``.

    For each measure (``spearman``, ``overlap``), the noise range is that of the same-set pairs of ``first`` and of
    ``second``, the data range that of the ``first`` vs ``second`` pairs. The verdict is "beyond resampling noise"
    only when every cross-set value lies below every same-set value (the two ranges do not touch), else "within
    resampling noise": resampling alone can produce that much disagreement.

    Args:
        agreement: the frame ``split_half_agreement`` returns.
        first: one set's name.
        second: the other's.

    Returns:
        One row per measure (index ``measure``) with ``noise_min``, ``noise_max``, ``data_min``, ``data_max`` and
        ``verdict``.

    Raises:
        ValueError: if ``agreement`` has no same-set or no cross-set pair for these names.
    """
    same = agreement[(agreement["first"] == agreement["second"]) & agreement["first"].isin([first, second])]
    crossed = {(first, second), (second, first)}
    cross = agreement[[pair in crossed for pair in zip(agreement["first"], agreement["second"])]]
    if same.empty or cross.empty:
        raise ValueError(f"agreement has no same-set or no cross-set pairs for {first!r} and {second!r}")
    rows = {}
    for measure in ("spearman", "overlap"):
        noise, data = same[measure], cross[measure]
        rows[measure] = {
            "noise_min": noise.min(),
            "noise_max": noise.max(),
            "data_min": data.min(),
            "data_max": data.max(),
            "verdict": BEYOND_NOISE if data.max() < noise.min() else WITHIN_NOISE,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("measure")
