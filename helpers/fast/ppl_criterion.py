"""Shortened LLaMA's PPL criterion (the perplexity without each block) from one pass that caches block inputs, on
packed rows: the same numbers as the paper's loop of pruned copies, in a little over half its time.

The paper runs a full pass of a pruned copy for each of the L blocks. Removing block i leaves blocks 0..i-1
untouched, so the model without block i is "cached input of block i, then blocks i+1..L-1, then the head": block i
costs L-1-i blocks instead of L-1, half the block work. The head still runs once per block (on scored tokens only),
so on SmolLM2-135M the whole criterion takes about 0.53-0.56 of the naive time (``benchmarks/bench_ppl.py``). Short
samples batched with long ones (SMS messages) would spend most of that on padding, so they are packed several to a
row, each seeing only itself (``_packed_runs``): chapter 5's 32 SMS samples run 1019 positions a pass instead of
1512, with the same scores up to float rounding (``benchmarks/bench_packing.py``).

``helpers.data_criteria`` is the front door (``ppl_scores``, ``ppl_by_sample``, ``sleb_removal``); it prepares the
batches and calls ``nll_without_blocks``. ``ppl_scores(..., cached=False)`` is the paper's loop, the reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
from transformers import PreTrainedModel

from ..blocks import get_blocks
from ..hooks import head_only_at, hidden_input, input_device
from ..perplexity import IGNORE, next_token_targets, token_nll
from ..pruning import skip_blocks
from ..settings import progress_bar
from .packing import MASK_CONVENTIONS, packed_mask, packs

Prepared = list[tuple[dict[str, torch.Tensor], torch.Tensor]]
"""(model inputs, labels) per calibration batch, on the model's input device, labels -100 where nothing is scored
(``helpers.data_criteria``'s ``_prepare``)."""


class _Captured(Exception):
    """Raised by the capture hook once the last block's input is stored: nothing after it is needed."""


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
    where, targets = next_token_targets(labels)
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


def _unpacked_runs(prepared: Prepared) -> list[_Run]:
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


def _packed_runs(model: PreTrainedModel, prepared: Prepared) -> list[_Run] | None:
    """The batches' samples packed several to a row, when that computes fewer positions than the batches; else None.

    A packed row holds whole samples one after another, each with position ids from 0 and a 4D mask that lets a token
    see only its own sample (``packing.packed_mask``), so every sample gets the logits it gets in a row of its
    own, up to float rounding; a sample's first token is not scored, as at the start of a row. Rows are at most as
    long as the widest batch, batched as many as the largest batch's positions allow. When the samples begin with
    the same unscored tokens (``_unscored_prefix``), a row holds them once, at its start and visible to every sample
    after it, whose positions go on from there, and rows may be as long as the largest batch. Only for right-padded
    batches of models ``packing.packs`` accepts. It pays where short samples share batches with long ones (SMS
    messages) or samples repeat the same examples (``sms_task_batches``).
    """
    if not packs(model) or not all(_right_padded(inputs["attention_mask"]) for inputs, _ in prepared):
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
        mask = packed_mask(segments, convention, model.dtype)
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}
        runs.append(_Run(inputs, labels.to(device), numbers))
    return runs


def positions_per_pass(model: PreTrainedModel, prepared: Prepared) -> int:
    """How many positions ``nll_without_blocks`` computes in one pass over ``prepared``: their padded size, or less
    where it packs them (``_packed_runs``)."""
    return sum(run.labels.numel() for run in _packed_runs(model, prepared) or _unpacked_runs(prepared))


def nll_without_blocks(
    model: PreTrainedModel, prepared: Prepared, candidates: Sequence[int], progress: bool
) -> torch.Tensor:
    """Summed next-token NLL of each row (all batches' rows in order) without each candidate block (positions in the
    current block list), from cached block inputs; short rows run packed where that saves work (``_packed_runs``).

    Args:
        model: the model (in eval mode, without gradients); it is only skipped through, never modified.
        prepared: the calibration batches as (inputs, labels).
        candidates: the blocks to leave out, one at a time.
        progress: show a progress bar.

    Returns:
        A float64 tensor (candidates, rows) on the CPU.
    """
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
