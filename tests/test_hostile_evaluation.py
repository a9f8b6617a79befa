"""Calls a learner could make against the evaluation core, each of which once gave a silent or wrong answer: every
one must now give the right answer or a clear error, with the caller's model, lists and dicts left as they were."""

from __future__ import annotations

import pytest
import torch
from test_evaluation_core import sentences, sms
from tiny_models import N_LAYERS, tiny_model
from tiny_tokenizer import tiny_tokenizer

from helpers.blocks import num_blocks
from helpers.classification import accuracy_difference, sms_accuracy
from helpers.perplexity import perplexity, perplexity_difference

TOO_FEW = "too few to decide"
STATED_MINIMUM = 10
"""The stated minimum number of units (windows, messages, items) below which no verdict is given."""


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert num_blocks(model) == N_LAYERS and model.config.num_hidden_layers == N_LAYERS
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


# --- case 4: paired differences only on the same units --------------------------------------------------------------


@pytest.mark.parametrize("metric", ["perplexity", "sms accuracy"])
def test_paired_differences_refuse_different_texts_or_messages(model, metric):
    """Case 4: two results on different texts or messages (same counts, same index) cannot be paired."""
    tokenizer = tiny_tokenizer()
    if metric == "perplexity":
        a, b = (
            perplexity(model, tokenizer, sentences(40, s), seq_len=16, max_windows=4, progress=False) for s in (1, 2)
        )
        with pytest.raises(ValueError, match="evaluate both models with the same texts, tokenizer"):
            perplexity_difference(a, b)
    else:
        a, b = (sms_accuracy(model, tokenizer, sms(12, s), progress=False) for s in (2, 5))
        with pytest.raises(ValueError, match="different messages; evaluate both models on the same frame"):
            accuracy_difference(a, b)
