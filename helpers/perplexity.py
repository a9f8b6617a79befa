"""Perplexity on held-out text, computed over fixed-length token windows of the concatenated texts.

The texts are joined and tokenized once, then cut into windows that are all exactly ``seq_len`` tokens long: no
padded rows (padding changes what a row's tokens can attend to and mixes short rows into the average) and a ragged
tail shorter than a window is dropped. Each window's NLL sum and token count are kept, so that ``perplexity_ci``
can resample windows with the bootstrap of ``helpers.statistics``, and ``perplexity_difference`` can compare two
models evaluated on the same text window by window.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .blocks import check_decoder
from .checks import check_int, check_texts
from .hooks import check_positions, eval_mode, input_device, raise_non_finite
from .settings import progress_bar
from .statistics import ConfidenceInterval, bootstrap_ci, paired_difference

IGNORE = -100
"""Label value of a position that is not scored."""


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of a model on a text, with the per-window numbers the bootstrap resamples.

    Attributes:
        ppl: the perplexity, ``exp(nll)``.
        nll: mean negative log-likelihood (nats) per scored token, ``window_nll.sum() / window_tokens.sum()``.
        n_tokens: how many tokens were scored.
        window_nll: NLL sum of each window, in text order.
        window_tokens: scored-token count of each window, in text order.
        seq_len: the window length in tokens.
        stride: how many tokens each window moved on from the previous one.
        window_ids: the token ids of each window, one row per window: the units, which two results must share to
            be paired (``perplexity_difference``).
    """

    ppl: float
    nll: float
    n_tokens: int
    window_nll: np.ndarray
    window_tokens: np.ndarray
    seq_len: int
    stride: int
    window_ids: np.ndarray


Reduction = Literal["none", "sum", "mean"]


def token_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: Reduction = "none") -> torch.Tensor:
    """Negative log-likelihood (nats, float32) of each target token under the logits at the same place.

    The package's one cross-entropy. Targets are moved to the logits' device (the output head's, under an accelerate
    ``device_map``).

    Args:
        logits: shape (..., vocab).
        targets: token ids, shape (...) lined up with ``logits``; ``IGNORE`` targets give 0.
        reduction: "none" (one value per target), or the "sum" or "mean" over the scored targets, added up inside the
            loss kernel.

    Returns:
        A float32 tensor shaped like ``targets`` for "none", else a scalar.
    """
    targets = targets.to(logits.device)
    nll = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE, reduction=reduction)
    return nll.view_as(targets) if reduction == "none" else nll


def next_token_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "none") -> torch.Tensor:
    """``token_nll`` of the next token: ``logits[:, p]`` scores ``labels[:, p + 1]``.

    Args:
        logits: shape (batch, seq_len, vocab).
        labels: the input ids, shape (batch, seq_len), with ``IGNORE`` where a token is not scored (padding, context).
        reduction: "none", "sum" or "mean", as in ``token_nll``.

    Returns:
        Shape (batch, seq_len - 1) for "none", else a scalar.
    """
    return token_nll(logits[:, :-1], labels[:, 1:], reduction)


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which positions predict a scored next token, and those tokens: ``(where, labels[:, 1:][where])``.

    Args:
        labels: shape (batch, seq_len), with ``IGNORE`` where a token is not scored.

    Returns:
        ``where``, a bool tensor (batch, seq_len - 1), and the scored tokens in row-major order.
    """
    where = labels[:, 1:] != IGNORE
    return where, labels[:, 1:][where]


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer puts its BOS token in front of a text (SmolLM2's does not, Llama-2's does).

    Found by tokenizing one character with and without special tokens, so it follows the tokenizer's own setting.

    Args:
        tokenizer: the tokenizer to probe.

    Returns:
        Whether a BOS token is prepended.
    """
    bos = tokenizer.bos_token_id
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bos is not None and with_special[:1] == [bos] and without[:1] != [bos]


_JOINED_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per tokenizer (held weakly, so its entries go with it): (vocabulary size, texts) -> ids, the last few text sets."""
JOINED_IDS_KEPT = 4


def joined_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> torch.Tensor:
    """Token ids of ``texts`` joined with blank lines, without special tokens (a long tensor, the caller's copy).

    Every variant of a comparison cuts its perplexity windows from the same texts, and tokenizing WikiText-2's test
    set takes most of a second, more than a forward pass over a few windows: the ids of the last
    ``JOINED_IDS_KEPT`` text sets are kept per tokenizer. The key holds the vocabulary size, so a tokenizer that
    gains tokens is tokenized again.
    """
    key = (len(tokenizer), tuple(texts))
    kept = _JOINED_IDS.setdefault(tokenizer, {})
    if key not in kept:
        # verbose=False: the whole text is longer than the model's context on purpose; windows are cut from it.
        ids = tokenizer("\n\n".join(texts), add_special_tokens=False, verbose=False)["input_ids"]
        kept[key] = torch.tensor(ids, dtype=torch.long)
        while len(kept) > JOINED_IDS_KEPT:
            del kept[next(iter(kept))]  # the oldest
    return kept[key].clone()


def _window_rows(
    ids: torch.Tensor, prefix: list[int], seq_len: int, stride: int, max_windows: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of shape (n_windows, seq_len); labels are IGNORE where a position is not scored."""
    span = seq_len - len(prefix)  # text tokens per window
    n_windows = (len(ids) - span) // stride + 1
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    starts = torch.arange(n_windows) * stride
    text = ids[starts[:, None] + torch.arange(span)]
    inputs = torch.cat([torch.tensor(prefix, dtype=torch.long).expand(n_windows, -1), text], dim=1)
    labels = inputs.clone()
    labels[:, : len(prefix)] = IGNORE  # the prefix (BOS) is given, never predicted
    labels[:, 0] = IGNORE  # nothing predicts a window's first token
    # After the first window only the last `stride` tokens are new; the rest are context already scored before.
    labels[1:, : seq_len - stride] = IGNORE
    return inputs, labels


def window_layout(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int) -> tuple[list[int], int]:
    """Check ``texts`` and ``seq_len``; return how every window starts and how many text tokens follow.

    Shared with ``helpers.healing``, which trains on such windows.

    Args:
        tokenizer: the model's tokenizer.
        texts: the texts the windows are cut from (only checked here).
        seq_len: tokens per window, BOS included.

    Returns:
        ``(prefix, span)``: what every window starts with (``[BOS]`` when the tokenizer adds one, else nothing) and
        how many text tokens follow it.

    Raises:
        TypeError: if ``texts`` is not a list of strings or ``seq_len`` not an integer.
        ValueError: if ``seq_len`` is below 2, or leaves no text token after the BOS.
    """
    check_texts(texts)
    prefix = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    check_int("seq_len", seq_len, minimum=max(2, len(prefix) + 1))
    return prefix, seq_len - len(prefix)


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    seq_len: int = 128,
    stride: int | None = None,
    max_windows: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``texts`` (joined with blank lines), over windows of ``seq_len`` tokens.

    If the tokenizer adds a BOS token to a text (``adds_bos``), every window is BOS + ``seq_len - 1`` text tokens,
    as the model saw in training; otherwise a window is ``seq_len`` text tokens and its first token is not scored.
    Tokens after the last full window are dropped. The model runs in eval mode (no dropout, which would make the
    result random) and gets its own mode back afterwards. Follows the transformers guide "Perplexity of fixed-length
    models" (strided windows, context labelled -100), keeping per-window sums for the bootstrap, a BOS prefix where
    the tokenizer adds one, and full windows only.

    Args:
        model: the causal LM to evaluate.
        tokenizer: its tokenizer.
        texts: the evaluation texts.
        seq_len: tokens per window, at most the model's ``max_position_embeddings``.
        stride: how many tokens each window moves on; None (default) = the window's text length, i.e.
            non-overlapping windows. With a smaller stride only the last ``stride`` tokens of a window are scored,
            each with up to ``seq_len - stride`` tokens of extra context (the classic sliding-window evaluation; the
            first window scores all its tokens).
        max_windows: keep the first windows only; None keeps all.
        batch_size: windows per forward pass.
        progress: show a progress bar.

    Returns:
        A ``PerplexityResult`` with the per-window sums.

    Raises:
        TypeError: if ``texts`` is not a list of strings, or ``seq_len``, ``stride``, ``max_windows`` or
            ``batch_size`` is not an integer (None where allowed).
        ValueError: if ``seq_len`` is too short for a window or longer than the model's positions, ``stride`` is
            outside 1..text tokens per window, ``max_windows`` or ``batch_size`` is below 1, the texts give fewer
            tokens than one window, or the model gives no next-token logits (``check_decoder``).
        FloatingPointError: if a window's NLL is NaN or inf (a NaN or +inf logit at a scored position, or -inf on
            its target; ``raise_non_finite`` names where they start).
    """
    check_decoder(model, "logits")
    prefix, span = window_layout(tokenizer, texts, seq_len)
    check_int("stride", stride, maximum=span, none_means=f"{span}, the text tokens in a window")
    stride = span if stride is None else stride
    check_int("max_windows", max_windows, none_means="all windows")
    check_int("batch_size", batch_size)
    check_positions(model, seq_len, f"seq_len={seq_len}")

    ids = joined_ids(tokenizer, texts)
    if len(ids) < span:
        raise ValueError(f"the texts give {len(ids)} tokens, fewer than one window of {span} text tokens")
    inputs, labels = _window_rows(ids, prefix, seq_len, stride, max_windows)

    device = input_device(model)
    nll_sums, counts = [], []
    with eval_mode(model), torch.inference_mode():
        for start in progress_bar(range(0, len(inputs), batch_size), "perplexity", progress):
            batch = inputs[start : start + batch_size].to(device)
            window_labels = labels[start : start + batch_size]
            logits = model(input_ids=batch, use_cache=False).logits
            window_sums = next_token_nll(logits, window_labels).sum(dim=1)
            # A NaN or +inf logit makes its position's NLL NaN, so checking the sums (not every logit) is enough.
            if not torch.isfinite(window_sums).all():
                raise_non_finite(model, {"input_ids": batch}, "perplexity")
            nll_sums.append(window_sums.double().cpu())
            counts.append((window_labels[:, 1:] != IGNORE).sum(dim=1))
    window_nll = torch.cat(nll_sums).numpy()
    window_tokens = torch.cat(counts).numpy()
    mean_nll = float(window_nll.sum() / window_tokens.sum())
    return PerplexityResult(
        ppl=math.exp(mean_nll),
        nll=mean_nll,
        n_tokens=int(window_tokens.sum()),
        window_nll=window_nll,
        window_tokens=window_tokens,
        seq_len=seq_len,
        stride=stride,
        window_ids=inputs.numpy(),
    )


def _window_ppl(nll: np.ndarray, tokens: np.ndarray, axis: int = -1) -> np.ndarray:
    """Perplexity of a set of windows (their NLL sums and scored-token counts): exp(total NLL / total tokens)."""
    return np.exp(nll.sum(axis=axis) / tokens.sum(axis=axis))


def _windows(result: PerplexityResult) -> np.ndarray:
    """The bootstrap's units: one row (NLL sum, scored tokens) per window."""
    return np.column_stack([result.window_nll, result.window_tokens])


def perplexity_ci(result: PerplexityResult, **bootstrap: object) -> ConfidenceInterval:
    """Bootstrap interval of a perplexity, resampling its windows.

    Args:
        result: what ``perplexity`` returned.
        **bootstrap: keyword arguments of ``bootstrap_ci`` (``n_boot``, ``confidence``, ``seed``).

    Returns:
        The perplexity with its interval.

    Raises:
        TypeError, ValueError: as ``bootstrap_ci``, for its arguments.
    """
    return bootstrap_ci(_windows(result), statistic=_window_ppl, **bootstrap)


def perplexity_difference(a: PerplexityResult, b: PerplexityResult, **bootstrap: object) -> ConfidenceInterval:
    """Paired interval of ``b.ppl - a.ppl`` for two models evaluated on the same text and windows.

    Args:
        a: the first model's result (the one subtracted).
        b: the second model's result.
        **bootstrap: keyword arguments of ``paired_difference`` (``n_boot``, ``confidence``, ``seed``).

    Returns:
        The difference with its interval; below 0 means ``b`` has the lower perplexity.

    Raises:
        ValueError: if the two results do not cover the same windows (texts, tokenizer, ``seq_len``, ``stride``,
            ``max_windows``); as ``paired_difference``, for its arguments.
        TypeError: as ``paired_difference``, for its arguments.
    """
    same_windows = np.array_equal(a.window_ids, b.window_ids) and np.array_equal(a.window_tokens, b.window_tokens)
    if (a.seq_len, a.stride) != (b.seq_len, b.stride) or not same_windows:
        raise ValueError(
            "the two perplexity results do not cover the same windows; evaluate both models with the same texts, "
            "tokenizer, seq_len, stride and max_windows"
        )
    return paired_difference(_windows(a), _windows(b), statistic=_window_ppl, **bootstrap)
