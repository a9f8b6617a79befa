"""Resuming a variant from the full model's recorded block inputs gives what a pruned copy computes from scratch."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, tiny_inputs, tiny_model
from tiny_tokenizer import tiny_tokenizer

from helpers.block_inputs import BlockInputs, MissingRecording
from helpers.blocks import get_blocks
from helpers.classification import sms_accuracy
from helpers.perplexity import perplexity
from helpers.pruning import prune_blocks, skip_blocks

SMS = pd.DataFrame(
    {
        "text": ["win cash prize now", "see you at home", "claim your free prize", "ok love", "call me later"],
        "label": ["spam", "ham", "spam", "ham", "ham"],
    }
)
EXAMPLES = pd.DataFrame(
    {
        "text": ["txt win cash now", "hi see you later", "free prize call now", "ok going home"],
        "label": ["spam", "ham", "spam", "ham"],
    }
)
TEXTS = [" ".join(["the cat sat on the mat and the dog ran home"] * 6)]


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def resumed(model, recording, removed, measure):
    """``measure`` on ``model`` without ``removed``, resumed from ``recording``."""
    with skip_blocks(model, removed) as variant, recording.resume(variant, removed[0]) as shallow:
        return measure(shallow), len(get_blocks(shallow))


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_resumed_logits_equal_a_pruned_copy(family):
    model, inputs = tiny_model(family), tiny_inputs()  # a right-padded row: the mask is part of the key
    recording = BlockInputs(model)
    with recording.record(model):
        full = logits(model, inputs)
    assert len(recording) == 1 and recording.blocks == list(range(1, N_LAYERS))
    torch.testing.assert_close(full, logits(model, inputs), rtol=0, atol=0)  # recording changes nothing
    # Blocks run: [2, 4] from block 2 (blocks 3, 5), [1] from block 1 (2..5), [3, 4, 5] from block 2 (block 2).
    for removed, blocks_run in (([2, 4], 2), ([1], 4), ([3, 4, 5], 1)):
        result, run = resumed(model, recording, removed, lambda m: logits(m, inputs))
        assert run == blocks_run
        expected = logits(prune_blocks(model, removed), inputs)
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


def test_a_variant_without_blocks_after_its_first_removed_one_resumes_earlier():
    model, inputs = tiny_model("llama"), tiny_inputs()
    recording = BlockInputs(model)
    with recording.record(model):
        logits(model, inputs)
    result, blocks_run = resumed(model, recording, [3, 4, 5], lambda m: logits(m, inputs))
    assert blocks_run == 1  # block 2, fed the recorded input of block 2
    torch.testing.assert_close(result, logits(prune_blocks(model, [3, 4, 5]), inputs), rtol=1e-5, atol=1e-5)


def test_checkpoints_are_evenly_spaced_and_the_last_at_or_before_the_first_removed_block():
    model = tiny_model("llama")
    recording = BlockInputs(model, checkpoints=2)
    assert recording.blocks == [3]
    assert [recording.start(first) for first in range(N_LAYERS)] == [0, 0, 0, 3, 3, 3]
    with pytest.raises(ValueError, match="checkpoints"):
        BlockInputs(model, checkpoints=0)


def test_perplexity_and_cached_prefix_sms_resumed_equal_a_pruned_copy():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    measures = {
        "ppl": lambda m: perplexity(m, tokenizer, TEXTS, seq_len=12, max_windows=5, batch_size=2, progress=False),
        # Few-shot: the shots run once as a cached prefix, then every batch of messages continues it.
        "sms": lambda m: sms_accuracy(
            m, tokenizer, SMS, shots=2, examples=EXAMPLES, batch_size=2, decision="prior", progress=False
        ),
    }
    recording = BlockInputs(model)
    with recording.record(model):
        for measure in measures.values():
            measure(model)
    pruned = prune_blocks(model, [2, 4])
    ppl, _ = resumed(model, recording, [2, 4], measures["ppl"])
    expected = measures["ppl"](pruned)
    assert ppl.window_nll == pytest.approx(expected.window_nll, rel=1e-5)
    sms, _ = resumed(model, recording, [2, 4], measures["sms"])
    expected = measures["sms"](pruned)
    pd.testing.assert_frame_equal(sms.scores, expected.scores, rtol=1e-5)
    assert (sms.predictions == expected.predictions).all()


def test_a_call_that_was_not_recorded_is_refused_and_the_model_restored():
    model = tiny_model("llama")
    recording = BlockInputs(model)
    with recording.record(model):
        logits(model, tiny_inputs(seed=0))
    with pytest.raises(MissingRecording, match="block 2"):
        resumed(model, recording, [2], lambda m: logits(m, tiny_inputs(seed=1)))
    assert len(get_blocks(model)) == N_LAYERS and not model._forward_pre_hooks
    assert not any(block._forward_pre_hooks for block in get_blocks(model))
