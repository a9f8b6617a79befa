"""Resume a variant from the full model's hidden states: blocks before the first removed one are not run again.

A variant that removes blocks ``f, ...`` computes, in blocks ``0..f-1``, exactly what the full model computes there:
the hidden state entering block ``f`` is the full model's. ``BlockInputs`` records, while a measurement runs on the
full model, the hidden states entering a few evenly spaced blocks (the checkpoints), one set per forward call, keyed
by that call's inputs. The same measurement on a variant then runs from the last checkpoint at or before its first
removed block: the blocks before it are skipped (``skip_blocks``) and the checkpoint's recorded state is fed to the
first block that runs. Same operations on the same inputs from there on: the same numbers, and for a selection in the
second half of the model less than half the work. The live panel (``helpers.widgets.LivePanel``) uses it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PreTrainedModel

from .blocks import get_blocks
from .checks import check_int
from .generation import cache_argument_name
from .hooks import hidden_input
from .pruning import skip_blocks

CHECKPOINTS = 10
"""Blocks whose inputs are recorded, at most: memory grows with them, and a variant runs at most
``ceil(blocks / CHECKPOINTS) - 1`` blocks more than it must."""


class MissingRecording(LookupError):
    """A forward call whose inputs were not seen while recording: the measurement differs from the recorded one."""


def _call_key(model: PreTrainedModel, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """What decides the hidden states of a forward call: its token ids, attention mask, positions and, where no
    positions are given, how many tokens its cache already holds."""
    kwargs = dict(zip(("input_ids", "attention_mask", "position_ids"), args)) | kwargs
    parts: list[Any] = []
    for name in ("input_ids", "attention_mask", "position_ids"):
        value = kwargs.get(name)
        parts.append(None if value is None else (tuple(value.shape), value.cpu().numpy().tobytes()))
    cache = kwargs.get(cache_argument_name(model))
    parts.append(cache.get_seq_length() if cache is not None and kwargs.get("position_ids") is None else None)
    return tuple(parts)


class BlockInputs:
    """The hidden states entering the checkpoint blocks of one model, per forward call of a recorded measurement."""

    def __init__(self, model: PreTrainedModel, *, checkpoints: int = CHECKPOINTS) -> None:
        """An empty recording for ``model`` (the full model).

        Args:
            model: the full model.
            checkpoints: how many blocks' inputs to record at most, evenly spaced from block ``every`` on (block 0's
                input is the embedding, which costs nothing to recompute).

        Raises:
            TypeError: if ``checkpoints`` is not an integer.
            ValueError: if ``checkpoints`` is below 1.
        """
        check_int("checkpoints", checkpoints)
        n_blocks = len(get_blocks(model))
        every = max(1, math.ceil(n_blocks / checkpoints))
        self.blocks = list(range(every, n_blocks, every))
        """The checkpoint blocks, whose inputs are recorded."""
        self._states: dict[tuple, dict[int, torch.Tensor]] = {}

    def __len__(self) -> int:
        """How many forward calls are recorded."""
        return len(self._states)

    def start(self, first_removed: int) -> int:
        """The block a variant whose first removed block is ``first_removed`` resumes at (0: from the start)."""
        return max((block for block in self.blocks if block <= first_removed), default=0)

    @contextmanager
    def record(self, model: PreTrainedModel) -> Iterator[PreTrainedModel]:
        """Inside, every forward call of ``model`` (the full model) records the states entering the checkpoints.

        Yields:
            ``model``, unchanged; the hooks are removed on exit, also after an exception.
        """
        states: dict[int, torch.Tensor] = {}

        def new_call(_: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            nonlocal states
            states = self._states.setdefault(_call_key(model, args, kwargs), {})

        def keep(index: int, args: tuple, kwargs: dict[str, Any]) -> None:
            states[index] = hidden_input(args, kwargs).detach().clone()

        blocks = get_blocks(model)
        handles = [model.register_forward_pre_hook(new_call, with_kwargs=True)] + [
            blocks[index].register_forward_pre_hook(
                lambda _, args, kwargs, index=index: keep(index, args, kwargs), with_kwargs=True
            )
            for index in self.blocks
        ]
        try:
            yield model
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def resume(self, variant: PreTrainedModel, first_removed: int) -> Iterator[PreTrainedModel]:
        """Inside, ``variant`` runs from block ``start(first_removed)`` on, fed the recorded full model's state.

        Args:
            variant: the full model with some blocks skipped, the first of them ``first_removed`` (its blocks before
                that one are the full model's, at the same indices).
            first_removed: the index of the first removed block.

        Yields:
            ``variant`` without the blocks before the checkpoint; restored on exit, also after an exception.

        Raises:
            MissingRecording: (from a forward call inside) for a call whose inputs were not recorded.
        """
        # At least one block must run: a variant without blocks after its first removed one resumes earlier.
        start = self.start(min(first_removed, len(get_blocks(variant)) - 1))
        if start == 0:
            yield variant
            return
        recorded: torch.Tensor | None = None

        def new_call(_: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            nonlocal recorded
            recorded = self._states.get(_call_key(variant, args, kwargs), {}).get(start)

        def feed(_: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
            if recorded is None:
                raise MissingRecording(f"no recorded input of block {start} for this forward call")
            if args:
                return (recorded, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": recorded}

        with skip_blocks(variant, range(start)) as shallow:
            handles = [
                shallow.register_forward_pre_hook(new_call, with_kwargs=True),
                get_blocks(shallow)[0].register_forward_pre_hook(feed, with_kwargs=True),
            ]
            try:
                yield shallow
            finally:
                for handle in handles:
                    handle.remove()
