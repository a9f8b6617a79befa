"""Healing a pruned model: a short LoRA fine-tune that lets the remaining blocks adapt to the missing ones.

Shortened LLaMA (Kim et al., 2024) retrains every pruned model with LoRA (rank 8, alpha 16, on all linear
projections of the blocks) for two epochs of Alpaca-cleaned. ``heal_with_lora`` runs the same recipe at toy scale:
next-token loss on fixed-length windows of plain text, cut exactly as ``helpers.perplexity`` cuts them, in a seeded
order. The adapters are merged into the weights at the end, so the result is an ordinary transformers model that
``save_pretrained`` writes and every evaluation function takes; the model passed in is never modified.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import pandas as pd
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from .blocks import check_decoder, get_blocks
from .checks import check_int
from .hooks import input_device
from .perplexity import joined_ids, next_token_nll, window_layout
from .pruning import prune_blocks
from .settings import progress_bar

ALL_LINEAR = "all-linear"
"""peft's targeting of every linear layer (``nn.Linear``, and GPT-2's transformers ``Conv1D``) but the output head:
in a decoder-only LM, the attention and MLP projections of the blocks, the layers the paper adapts."""
LINEAR_LAYERS = (torch.nn.Linear, Conv1D)
"""The layer types ``ALL_LINEAR`` adapts (peft's own list)."""


def lora_targets(model: PreTrainedModel, target_modules: Sequence[str] | None = None) -> str | list[str]:
    """What LoRA adapts, as ``LoraConfig(target_modules=...)`` takes it.

    A name that matches nothing is an error rather than a silently smaller adapter.

    Args:
        model: the model to adapt.
        target_modules: endings of the blocks' linear layer names (e.g. ``["q_proj", "v_proj"]``, or ``["c_attn"]``
            for GPT-2); None for ``ALL_LINEAR``.

    Returns:
        ``ALL_LINEAR`` for None, else the full names of the blocks' linear layers whose name ends with one of
        ``target_modules``.

    Raises:
        TypeError: if ``target_modules`` is a single string or holds something that is not a string.
        ValueError: if ``target_modules`` is empty, a name matches no linear layer in the blocks (the message lists
            the available ones), or the model's block list cannot be found (``block_path``).
    """
    if target_modules is None:
        return ALL_LINEAR
    if isinstance(target_modules, str) or not all(isinstance(name, str) for name in target_modules):
        raise TypeError(f"target_modules must be a list of module names or None; got {target_modules!r}")
    if not target_modules:
        raise ValueError("target_modules is empty; name at least one module, or pass None for every projection")
    blocks = get_blocks(model)
    list_name = next(name for name, module in model.named_modules() if module is blocks)
    linears = [
        f"{list_name}.{index}.{name}"
        for index, block in enumerate(blocks)
        for name, module in block.named_modules()
        if isinstance(module, LINEAR_LAYERS)
    ]
    available = sorted({name.rsplit(".", 1)[-1] for name in linears})
    unknown = [t for t in target_modules if not any(n.endswith(f".{t}") for n in linears)]
    if unknown:
        raise ValueError(f"target_modules {unknown} match no linear layer in the blocks; available: {available}")
    return [n for n in linears if any(n.endswith(f".{t}") for t in target_modules)]


def training_windows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Token windows of the joined texts, cut as ``helpers.perplexity`` cuts them.

    Texts are joined with blank lines and tokenized once; a ragged tail is dropped, so no window is padded.

    Args:
        tokenizer: the model's tokenizer.
        texts: the training texts.
        seq_len: tokens per window, BOS first when the tokenizer adds one.

    Returns:
        A long tensor of shape (n_windows, seq_len).

    Raises:
        TypeError: if ``texts`` is not a list of strings or ``seq_len`` not an integer.
        ValueError: if ``seq_len`` is too short for a window (``window_layout``), or the texts give fewer tokens than
            one window.
    """
    prefix, span = window_layout(tokenizer, texts, seq_len)
    ids = joined_ids(tokenizer, texts)
    n_windows = len(ids) // span
    if n_windows == 0:
        raise ValueError(f"the texts give {len(ids)} tokens, fewer than one window of {span} text tokens")
    text = ids[: n_windows * span].view(n_windows, span)
    return torch.cat([torch.tensor(prefix, dtype=torch.long).expand(n_windows, -1), text], dim=1)


def _window_order(n_windows: int, n_needed: int, generator: torch.Generator) -> torch.Tensor:
    """Window indices for ``n_needed`` training rows: seeded permutations of all windows, one after another."""
    epochs = -(-n_needed // n_windows)
    return torch.cat([torch.randperm(n_windows, generator=generator) for _ in range(epochs)])[:n_needed]


def heal_with_lora(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    remove: Sequence[int] = (),
    steps: int = 40,
    seq_len: int = 128,
    batch_size: int = 4,
    lr: float = 5e-4,
    rank: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] | None = None,
    seed: int = 0,
    merge: bool = True,
    progress: bool = True,
) -> tuple[PreTrainedModel | PeftModel, pd.Series]:
    """Train LoRA adapters on a copy of ``model`` without the blocks ``remove``; return it (merged) and its losses.

    ``model`` is left exactly as it was. Each step is one AdamW update (constant ``lr``) on ``batch_size`` windows
    drawn in a seeded order that covers every window before repeating one. Runs are repeatable for a given ``seed``
    (the global random state is left alone).

    Args:
        model: the model to heal; the adapters are trained on ``prune_blocks(model, remove)``.
        tokenizer: its tokenizer.
        texts: training text, cut into ``seq_len``-token windows (``training_windows``); use calibration texts, never
            the evaluation ones.
        remove: 0-based indices of the blocks to remove first; empty (default) trains on a plain copy, e.g. of a
            model pruned already.
        steps: how many optimiser steps.
        seq_len: tokens per training window.
        batch_size: windows per step.
        lr: the learning rate; the default is five times the paper's 1e-4, because a healing run here lasts a few
            dozen steps, not two epochs.
        rank: LoRA's r (paper: 8).
        alpha: LoRA's lora_alpha (paper: 16).
        dropout: LoRA's lora_dropout (paper: 0.05), in [0, 1).
        target_modules: see ``lora_targets`` (default: peft's "all-linear", every projection of the blocks, also
            GPT-2's ``Conv1D``).
        seed: seeds the window order, LoRA's initialisation and the dropout masks.
        merge: fold the adapters into the weights (``merge_and_unload``); False returns the ``PeftModel``.
        progress: show a progress bar.

    Returns:
        ``(healed, losses)``: an ordinary transformers model in eval mode (or the ``PeftModel`` in eval mode when
        ``merge=False``), and the training loss of each step (a Series named "loss", index ``step`` from 1), measured
        before that step's update.

    Raises:
        TypeError: if ``steps``, ``batch_size``, ``rank`` or ``seq_len`` is not an integer; as ``training_windows``
            and ``lora_targets``.
        ValueError: if ``steps``, ``batch_size`` or ``rank`` is below 1, ``lr`` is not positive, ``dropout`` is not
            in [0, 1); for a model that gives no next-token logits (``check_decoder``); as ``training_windows``,
            ``lora_targets`` and ``prune_blocks`` (for ``remove``).
    """
    check_decoder(model, "logits")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("rank", rank)):
        check_int(name, value)
    if not lr > 0:
        raise ValueError(f"lr must be positive; got {lr!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
    windows = training_windows(tokenizer, texts, seq_len)
    lora_targets(model, target_modules)  # check the names before copying anything

    student = prune_blocks(model, remove) if len(remove) else copy.deepcopy(model)
    flags = {name: p.requires_grad for name, p in student.named_parameters()}
    device = input_device(student)
    # Names resolved on the copy (its blocks are renumbered), so that peft matches exactly these modules.
    targets = lora_targets(student, target_modules)
    # Conv1D stores its weight transposed (fan_in_fan_out); peft would switch it per layer, with a warning each.
    transposed = any(isinstance(m, Conv1D) for m in get_blocks(student).modules())
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", fan_in_fan_out=transposed
    )
    generator = torch.Generator().manual_seed(seed)
    order = _window_order(len(windows), steps * batch_size, generator)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # LoRA's A initialisation and dropout masks
        with warnings.catch_warnings():
            # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`; the warning is not the user's.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            peft_model = get_peft_model(student, config)
        optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        peft_model.train()
        with torch.inference_mode(False), torch.enable_grad():
            for step in progress_bar(range(steps), "LoRA healing", progress):
                batch = windows[order[step * batch_size : (step + 1) * batch_size]].to(device)
                # Mean NLL over every token of the windows but the first (BOS or not, nothing predicts it).
                loss = next_token_nll(peft_model(input_ids=batch, use_cache=False).logits, batch, "mean")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
    peft_model.eval()
    series = pd.Series(losses, index=pd.RangeIndex(1, steps + 1, name="step"), name="loss")
    if not merge:
        return peft_model, series
    healed = peft_model.merge_and_unload()
    for name, p in healed.named_parameters():
        p.requires_grad_(flags[name])  # peft froze the base weights; give back the flags the copy had
    return healed.eval(), series
