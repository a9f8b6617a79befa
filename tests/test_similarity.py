"""block_similarity against independent computations from transformers' own ``output_hidden_states``.

transformers (5.x, all families here) returns L+1 hidden states: element d < L is the input of block d, but the
last element has the final norm applied, so it is NOT the last block's output. The reference below swaps the final
norm for an identity to get the raw depth-L state, and checks that finding on every family it is used on.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tiny_models import N_LAYERS, TINY_CONFIGS, tiny_inputs, tiny_model

from helpers.blocks import get_blocks
from helpers.similarity import SimilarityReport, block_similarity

FAMILIES = sorted(TINY_CONFIGS)
FINAL_NORM = {
    "gpt2": "transformer.ln_f",
    "gpt_neox": "gpt_neox.final_layer_norm",
    "opt": "model.decoder.final_layer_norm",
    "phi": "model.final_layernorm",
    **{family: "transformer.ln_f" for family in ("falcon", "bloom", "gpt_bigcode", "gptj")},
}
"""Path of the final norm; every other family here keeps it at ``model.norm``."""


def two_batches() -> list[dict[str, torch.Tensor]]:
    """Two right-padded batches of different shapes: real lengths (12, 9) and (9, 7, 3)."""
    first = tiny_inputs(seed=0, batch=2, length=12)
    second = tiny_inputs(seed=1, batch=3, length=9)
    second["attention_mask"] = (torch.arange(9) < torch.tensor([[9], [7], [3]])).long()
    return [first, second]


def raw_hidden_states(model, batch) -> list[torch.Tensor]:
    """Hidden states at depths 0..L with depth L = the last block's output, via output_hidden_states."""
    parent_path, name = FINAL_NORM.get(model.config.model_type, "model.norm").rsplit(".", 1)
    parent = model.get_submodule(parent_path)
    norm = getattr(parent, name)
    with torch.no_grad():
        normal = model(**batch, output_hidden_states=True, use_cache=False).hidden_states
        setattr(parent, name, torch.nn.Identity())
        try:
            raw = model(**batch, output_hidden_states=True, use_cache=False).hidden_states
        finally:
            setattr(parent, name, norm)
        assert len(raw) == len(get_blocks(model)) + 1
        assert all(torch.equal(a, b) for a, b in zip(raw[:-1], normal[:-1]))
        torch.testing.assert_close(normal[-1], norm(raw[-1]))  # the finding the module docstring states
    return [state.double() for state in raw]


def real_positions(batch):
    mask = batch["attention_mask"]
    return [(row, t) for row in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[row, t]]


def last_positions(batch):
    mask = batch["attention_mask"]
    return [(row, int(mask[row].nonzero().max())) for row in range(mask.shape[0])]


def naive_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    model = tiny_model(request.param)
    batches = two_batches()
    report = block_similarity(model, batches, sample=(1, 1), progress=False)
    return report, [raw_hidden_states(model, batch) for batch in batches], batches


@pytest.mark.parametrize(
    ("positions", "suffix"), [(real_positions, ""), (last_positions, "_last")], ids=["all real tokens", "last token"]
)
def test_block_cosine_is_token_weighted_mean_over_positions(case, positions, suffix):
    report, states, batches = case
    for block in range(N_LAYERS):
        values = [
            naive_cos(hs[block][row, t], hs[block + 1][row, t])
            for hs, batch in zip(states, batches)
            for row, t in positions(batch)
        ]
        assert report.blocks.loc[block, f"cosine{suffix}"] == pytest.approx(np.mean(values), abs=1e-5)
        assert report.blocks.loc[block, f"block_influence{suffix}"] == pytest.approx(1 - np.mean(values), abs=1e-5)


def test_token_and_sequence_counts(case):
    report, _, _ = case
    assert (report.blocks["tokens"] == 12 + 9 + 9 + 7 + 3).all()
    assert (report.blocks["sequences"] == 5).all()


def test_depth_similarity_matches_double_loop(case):
    report, states, batches = case
    assert report.depth_similarity.shape == (N_LAYERS + 1, N_LAYERS + 1)
    for i in range(N_LAYERS + 1):
        for j in range(N_LAYERS + 1):
            values = [
                naive_cos(hs[i][row, t], hs[j][row, t])
                for hs, batch in zip(states, batches)
                for row, t in real_positions(batch)
            ]
            assert report.depth_similarity.loc[i, j] == pytest.approx(np.mean(values), abs=1e-5)


def test_angular_distance_and_best_start_match_loops(case):
    report, states, batches = case
    expected = pd.DataFrame(np.nan, index=range(N_LAYERS), columns=range(1, N_LAYERS + 1))
    for start in range(N_LAYERS):
        for n in range(1, N_LAYERS - start + 1):
            values = [
                math.acos(min(1.0, naive_cos(hs[start][row, t], hs[start + n][row, t]))) / math.pi
                for hs, batch in zip(states, batches)
                for row, t in last_positions(batch)
            ]
            expected.loc[start, n] = np.mean(values)
    np.testing.assert_allclose(report.angular_distance.to_numpy(), expected.to_numpy(), atol=1e-5)
    assert report.angular_distance.isna().to_numpy().sum() == N_LAYERS * (N_LAYERS - 1) / 2
    for n in range(1, N_LAYERS + 1):
        column = expected[n].dropna()
        assert report.best_start[n] == column.idxmin()


def test_token_cosine_of_chosen_sample(case):
    report, states, batches = case
    hs, batch = states[1], batches[1]  # sample=(1, 1): the second batch's row 1, 7 real tokens of 9
    assert list(report.token_cosine.index.get_level_values("token")) == batch["input_ids"][1, :7].tolist()
    for t in range(7):
        for block in range(N_LAYERS):
            expected = naive_cos(hs[block][1, t], hs[block + 1][1, t])
            label = (t, int(batch["input_ids"][1, t]))
            assert report.token_cosine.loc[label, block] == pytest.approx(expected, abs=1e-5)


class CharTokenizer:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_token_labels_from_tokenizer():
    batch = tiny_inputs()
    report = block_similarity(tiny_model("llama"), [batch], tokenizer=CharTokenizer(), progress=False)
    tokens = report.token_cosine.index.get_level_values("token")
    assert list(tokens) == [f"<{i}>" for i in batch["input_ids"][0].tolist()]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_padding_does_not_change_results(family):
    model = tiny_model(family)
    batches = two_batches()
    padded = block_similarity(model, batches, progress=False)
    # Each sequence alone, without any padding, and the same batches with 4 more padding columns.
    alone = [
        {key: value[row : row + 1, : int(batch["attention_mask"][row].sum())] for key, value in batch.items()}
        for batch in batches
        for row in range(len(batch["input_ids"]))
    ]
    wider = [
        {
            "input_ids": F.pad(batch["input_ids"], (0, 4), value=5),
            "attention_mask": F.pad(batch["attention_mask"], (0, 4), value=0),
        }
        for batch in batches
    ]
    for other in (block_similarity(model, alone, progress=False), block_similarity(model, wider, progress=False)):
        pd.testing.assert_frame_equal(other.blocks, padded.blocks, atol=1e-5, rtol=0)
        pd.testing.assert_frame_equal(other.depth_similarity, padded.depth_similarity, atol=1e-5, rtol=0)
        pd.testing.assert_frame_equal(other.angular_distance, padded.angular_distance, atol=1e-5, rtol=0)


def test_bfloat16_model_cosine_in_float32():
    model = tiny_model("llama").to(torch.bfloat16)
    batch = tiny_inputs()
    report = block_similarity(model, [batch], progress=False)
    hs = raw_hidden_states(model, batch)  # bf16 states, upcast to float64 for the reference
    for block in range(N_LAYERS):
        values = [naive_cos(hs[block][r, t], hs[block + 1][r, t]) for r, t in real_positions(batch)]
        # A cosine computed in bfloat16 would be off by ~1e-3.
        assert report.blocks.loc[block, "cosine"] == pytest.approx(np.mean(values), abs=2e-6)


def all_hooks(model):
    return [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]


def test_model_left_as_it_was_and_dropout_off():
    model = tiny_model("gpt2")  # GPT-2 configs have dropout 0.1: train mode would make results random
    batch = tiny_inputs()
    evaluated = block_similarity(model, [batch], progress=False)
    model.train()
    model.transformer.h[2].eval()  # a mixed state must come back exactly
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    trained = block_similarity(model, [batch], progress=False)
    pd.testing.assert_frame_equal(trained.blocks, evaluated.blocks)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.config.to_dict() == config
    assert all_hooks(model) == []


def test_block_raising_inside_forward_leaves_no_hooks(monkeypatch):
    model = tiny_model("llama")
    model.train()

    def broken(*args, **kwargs):
        raise RuntimeError("block 3 exploded")

    monkeypatch.setattr(get_blocks(model)[3], "forward", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        block_similarity(model, [tiny_inputs()], progress=False)
    assert all_hooks(model) == []
    assert all(m.training for m in model.modules())


def replace_output(model, block, make):
    """A test-side hook that replaces a block's output (independent of helpers.hooks)."""
    return get_blocks(model)[block].register_forward_hook(lambda module, args, output: make(output))


def test_nan_output_raises_naming_the_block():
    model = tiny_model("qwen2")
    handle = replace_output(model, 2, lambda out: out * float("nan"))
    with pytest.raises(ValueError, match=r"output of block 2 .*block\(s\) \[2, 3, 4, 5\]"):
        block_similarity(model, [tiny_inputs()], progress=False)
    handle.remove()
    assert all_hooks(model) == []


def test_zero_state_raises_instead_of_cosine_zero():
    model = tiny_model("llama")
    batch = tiny_inputs()
    with torch.no_grad():  # a zero embedding row: the embedding output is a zero vector at that token
        model.get_input_embeddings().weight[int(batch["input_ids"][0, 4])] = 0
    with pytest.raises(ValueError, match=r"embedding output \(input of block 0\).*block\(s\) \[0\]"):
        block_similarity(model, [batch], progress=False)


def test_zero_state_at_padding_is_ignored():
    model = tiny_model("llama")
    batch = tiny_inputs()  # row 1: last 3 positions are padding
    clean = block_similarity(model, [batch], progress=False)

    def zero_padding(out):
        out = out.clone()
        out[1, -3:] = 0
        return out

    handle = replace_output(model, 3, zero_padding)
    try:
        zeroed = block_similarity(model, [batch], progress=False)
    finally:
        handle.remove()
    pd.testing.assert_frame_equal(zeroed.blocks, clean.blocks)


@pytest.mark.parametrize(
    "batches, sample, message",
    [
        ([], (0, 0), "empty"),
        ([{"ids": torch.ones(1, 3)}], (0, 0), "input_ids"),
        ([tiny_inputs()], (1, 0), "sample"),
        ([tiny_inputs()], (0, 2), "sample"),
        (
            [{"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 0], [0, 0, 0]])}],
            (0, 0),
            "no real token",
        ),
        ([{"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 4)}], (0, 0), "same shape"),
    ],
)
def test_bad_input_is_rejected(batches, sample, message):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        block_similarity(model, batches, sample=sample, progress=False)
    assert all_hooks(model) == []


@pytest.mark.parametrize(
    "batches, message",
    [
        (tiny_inputs(), r"not one batch; wrap it: \[batch\]"),
        ([tiny_inputs(), torch.ones(1, 3)], r"batch 1 is a Tensor, not a dict with an 'input_ids' tensor"),
    ],
)
def test_batches_of_the_wrong_type_are_a_type_error(batches, message):
    model = tiny_model("llama")
    with pytest.raises(TypeError, match=message):
        block_similarity(model, batches, progress=False)
    assert all_hooks(model) == []


def test_report_layout():
    report = block_similarity(tiny_model("gemma3_text"), [tiny_inputs()], progress=False)
    assert isinstance(report, SimilarityReport)
    assert report.blocks.index.name == "block" and list(report.blocks.index) == list(range(N_LAYERS))
    assert list(report.depth_similarity.index) == list(range(N_LAYERS + 1))
    assert (report.angular_distance.index.name, report.angular_distance.columns.name) == ("start", "n")
    assert list(report.best_start.index) == list(range(1, N_LAYERS + 1))
    assert report.token_cosine.shape == (12, N_LAYERS)


@pytest.mark.slow
def test_course_model_matches_hidden_states():
    from helpers.data import tokenize_batches
    from helpers.model import load_model

    model, tokenizer = load_model(device="cpu")
    texts = ["The tower is 324 metres tall, about the same height as an 81-storey building.", "Hello there."]
    batches = tokenize_batches(tokenizer, texts, seq_len=32, batch_size=2)
    report = block_similarity(model, batches, tokenizer=tokenizer, progress=False)
    hs = raw_hidden_states(model, batches[0])
    L = len(get_blocks(model))
    expected = [
        np.mean([naive_cos(hs[b][r, t], hs[b + 1][r, t]) for r, t in real_positions(batches[0])]) for b in range(L)
    ]
    np.testing.assert_allclose(report.blocks["cosine"], expected, atol=1e-5)
    assert report.token_cosine.index.get_level_values("token")[1] == tokenizer.decode(batches[0]["input_ids"][0, 1:2])
