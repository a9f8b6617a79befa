"""Look inside a forward pass: PyTorch forward hooks on the transformer blocks, always removed afterwards.

A forward hook is a function PyTorch calls right after a module's ``forward`` with the module's inputs and output.
On a transformer block the interesting input is the hidden state it receives and the interesting output the hidden
state it returns. Families deliver these differently (the state as first positional argument or as the keyword
``hidden_states``; a tensor or a tuple whose first element is the state), so ``block_hooks`` hides that and calls
``fn(index, block_input, block_output)``. The hooks never change what the model computes, and they are removed on
exit even when the forward pass raises, so a failed experiment never leaves a silently modified model behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple, NoReturn

import torch
from transformers import PreTrainedModel

from .blocks import check_block_indices, check_decoder, get_blocks

BlockFn = Callable[[int, torch.Tensor, torch.Tensor], None]
"""``fn(block_index, block_input, block_output)``: the hidden states entering and leaving one block."""


def hidden_input(args: tuple, kwargs: Mapping) -> torch.Tensor:
    """The hidden state a block received: its first positional argument, else the ``hidden_states`` keyword.

    Args:
        args: the block's positional arguments, as a forward hook receives them.
        kwargs: its keyword arguments.

    Returns:
        The hidden-state tensor.

    Raises:
        TypeError: if that argument is missing or not a tensor.
    """
    state = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(state, torch.Tensor):
        raise TypeError(
            f"cannot find the block's hidden state: expected a tensor as first positional argument or as keyword "
            f"'hidden_states', got positional {[type(a).__name__ for a in args]} and keywords {sorted(kwargs)}"
        )
    return state


def hidden_output(output: object) -> torch.Tensor:
    """The hidden state a block returned: the output itself, or element 0 of a tuple (older and some families).

    Args:
        output: the block's output, as a forward hook receives it.

    Returns:
        The hidden-state tensor.

    Raises:
        TypeError: if no tensor is found there.
    """
    state = output if isinstance(output, torch.Tensor) else output[0]
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"cannot find the hidden state in the block's output of type {type(output).__name__}")
    return state


def _check_blocks(blocks: Iterable[int] | None, n_blocks: int) -> list[int]:
    return list(range(n_blocks)) if blocks is None else check_block_indices(blocks, n_blocks, allow_all=True)


@contextmanager
def block_hooks(model: PreTrainedModel, fn: BlockFn, blocks: Iterable[int] | None = None) -> Iterator[None]:
    """Inside the ``with``, every forward pass calls ``fn(index, block_input, block_output)`` for each hooked block.

    The tensors are the live ones, on the block's own device, possibly with gradients: reduce them there and keep
    only small results (``.detach()`` what you keep). The hooks observe only (``fn``'s return value is ignored) and are
    removed on exit, also when the forward pass raises. With ``accelerate``'s ``device_map`` the input of a block can
    still sit on the previous block's device (hooks see the arguments before accelerate moves them); the output is
    always on the block's device. A forward pass inside the ``with`` raises TypeError when a block's hidden state
    cannot be found (``hidden_input``, ``hidden_output``).

    Args:
        model: the model whose blocks are hooked.
        fn: called as ``fn(index, block_input, block_output)``; ``index`` is the block's position in the block list.
        blocks: 0-based indices of the blocks to hook; None hooks all.

    Raises:
        ValueError: for invalid ``blocks`` (``check_block_indices``; all blocks are allowed) or a model whose block
            list cannot be found (``block_path``).
        TypeError: if ``blocks`` is a string or not iterable, or holds something other than an integer
            (``check_block_indices``).
    """
    block_list = get_blocks(model)
    indices = _check_blocks(blocks, len(block_list))

    def hook_for(index: int):
        def hook(module, args, kwargs, output):
            fn(index, hidden_input(args, kwargs), hidden_output(output))

        return hook

    handles = []
    try:
        for index in indices:
            handles.append(block_list[index].register_forward_hook(hook_for(index), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the duration; every module's own training flag is restored on exit.

    Args:
        model: the module to put in eval mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def head_only_at(model: PreTrainedModel, where: torch.Tensor) -> Iterator[None]:
    """Inside, the output head runs only on the positions ``where`` selects: logits come out as (selected, vocab),
    the selected positions in row-major order.

    The head (vocab x hidden) costs as much as several blocks of a small model, and a log-likelihood reads only a
    few positions. Anything applied to the logits afterwards (e.g. Gemma-2's soft-capping) is element-wise and works
    on the shorter input. The hook is removed on exit.

    Args:
        model: a causal LM with an output head (``get_output_embeddings``).
        where: bool, (batch, seq_len) of the head's input, True where a logit is needed.
    """
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda m, args: (args[0][where.to(args[0].device)],)
    )
    try:
        yield
    finally:
        handle.remove()


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the token ids must go: the device of the input embedding (the first device under a ``device_map``).

    Args:
        model: a transformers model.

    Returns:
        The device of its input embedding weights.

    Raises:
        ValueError: for a model that cannot run (``check_decoder``: not decoder-only, or weights on the meta device).
    """
    check_decoder(model, "weights")
    return model.get_input_embeddings().weight.device


def check_positions(model: PreTrainedModel, tokens: int, what: str) -> None:
    """Refuse a sequence longer than the model's ``max_position_embeddings`` (when its config gives one).

    Beyond them a model runs on positions it never learned (or fails inside), so a measurement there measures
    extrapolation, not the model.

    Args:
        model: the model (its decoder config is read).
        tokens: the sequence length to be run.
        what: how the caller names that length, for the message (e.g. "seq_len=200").

    Raises:
        ValueError: if ``tokens`` exceeds the model's positions.
    """
    limit = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    if isinstance(limit, int) and tokens > limit:
        raise ValueError(
            f"{what} is longer than the {limit} positions the model was built for (max_position_embeddings); "
            f"there it would measure extrapolation, not the model. Use at most {limit} tokens."
        )


def run_model(model: PreTrainedModel, batch: Mapping[str, torch.Tensor]) -> object:
    """One analysis forward pass: eval mode, no gradients, no KV cache; the batch is moved to the input device.

    The model's training flags are restored afterwards.

    Args:
        model: the model to run.
        batch: its keyword inputs (``input_ids``, ``attention_mask``...); tensors are moved, other values passed as
            they are.

    Returns:
        The model's output (logits etc.).
    """
    device = input_device(model)
    inputs = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    with eval_mode(model), torch.no_grad():
        return model(**inputs, use_cache=False)


class BlockIO(NamedTuple):
    """What one block received and returned in a recorded forward pass (on the CPU, detached).

    Attributes:
        input: the hidden state entering the block (reduced, when ``record_block_io`` was given ``reduce``).
        output: the hidden state it returned (likewise).
    """

    input: torch.Tensor
    output: torch.Tensor


def record_block_io(
    model: PreTrainedModel,
    batch: Mapping[str, torch.Tensor],
    *,
    blocks: Iterable[int] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[int, BlockIO]:
    """Run one forward pass on ``batch`` and return what each hooked block received and returned.

    Meant for small, teaching-sized looks inside a model: for statistics over many batches, reduce inside
    ``block_hooks`` instead of recording everything.

    Args:
        model: the model to run (``run_model``: eval mode, no gradients).
        batch: its keyword inputs.
        blocks: 0-based indices of the blocks to record; None records all.
        reduce: applied to each state on the block's device before it is copied to the CPU (e.g. ``lambda h: h[:, -1]``
            for the last position), so only what you ask for is kept; None keeps whole states.

    Returns:
        ``{block index: BlockIO(input, output)}`` in block order, tensors detached and on the CPU.

    Raises:
        ValueError: as ``block_hooks``.
        TypeError: as ``block_hooks``; if a block's hidden state cannot be found (``hidden_input``,
            ``hidden_output``).
    """
    records: dict[int, BlockIO] = {}

    def keep(state: torch.Tensor) -> torch.Tensor:
        return (state if reduce is None else reduce(state)).detach().cpu()

    def record(index: int, block_input: torch.Tensor, block_output: torch.Tensor) -> None:
        records[index] = BlockIO(keep(block_input), keep(block_output))

    with block_hooks(model, record, blocks):
        run_model(model, batch)
    return dict(sorted(records.items()))


def non_finite_origin(model: PreTrainedModel, batch: Mapping[str, torch.Tensor]) -> str | None:
    """Where a forward pass on ``batch`` first produces NaN or inf, or None when its logits are all finite.

    One hooked pass (``run_model``) checks the real tokens (``attention_mask``) entering block 0 and leaving every
    block. A NaN then propagates to everything after it, which is why the first place matters: the criteria that remove
    one block at a time would otherwise blame every other block.

    Args:
        model: the model to run.
        batch: its keyword inputs; an ``attention_mask`` restricts the check to real tokens.

    Returns:
        "the embeddings (the input of block 0)"; "block i" (its index in the current block list); "the final norm or
        the LM head (every block's output is finite)"; or None when the logits are finite.

    Raises:
        ValueError: as ``block_hooks``.
        TypeError: if a block's hidden state cannot be found (``hidden_input``, ``hidden_output``).
    """
    mask = batch.get("attention_mask")
    origins: list[str] = []

    def finite(state: torch.Tensor) -> bool:
        real = state if mask is None else state[mask.to(state.device).bool()]
        return bool(torch.isfinite(real).all())

    def watch(index: int, block_input: torch.Tensor, block_output: torch.Tensor) -> None:
        if not origins and index == 0 and not finite(block_input):
            origins.append("the embeddings (the input of block 0)")
        if not origins and not finite(block_output):
            origins.append(f"block {index}")

    with block_hooks(model, watch):
        logits = run_model(model, batch).logits
    if origins:
        return origins[0]
    return None if finite(logits) else "the final norm or the LM head (every block's output is finite)"


def raise_non_finite(model: PreTrainedModel, batch: Mapping[str, torch.Tensor], what: str) -> NoReturn:
    """Raise for ``what`` that came out NaN or inf on ``batch``, naming where the model first produces a non-finite
    value (``non_finite_origin``). Called once a result is found non-finite.

    Args:
        model: the model that gave the non-finite result.
        batch: the inputs it gave it on.
        what: the result's name for the message (e.g. "perplexity").

    Raises:
        FloatingPointError: always; the message names the origin, or says that a second pass was finite.
    """
    origin = non_finite_origin(model, batch)
    where = f"first produced by {origin}" if origin else "although a second pass on the same batch was finite"
    raise FloatingPointError(
        f"{what} is not finite: the model's outputs contain NaN or inf, {where}. Check that part's weights for "
        "NaN/inf (or run in float32 if it overflows in half precision)."
    )
