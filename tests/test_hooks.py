"""block_hooks and record_block_io against transformers' own hidden states, and cleanup when things go wrong."""

from __future__ import annotations

import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, tiny_inputs, tiny_model

from helpers.blocks import get_blocks
from helpers.hooks import (
    BlockIO,
    block_hooks,
    head_only_at,
    hidden_input,
    hidden_output,
    record_block_io,
    run_model,
)

FAMILIES = sorted(TINY_CONFIGS)


def hidden_states(model, batch):
    """transformers' hidden states: element i < L is the input of block i, element i+1 < L its output."""
    with torch.no_grad():
        return model(**batch, output_hidden_states=True, use_cache=False).hidden_states


def all_hooks(model):
    """Every forward (pre-)hook on the model. transformers installs its own, permanently, the first time
    ``output_hidden_states`` is used, so tests compare against the hooks present before."""
    return [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]


@pytest.mark.parametrize("family", FAMILIES)
def test_block_hooks_see_block_inputs_and_outputs(family):
    model = tiny_model(family)
    batch = tiny_inputs()
    expected = hidden_states(model, batch)
    hooks_before = all_hooks(model)
    seen = {}

    def keep(index, block_input, block_output):
        seen[index] = (block_input.clone(), block_output.clone())

    with block_hooks(model, keep, blocks=[0, 2, 4]):
        run_model(model, batch)
    assert sorted(seen) == [0, 2, 4]
    for index, (block_input, block_output) in seen.items():
        assert torch.equal(block_input, expected[index])
        assert torch.equal(block_output, expected[index + 1])
    assert all_hooks(model) == hooks_before


def test_hooks_observe_without_changing_the_output():
    model = tiny_model("llama")
    batch = tiny_inputs()
    before = run_model(model, batch).logits
    with block_hooks(model, lambda index, block_input, block_output: torch.zeros(1)):  # return value ignored
        during = run_model(model, batch).logits
    assert torch.equal(before, during)


def rotary_inputs(model, length=5):
    x = torch.randn(2, length, model.config.hidden_size)
    return x, model.model.rotary_emb(x, torch.arange(length)[None])


def test_hidden_state_passed_by_keyword_and_tuple_output(monkeypatch):
    model = tiny_model("llama")
    block = get_blocks(model)[1]
    x, rotary = rotary_inputs(model)
    with torch.no_grad():
        expected = block(x, position_embeddings=rotary)
        original = block.forward
        monkeypatch.setattr(block, "forward", lambda *args, **kwargs: (original(*args, **kwargs), None))
        seen = []
        with block_hooks(model, lambda *call: seen.append(call)):
            block(hidden_states=x, position_embeddings=rotary)
    ((index, block_input, block_output),) = seen
    assert index == 1 and block_input is x
    assert torch.equal(block_output, expected)


def test_hidden_input_and_output_forms():
    x = torch.ones(2)
    assert hidden_input((x, 1), {}) is x
    assert hidden_input((), {"hidden_states": x, "attention_mask": None}) is x
    assert hidden_output(x) is x and hidden_output((x, None)) is x
    with pytest.raises(TypeError, match="hidden_states"):
        hidden_input((), {"attention_mask": x})
    with pytest.raises(TypeError, match="tuple"):
        hidden_output((None, x))


def test_hooks_removed_when_hook_function_raises():
    model = tiny_model("gpt2")

    def fail_at_block_2(index, block_input, block_output):
        if index == 2:
            raise RuntimeError("hook failed at block 2")

    with pytest.raises(RuntimeError, match="block 2"), block_hooks(model, fail_at_block_2):
        run_model(model, tiny_inputs())
    assert all_hooks(model) == []


def test_hooks_removed_and_modes_restored_when_a_block_raises(monkeypatch):
    model = tiny_model("llama").train()

    def broken(*args, **kwargs):
        raise RuntimeError("block 4 exploded")

    monkeypatch.setattr(get_blocks(model)[4], "forward", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        record_block_io(model, tiny_inputs())
    assert all_hooks(model) == []
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize(
    "blocks, error",
    [
        ([N_LAYERS], ValueError),
        ([-1], ValueError),
        ([1, 1], ValueError),
        ([], ValueError),
        ("0", TypeError),
        ([1.0], TypeError),
        (3, TypeError),
    ],
)
def test_bad_block_indices_rejected(blocks, error):
    model = tiny_model("llama")
    with pytest.raises(error, match=r"valid indices are 0\.\.5"), block_hooks(model, lambda *args: None, blocks=blocks):
        pass
    assert all_hooks(model) == []


def test_record_block_io_on_cpu_detached_and_reduced():
    model = tiny_model("qwen3")
    batch = tiny_inputs()
    expected = hidden_states(model, batch)
    records = record_block_io(model, batch)
    assert list(records) == list(range(N_LAYERS))
    for index in range(N_LAYERS - 1):
        assert isinstance(records[index], BlockIO)
        assert torch.equal(records[index].input, expected[index])
        assert torch.equal(records[index].output, expected[index + 1])
    assert all(t.device.type == "cpu" and not t.requires_grad for r in records.values() for t in r)

    last = record_block_io(model, batch, blocks=[3], reduce=lambda h: h[:, -1])
    assert list(last) == [3]
    assert torch.equal(last[3].input, expected[3][:, -1])
    assert torch.equal(last[3].output, expected[4][:, -1])


def test_run_model_uses_no_cache_and_no_grad():
    model = tiny_model("mistral").train()
    out = run_model(model, tiny_inputs())
    assert getattr(out, "cache", None) is None  # with the default use_cache=True the output would carry a cache
    assert not out.logits.requires_grad
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_head_only_at_gives_the_selected_rows_of_the_full_logits(family):
    model = tiny_model(family)
    batch = tiny_inputs()
    where = torch.zeros(batch["input_ids"].shape, dtype=torch.bool)
    where[0, [1, 4]] = True
    where[-1, 5] = True
    with torch.no_grad():
        full = model(**batch, use_cache=False).logits
        before = all_hooks(model)
        with head_only_at(model, where):
            selected = model(**batch, use_cache=False).logits
        assert all_hooks(model) == before  # removed on exit

        torch.testing.assert_close(selected, full[where])  # row-major: (0, 1), (0, 4), (1, 5)
        with pytest.raises(RuntimeError, match="boom"), head_only_at(model, where):
            raise RuntimeError("boom")
    assert all_hooks(model) == before
