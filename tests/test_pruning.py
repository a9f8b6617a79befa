"""prune_blocks and skip_blocks on a tiny random model of every supported family."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, block_path, tiny_inputs, tiny_model
from transformers import AutoModelForCausalLM

import helpers.blocks as hb
from helpers.blocks import check_block_indices, get_blocks
from helpers.pruning import prune_blocks, skip_blocks

FAMILIES = sorted(TINY_CONFIGS)
PER_LAYER = ("layer_types", "no_rope_layers")
"""Per-layer config lists of the tiny families (Gemma-2/3, Qwen, Mistral...: layer_types; SmolLM3: no_rope_layers)."""
REMOVED = [1, 4]
KEPT = [i for i in range(N_LAYERS) if i not in REMOVED]


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def reference_model(model, kept):
    """An independent pruned model: a fresh, shallower model built from a hand-edited config, with the kept
    blocks' weights copied in under their new numbers. Shares no code with helpers.pruning."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    for name in PER_LAYER:
        if getattr(config, name, None) is not None:
            setattr(config, name, [getattr(config, name)[i] for i in kept])
    ref = AutoModelForCausalLM.from_config(config).eval()
    prefix = block_path(model.config.model_type)
    renumber = {old: new for new, old in enumerate(kept)}
    state = {}
    for key, value in model.state_dict().items():
        match = re.match(rf"{re.escape(prefix)}\.(\d+)\.(.*)", key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in renumber:
            state[f"{prefix}.{renumber[int(match.group(1))]}.{match.group(2)}"] = value
    ref.load_state_dict(state, strict=True)
    return ref


def greedy(model, inputs, use_cache):
    out = model.generate(
        input_ids=inputs["input_ids"][:1],
        attention_mask=inputs["attention_mask"][:1],
        max_new_tokens=6,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=0,
    )
    return out[0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_are_found_where_the_family_keeps_them(family):
    model = tiny_model(family)
    path = block_path(family)
    assert get_blocks(model) is model.get_submodule(path)
    backbone = model.get_submodule(path.rsplit(".", 2)[0])  # model.layers -> model, model.decoder.layers -> model
    assert get_blocks(backbone) is get_blocks(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_equals_independent_reference_and_skip(family):
    model = tiny_model(family)
    inputs = tiny_inputs()
    expected = logits(reference_model(model, KEPT), inputs)
    pruned = prune_blocks(model, REMOVED)
    torch.testing.assert_close(logits(pruned, inputs), expected, atol=1e-5, rtol=0)
    with skip_blocks(model, REMOVED) as skipped:
        torch.testing.assert_close(logits(skipped, inputs), expected, atol=1e-5, rtol=0)
    # Removing blocks must change the output, or the comparisons above prove nothing.
    assert (logits(model, inputs) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_kv_cache_matches_no_cache(family):
    # A wrong layer_idx or a stale cache layout shows up as cached decoding diverging from recomputation.
    model = tiny_model(family)
    inputs = tiny_inputs(length=9)
    pruned = prune_blocks(model, REMOVED)
    assert greedy(pruned, inputs, use_cache=True) == greedy(pruned, inputs, use_cache=False)
    with skip_blocks(model, REMOVED):
        assert greedy(model, inputs, use_cache=True) == greedy(pruned, inputs, use_cache=False)
    assert greedy(model, inputs, use_cache=True) == greedy(model, inputs, use_cache=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_reload_gives_identical_logits(family, tmp_path):
    model = tiny_model(family)
    inputs = tiny_inputs()
    pruned = prune_blocks(model, REMOVED)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert len(get_blocks(reloaded)) == len(KEPT)
    torch.testing.assert_close(logits(reloaded, inputs), logits(pruned, inputs), atol=0, rtol=0)
    assert reloaded.config.depth_pruning == {"original_num_hidden_layers": N_LAYERS, "kept_layers": KEPT}


@pytest.mark.parametrize("family", FAMILIES)
def test_config_layer_indices_and_parameter_count(family):
    model = tiny_model(family)
    original_types = getattr(model.config, "layer_types", None)
    removed_params = sum(p.numel() for i in REMOVED for p in get_blocks(model)[i].parameters())
    pruned = prune_blocks(model, REMOVED)
    assert pruned.config.num_hidden_layers == len(KEPT)
    if original_types is not None:
        assert pruned.config.layer_types == [original_types[i] for i in KEPT]
    layer_idx = [
        [m.layer_idx for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)]
        for block in get_blocks(pruned)
    ]
    assert all(ids and set(ids) == {new} for new, ids in enumerate(layer_idx))
    assert model.num_parameters() - pruned.num_parameters() == removed_params


def test_inplace_false_leaves_original_untouched_and_inplace_true_copies_nothing():
    model = tiny_model("llama")
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before_config = model.config.to_dict()
    blocks_before = list(get_blocks(model))
    prune_blocks(model, REMOVED)
    assert list(get_blocks(model)) == blocks_before
    assert model.config.to_dict() == before_config
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert [b.self_attn.layer_idx for b in get_blocks(model)] == list(range(N_LAYERS))

    kept_weight = get_blocks(model)[KEPT[0]].mlp.up_proj.weight
    result = prune_blocks(model, REMOVED, inplace=True)
    assert result is model
    assert get_blocks(model)[0].mlp.up_proj.weight is kept_weight


def test_pruning_twice_records_original_indices():
    model = tiny_model("qwen3")
    once = prune_blocks(model, [1])  # kept 0,2,3,4,5
    twice = prune_blocks(once, [0, 2])  # drop original 0 and 3
    assert twice.config.depth_pruning == {"original_num_hidden_layers": N_LAYERS, "kept_layers": [2, 4, 5]}
    torch.testing.assert_close(
        logits(twice, tiny_inputs()), logits(reference_model(model, [2, 4, 5]), tiny_inputs()), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("family", ["gemma3_text", "gpt2"])
def test_skip_restores_model_exactly_even_after_exception(family):
    model = tiny_model(family)
    inputs = tiny_inputs()
    before_logits = logits(model, inputs)
    before_config = copy.deepcopy(model.config.to_dict())
    blocks_before = list(get_blocks(model))
    with pytest.raises(RuntimeError, match="boom"), skip_blocks(model, [0, 2, 5]):
        assert len(get_blocks(model)) == N_LAYERS - 3
        raise RuntimeError("boom")
    assert list(get_blocks(model)) == blocks_before
    assert model.config.to_dict() == before_config
    assert not hasattr(model.config, "depth_pruning")
    torch.testing.assert_close(logits(model, inputs), before_logits, atol=0, rtol=0)


def test_skip_nothing_is_a_no_op():
    model = tiny_model("llama")
    with skip_blocks(model, []) as same:
        assert same is model and len(get_blocks(model)) == N_LAYERS


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ([6], ValueError, r"out of range .* valid indices are 0\.\.5"),
        ([-1], ValueError, r"out of range .* negative indices are not accepted"),
        ([2, 2], ValueError, r"more than once"),
        ([1.0], TypeError, r"block index 1\.0 is not an integer \(float\)"),
        ([True], TypeError, r"block index True is not an integer \(bool\)"),
        ("12", TypeError, r"must be a list of block indices, got '12' \(str\)"),
        ([], ValueError, r"no blocks given"),
        (list(range(N_LAYERS)), ValueError, r"cannot remove all 6 blocks"),
    ],
)
def test_bad_indices_raise_and_do_not_mutate(bad, error, message):
    model = tiny_model("gemma2")
    before = copy.deepcopy(model.config.to_dict())
    blocks_before = list(get_blocks(model))
    for inplace in (False, True):
        with pytest.raises(error, match=message):
            prune_blocks(model, bad, inplace=inplace)
    if bad != []:  # skipping nothing is allowed
        with pytest.raises(error, match=message), skip_blocks(model, bad):
            pass
    assert list(get_blocks(model)) == blocks_before
    assert model.config.to_dict() == before


def test_numpy_integers_are_accepted():
    np = pytest.importorskip("numpy")
    assert check_block_indices(np.array([3, 1]), 6) == [1, 3]


class TwoStacks(torch.nn.Module):
    """A model with two lists of blocks of the configured length, like an encoder-decoder."""

    def __init__(self, first: str, second: str, n: int = 3):
        super().__init__()
        self.config = type("Cfg", (), {"model_type": "toy", "num_hidden_layers": n})()
        self.left = torch.nn.ModuleDict({first: torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(n))})
        self.right = torch.nn.ModuleDict({second: torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(n))})
        self.other = torch.nn.ModuleList([torch.nn.Linear(2, 2)])


def test_ambiguous_block_lists_name_every_candidate_and_the_layer_count():
    expected = r"TwoStacks .*'toy'.*states 3 layers.*left\.a \(3\), right\.b \(3\).*BLOCK_PATHS"
    with pytest.raises(ValueError, match=expected):
        get_blocks(TwoStacks("a", "b"))


def test_no_list_of_the_layer_count_names_what_was_found():
    model = TwoStacks("a", "b")
    model.config.num_hidden_layers = 5
    expected = r"states 5 layers, but no nn.ModuleList .*left\.a \(3\), right\.b \(3\), other \(1\)"
    with pytest.raises(ValueError, match=expected):
        get_blocks(model)


def test_the_list_on_the_decoder_path_wins():
    model = TwoStacks("encoder", "decoder")
    assert get_blocks(model) is model.right["decoder"]


def test_lists_inside_blocks_are_not_candidates():
    # A block holding a list of the same length (experts, say) is still one block of the outer list.
    model = TwoStacks("a", "b")
    model.right = torch.nn.Module()
    for block in model.left["a"]:
        block.experts = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
    assert get_blocks(model) is model.left["a"]


def test_override_table_decides(monkeypatch):
    model = TwoStacks("a", "b")
    monkeypatch.setitem(hb.BLOCK_PATHS, "toy", "right.b")
    assert get_blocks(model) is model.right["b"]
    monkeypatch.setitem(hb.BLOCK_PATHS, "toy", "right.nothing")
    with pytest.raises(ValueError, match=r"no block list at 'right.nothing'.*BLOCK_PATHS.*'toy'"):
        get_blocks(model)


def test_config_without_layer_count_is_a_clear_error():
    class Toy(torch.nn.Module):
        config = type("Cfg", (), {"model_type": "toy"})()

    with pytest.raises(ValueError, match=r"Toy states no layer count"):
        get_blocks(Toy())


def test_block_deleted_by_hand_is_still_found():
    # Chapter 1 deletes a block without updating the config; the list no longer has the configured length.
    model = tiny_model("llama")
    del model.model.layers[2]
    assert get_blocks(model) is model.model.layers and len(get_blocks(model)) == N_LAYERS - 1


@pytest.mark.parametrize(
    "family, setting, value",
    [
        ("gpt2", "scale_attn_by_inverse_layer_idx", True),
        ("qwen3_moe", "decoder_sparse_step", 2),
        ("qwen3_moe", "mlp_only_layers", [0]),
    ],
)
def test_blocks_built_by_index_refuse_to_prune_but_can_skip(family, setting, value):
    model = tiny_model(family)
    setattr(model.config, setting, value)
    with pytest.raises(ValueError, match=rf"{setting}={re.escape(repr(value))} .* depends on its position"):
        prune_blocks(model, [1])
    with skip_blocks(model, [1]):
        assert len(get_blocks(model)) == N_LAYERS - 1
