"""Block criteria against independent computations: sums by parameter name, a hand-written loss with autograd,
perplexities of really pruned models computed with an explicit log-softmax loop."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, block_path, tiny_inputs, tiny_model

from helpers.data_criteria import ppl_by_sample, ppl_positions, ppl_scores, sleb_removal, taylor_scores
from helpers.fast.packing import packs
from helpers.pruning import prune_blocks
from helpers.static_criteria import magnitude_scores, position_blocks

PPL_FAMILIES = sorted(TINY_CONFIGS)


def batches():
    """Two batches of different shapes, both with a right-padded row."""
    return [tiny_inputs(seed=0), tiny_inputs(seed=1, batch=3, length=9)]


def block_params(model, index: int) -> dict[str, torch.nn.Parameter]:
    """Parameters of block ``index`` found by name in the whole model (not through helpers.blocks)."""
    prefix = f"{block_path(model.config.model_type)}.{index}."
    return {name: p for name, p in model.named_parameters() if name.startswith(prefix)}


def hand_nll(model, batch) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over the real tokens of a batch, by log-softmax and gather; and the token count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = batch["input_ids"][:, 1:]
    real = batch["attention_mask"][:, 1:].bool()
    picked = log_probs.gather(-1, targets[..., None])[..., 0]
    return -picked[real].sum(), int(real.sum())


def hand_ppl(model, data) -> float:
    with torch.no_grad():
        parts = [hand_nll(model, batch) for batch in data]
    return math.exp(sum(nll.item() for nll, _ in parts) / sum(n for _, n in parts))


# ---------------------------------------------------------------- position


@pytest.mark.parametrize(
    "n, k, strategy, kwargs, expected",
    [
        (10, 3, "first", {}, [0, 1, 2]),
        (10, 3, "last", {}, [7, 8, 9]),
        (10, 4, "middle", {}, [3, 4, 5, 6]),
        (10, 3, "middle", {}, [3, 4, 5]),
        (9, 2, "middle", {}, [3, 4]),
        (10, 3, "keep_edges", {}, [6, 7, 8]),
        (32, 6, "keep_edges", dict(protect_first=4, protect_last=2), [24, 25, 26, 27, 28, 29]),
        (30, 0.2, "last", {}, [24, 25, 26, 27, 28, 29]),
    ],
)
def test_position_blocks_by_hand(n, k, strategy, kwargs, expected):
    assert position_blocks(n, k, strategy, **kwargs) == expected


def test_middle_is_centred_for_every_depth():
    for n in range(2, 40):
        for k in range(1, n):
            blocks = position_blocks(n, k, "middle")
            before, after = blocks[0], n - 1 - blocks[-1]
            assert blocks == list(range(blocks[0], blocks[0] + k)) and after - before in (0, 1)


@pytest.mark.parametrize(
    "args, message",
    [
        ((10, 2, "centre"), "strategy must be one of"),
        ((10, 10, "first"), "between 1 and 9"),
        ((1, 1, "first"), "at least 2"),
        ((10, 9, "keep_edges"), "leaves 8 removable"),
    ],
)
def test_position_blocks_refuses_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        position_blocks(*args)


# ---------------------------------------------------------------- magnitude


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_magnitude_equals_sums_over_named_parameters(family):
    model = tiny_model(family)
    for i in range(N_LAYERS):
        params = block_params(model, i)
        matrices = [p for p in params.values() if p.dim() == 2]
        l1 = sum(p.abs().sum().item() for p in params.values())
        l2 = math.sqrt(sum((p.double() ** 2).sum().item() for p in params.values()))
        count = sum(p.numel() for p in params.values())
        assert magnitude_scores(model)[i] == pytest.approx(l1, rel=1e-6)
        assert magnitude_scores(model, norm="l2")[i] == pytest.approx(l2, rel=1e-6)
        assert magnitude_scores(model, per_parameter=True)[i] == pytest.approx(l1 / count, rel=1e-6)
        assert magnitude_scores(model, norm="l2", per_parameter=True)[i] == pytest.approx(
            l2 / math.sqrt(count), rel=1e-6
        )
        assert magnitude_scores(model, weights="matrices")[i] == pytest.approx(
            sum(p.abs().sum().item() for p in matrices), rel=1e-6
        )
    scores = magnitude_scores(model)
    assert scores.name == "magnitude_l1" and scores.index.name == "block" and list(scores.index) == list(range(6))


def test_magnitude_refuses_nan_naming_the_block():
    model = tiny_model("llama")
    with torch.no_grad():
        next(iter(block_params(model, 2).values()))[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"block\(s\) \[2\]"):
        magnitude_scores(model)
    with pytest.raises(ValueError, match="norm must be one of"):
        magnitude_scores(tiny_model("llama"), norm="l3")


# ---------------------------------------------------------------- Taylor


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_taylor_equals_a_hand_computed_first_order_score(family):
    model = tiny_model(family)
    data = batches()
    params = [block_params(model, i) for i in range(N_LAYERS)]
    flat = [p for block in params for p in block.values()]
    # The loss of the whole calibration set in one expression: mean NLL over every real token of every batch.
    parts = [hand_nll(model, batch) for batch in data]
    loss = sum(nll for nll, _ in parts) / sum(n for _, n in parts)
    grads = iter(torch.autograd.grad(loss, flat))
    expected = [sum((p.double() * next(grads).double()).abs().sum().item() for p in block.values()) for block in params]

    # The model as a learner might hand it over: training mode (GPT-2 has dropout), some weights frozen.
    model.train()
    frozen = [next(iter(params[1].values())), model.get_input_embeddings().weight]
    for p in frozen:
        p.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    scores = taylor_scores(model, data, progress=False)

    assert scores.tolist() == pytest.approx(expected, rel=1e-4)
    assert scores.name == "taylor" and scores.nunique() == N_LAYERS
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(module.training for module in model.modules())


def test_taylor_matrices_only_skips_norms_and_biases():
    model = tiny_model("gpt2")
    data = batches()
    params = [block_params(model, i) for i in range(N_LAYERS)]
    flat = [p for block in params for p in block.values()]
    parts = [hand_nll(model, batch) for batch in data]
    loss = sum(nll for nll, _ in parts) / sum(n for _, n in parts)
    grads = dict(zip(map(id, flat), torch.autograd.grad(loss, flat)))
    expected = [sum((p * grads[id(p)]).abs().sum().item() for p in b.values() if p.dim() == 2) for b in params]
    assert taylor_scores(model, data, weights="matrices", progress=False).tolist() == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------- PPL


@pytest.mark.parametrize("family", PPL_FAMILIES)
def test_cached_ppl_equals_the_naive_loop_and_its_ranking(family):
    model = tiny_model(family)
    cached = ppl_scores(model, batches(), progress=False)
    naive = ppl_scores(model, batches(), cached=False, progress=False)
    assert cached.tolist() == pytest.approx(naive.tolist(), rel=1e-4)
    assert cached.sort_values(kind="stable").index.tolist() == naive.sort_values(kind="stable").index.tolist()
    assert cached.max() - cached.min() > 0.5  # the blocks really differ, so the ranking means something


def short_and_long_rows() -> list[dict[str, torch.Tensor]]:
    """One full row of 12 tokens and five short ones (2 to 5 tokens), right-padded: packing them saves work."""
    data = [tiny_inputs(seed=4, batch=3, length=12), tiny_inputs(seed=5, batch=3, length=12)]
    for batch, lengths in zip(data, [(12, 4, 3), (5, 2, 3)]):
        batch["attention_mask"] = (torch.arange(12) < torch.tensor(lengths)[:, None]).long()
    return data


@pytest.mark.parametrize("family", PPL_FAMILIES)
def test_ppl_by_sample_on_packed_rows_equals_each_sample_alone(family):
    model, data = tiny_model(family), short_and_long_rows()
    widths = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: widths.append(args[0].shape))
    try:
        sums = ppl_by_sample(model, data, progress=False).sums
    finally:
        handle.remove()

    rows = [{key: value[r : r + 1, : int(batch["attention_mask"][r].sum())] for key, value in batch.items()}
            for batch in data for r in range(3)]  # fmt: skip
    with torch.no_grad():
        expected = [[hand_nll(prune_blocks(model, [i]), row)[0].item() for i in range(N_LAYERS)] for row in rows]
    torch.testing.assert_close(
        torch.tensor(sums.to_numpy()), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-5
    )
    # Packed (first fit, longest first): rows 12 | 5+4+3 | 3+2, one batch of 3 x 12 a pass instead of two.
    packed = packs(model)
    assert packed or family not in ("llama", "gpt2", "opt")
    assert widths == [torch.Size([3, 12])] * (1 + N_LAYERS) * (1 if packed else 2)
    assert ppl_positions(model, data) == (36 if packed else 72)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_ppl_of_each_block_is_the_perplexity_of_the_pruned_model(family):
    model = tiny_model(family)
    scores = ppl_scores(model, batches(), progress=False)
    expected = [hand_ppl(prune_blocks(model, [i]), batches()) for i in range(N_LAYERS)]
    assert scores.tolist() == pytest.approx(expected, rel=1e-4)
    assert scores.name == "ppl" and scores.index.name == "block"


def test_ppl_leaves_the_model_as_found():
    model = tiny_model("gemma2")
    inputs = tiny_inputs()
    with torch.no_grad():
        before = model(**inputs).logits
    n_layers, layer_types = model.config.num_hidden_layers, list(model.config.layer_types)
    model.train()
    ppl_scores(model, batches(), progress=False)
    assert all(module.training for module in model.modules())
    assert model.config.num_hidden_layers == n_layers and model.config.layer_types == layer_types
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before, rtol=0, atol=0)


def test_nan_in_a_block_is_named_by_the_data_criteria():
    # Only the model without block 2 is finite: the criteria must name block 2, not all the others.
    model = tiny_model("llama")
    with torch.no_grad():
        next(iter(block_params(model, 2).values())).fill_(float("nan"))
    for cached in (True, False):
        with pytest.raises(FloatingPointError, match=r"PPL criterion is not finite: .* first produced by block 2\."):
            ppl_scores(model, batches(), cached=cached, progress=False)
    with pytest.raises(FloatingPointError, match=r"Taylor criterion's loss is not finite: .* by block 2\."):
        taylor_scores(model, batches(), progress=False)
    with pytest.raises(FloatingPointError, match=r"SLEB's perplexity is not finite: .* by block 2\."):
        sleb_removal(model, batches(), 1, progress=False)
    assert all(p.requires_grad for p in model.parameters())


def test_nan_in_the_head_or_embeddings_is_named():
    model = tiny_model("llama")
    with torch.no_grad():
        model.lm_head.weight[5].fill_(float("inf"))
    with pytest.raises(
        FloatingPointError, match=r"by the final norm or the LM head \(every block's output is finite\)"
    ):
        ppl_scores(model, batches(), progress=False)
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"by the embeddings \(the input of block 0\)"):
        ppl_scores(model, batches(), progress=False)


def test_taylor_inside_inference_mode_says_why_it_cannot_run():
    model = tiny_model("llama")
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"needs gradients.*outside the `with torch"):
        taylor_scores(model, batches(), progress=False)


def test_ppl_refuses_batches_without_tokens():
    with pytest.raises(ValueError, match="non-empty list"):
        ppl_scores(tiny_model("llama"), [], progress=False)
    with pytest.raises(ValueError, match="input_ids"):
        ppl_scores(tiny_model("llama"), [{"ids": torch.ones(1, 3)}], progress=False)


# ---------------------------------------------------------------- SLEB


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sleb_steps_are_argmins_of_hand_computed_perplexities(family):
    model = tiny_model(family)
    data = batches()
    frame = sleb_removal(model, data, 3, progress=False)
    assert frame.index.name == "step" and frame.index.tolist() == [1, 2, 3]

    removed = []
    for step in (1, 2, 3):
        options = {b: hand_ppl(prune_blocks(model, removed + [b]), data) for b in range(N_LAYERS) if b not in removed}
        best = min(options, key=lambda b: (options[b], b))
        assert frame.loc[step, "block"] == best
        assert frame.loc[step, "ppl"] == pytest.approx(options[best], rel=1e-4)
        removed.append(best)


def test_sleb_first_step_is_the_one_shot_ppl_argmin_and_protection_holds():
    model = tiny_model("gemma2")
    data = batches()
    one_shot = ppl_scores(model, data, cached=False, progress=False)
    assert sleb_removal(model, data, 1, progress=False).loc[1, "block"] == one_shot.idxmin()
    frame = sleb_removal(model, data, 2, protect_first=2, protect_last=1, progress=False)
    assert set(frame["block"]) <= {2, 3, 4}
    with pytest.raises(ValueError, match="leaves 3 removable"):
        sleb_removal(model, data, 4, protect_first=2, protect_last=1, progress=False)


def test_sleb_takes_its_first_step_from_the_ppl_criterion_and_goes_on_from_there():
    model = tiny_model("llama")
    data = batches()
    one_shot = ppl_by_sample(model, data, progress=False).scores()
    plain = sleb_removal(model, data, 3, progress=False)
    reused = sleb_removal(model, data, 3, first_step=one_shot, progress=False)
    assert reused["block"].tolist() == plain["block"].tolist()
    assert reused["ppl"].to_numpy() == pytest.approx(plain["ppl"].to_numpy(), rel=1e-5)
    # The given scores are what step 1 decides on (no pass of its own), and step 2 is measured without that block.
    forced = one_shot.copy()
    worst = int(one_shot.idxmax())
    forced[worst] = one_shot.min() / 2
    frame = sleb_removal(model, data, 2, first_step=forced, progress=False)
    assert frame.loc[1, "block"] == worst
    options = {b: hand_ppl(prune_blocks(model, [worst, b]), data) for b in range(N_LAYERS) if b != worst}
    best = min(options, key=lambda b: (options[b], b))
    assert frame.loc[2, "block"] == best
    assert frame.loc[2, "ppl"] == pytest.approx(options[best], rel=1e-4)


@pytest.mark.parametrize(
    "first_step, error, message",
    [
        ([1.0, 2.0, 3.0, 4.0], TypeError, "pandas Series"),
        ("missing", ValueError, r"no score for candidate blocks \[3\]"),
        ("nan", ValueError, "finite positive perplexities"),
    ],
)
def test_sleb_refuses_a_first_step_that_cannot_be_one(first_step, error, message):
    model = tiny_model("llama")
    data = batches()
    scores = ppl_by_sample(model, data, progress=False).scores()
    if first_step == "missing":
        first_step = scores.drop(index=3)
    elif first_step == "nan":
        first_step = scores.where(scores.index != 1)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(error, match=message):
        sleb_removal(model, data, 2, first_step=first_step, progress=False)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
