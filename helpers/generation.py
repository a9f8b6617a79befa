"""Decoding helpers shared by the evaluations and the notebooks: the KV-cache argument and greedy continuations.

Kept apart from ``helpers.widgets`` (which pulls in ipywidgets) and ``helpers.benefits`` (which times decoding), so
that scoring code and notebook cells that only need a continuation import neither.
"""

from __future__ import annotations

import inspect

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .blocks import check_decoder
from .hooks import eval_mode, input_device


def cache_argument_name(model: PreTrainedModel) -> str:
    """Name of the KV-cache argument of ``model.forward`` and of its output: transformers renamed
    ``past_key_values`` to ``cache`` in 5.x; reading the signature works with either version.

    Args:
        model: the model whose ``forward`` signature is read.

    Returns:
        ``"cache"`` or ``"past_key_values"``.
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def greedy_continuation(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int = 16
) -> str:
    """The model's greedy (deterministic) continuation of ``prompt``, without the prompt.

    ``generate()`` with sampling off, in eval mode (no dropout; the model's own mode is restored afterwards); the pad
    token is the tokenizer's, else its EOS token.

    Args:
        model: the causal LM to decode with.
        tokenizer: its tokenizer.
        prompt: the text to continue.
        max_new_tokens: the most tokens to generate; fewer when the model writes its EOS token.

    Returns:
        The decoded new tokens, special tokens skipped.

    Raises:
        TypeError: if ``prompt`` is not a string.
        ValueError: if ``prompt`` is empty, or for a model that gives no next-token logits (``check_decoder``).
    """
    check_decoder(model, "logits")
    if not isinstance(prompt, str) or not prompt:
        error = ValueError if isinstance(prompt, str) else TypeError
        raise error(
            f"prompt must be a non-empty string, the text to continue (e.g. 'The capital of France is'); got {prompt!r}"
        )
    inputs = tokenizer(prompt, return_tensors="pt").to(input_device(model))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with eval_mode(model), torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
