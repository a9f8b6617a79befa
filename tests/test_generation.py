"""Greedy continuations against a hand-written argmax loop, and the KV-cache argument name against a real forward."""

from __future__ import annotations

import inspect

import pytest
import torch
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer
from transformers import Cache

from helpers.generation import cache_argument_name, greedy_continuation

PROMPT = "hi see you at home later"


def naive_continuation(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Argmax of the whole sequence recomputed at every step (no cache), stopping after the EOS token."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids[0].tolist() + new])).logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_continuation_is_the_argmax_loop(family):
    model, tokenizer = tiny_model(family), tiny_tokenizer()
    text = greedy_continuation(model, tokenizer, PROMPT, max_new_tokens=8)
    assert text == naive_continuation(model, tokenizer, PROMPT, 8)
    assert text  # random weights still write some known word


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cache_argument_name_is_where_forward_takes_and_returns_the_cache(family):
    model = tiny_model(family)
    name = cache_argument_name(model)
    assert name in {"cache", "past_key_values"}
    assert name in inspect.signature(model.forward).parameters
    with torch.no_grad():
        first = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
        assert isinstance(first[name], Cache)
        # Feeding it back continues the sequence: the next token's logits equal those of the full sequence.
        step = model(input_ids=torch.tensor([[8]]), use_cache=True, **{name: first[name]}).logits[0, -1]
        full = model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits[0, -1]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
