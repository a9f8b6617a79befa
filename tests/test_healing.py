"""LoRA healing against independent computations: perplexity of the windows before and after, the first step's loss
from the pruned model's own perplexity, merged weights rebuilt by hand from the adapters' A and B matrices."""

from __future__ import annotations

import math
import random

import pytest
import torch
from tiny_models import N_LAYERS, tiny_inputs, tiny_model
from tiny_tokenizer import WORDS, tiny_tokenizer
from transformers import AutoModelForCausalLM

from helpers.blocks import num_blocks
from helpers.healing import heal_with_lora, lora_targets, training_windows
from helpers.perplexity import perplexity
from helpers.pruning import prune_blocks

SEQ_LEN = 16
N_WINDOWS = 8
REMOVE = [2]
HEAL = dict(remove=REMOVE, steps=25, seq_len=SEQ_LEN, batch_size=N_WINDOWS, lr=1e-2, progress=False)


def make_texts(n_tokens: int, seed: int = 0) -> list[str]:
    """Texts of known words (one token each, no '##' pieces) that tokenize to exactly ``n_tokens`` tokens."""
    words = [w for w in WORDS if not w.startswith("##") and w not in {"sp"}]
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(n_tokens))]


@pytest.fixture(scope="module")
def run():
    """One healing run (batch = all windows, so every step sees the same data) with the original's state before."""
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    texts = make_texts(N_WINDOWS * SEQ_LEN)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    healed, losses = heal_with_lora(model, tokenizer, texts, **HEAL)
    return dict(model=model, tokenizer=tokenizer, texts=texts, before=before, healed=healed, losses=losses)


def test_windows_are_the_perplexity_windows(run):
    tokenizer, texts = run["tokenizer"], run["texts"]
    windows = training_windows(tokenizer, texts, SEQ_LEN)
    ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert windows.shape == (N_WINDOWS, SEQ_LEN)
    assert windows.flatten().tolist() == ids
    with_bos = training_windows(tiny_tokenizer(add_bos=True), texts, SEQ_LEN)
    assert with_bos[:, 0].tolist() == [1] * len(with_bos)
    assert with_bos[0, 1:].tolist() == ids[: SEQ_LEN - 1]
    assert with_bos[1, 1:].tolist() == ids[SEQ_LEN - 1 : 2 * (SEQ_LEN - 1)]


def test_healing_lowers_the_loss_on_the_training_windows(run):
    pruned = prune_blocks(run["model"], REMOVE)
    before = perplexity(pruned, run["tokenizer"], run["texts"], seq_len=SEQ_LEN, progress=False)
    after = perplexity(run["healed"], run["tokenizer"], run["texts"], seq_len=SEQ_LEN, progress=False)
    assert before.n_tokens == N_WINDOWS * (SEQ_LEN - 1)
    # Step 1 is measured before any update, and LoRA's B starts at zero: the pruned model's own loss.
    assert run["losses"].iloc[0] == pytest.approx(before.nll, rel=1e-5)
    assert after.ppl < 0.9 * before.ppl
    assert run["losses"].iloc[-5:].mean() < run["losses"].iloc[:5].mean()
    assert run["losses"].index.tolist() == list(range(1, HEAL["steps"] + 1))


def test_original_model_is_untouched(run):
    model = run["model"]
    after = model.state_dict()
    assert after.keys() == run["before"].keys()
    assert all(torch.equal(after[name], run["before"][name]) for name in after)
    assert num_blocks(model) == N_LAYERS and model.config.num_hidden_layers == N_LAYERS
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training
    assert not any("lora" in name for name, _ in model.named_modules())


def test_result_is_a_plain_pruned_transformers_model(run, tmp_path):
    healed = run["healed"]
    assert type(healed) is type(run["model"])
    assert not any(type(m).__module__.startswith("peft") for m in healed.modules())
    assert not any("lora" in name or "base_layer" in name for name in healed.state_dict())
    assert not hasattr(healed, "peft_config")
    assert num_blocks(healed) == healed.config.num_hidden_layers == N_LAYERS - len(REMOVE)
    assert all(p.requires_grad for p in healed.parameters()) and not healed.training
    healed.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, healed(**inputs).logits)


def test_merged_model_computes_what_the_adapters_did(run):
    peft_model, losses = heal_with_lora(run["model"], run["tokenizer"], run["texts"], merge=False, **HEAL)
    assert losses.equals(run["losses"])  # same seed, same run
    inputs = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(run["healed"](**inputs).logits, peft_model(**inputs).logits, rtol=1e-5, atol=1e-5)
    # By hand: W + (alpha / r) * B @ A for one adapted projection; untouched weights equal the pruned copy's.
    pruned = prune_blocks(run["model"], REMOVE)
    q_proj = peft_model.base_model.model.model.layers[1].self_attn.q_proj
    delta = q_proj.lora_B["default"].weight @ q_proj.lora_A["default"].weight * (16 / 8)
    expected = pruned.model.layers[1].self_attn.q_proj.weight + delta
    torch.testing.assert_close(run["healed"].model.layers[1].self_attn.q_proj.weight, expected)
    assert delta.abs().max() > 0
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"):
        assert torch.equal(run["healed"].state_dict()[name], pruned.state_dict()[name])


def test_another_seed_trains_differently(run):
    _, losses = heal_with_lora(run["model"], run["tokenizer"], run["texts"], **{**HEAL, "steps": 3, "seed": 1})
    assert losses.iloc[0] == pytest.approx(run["losses"].iloc[0], rel=1e-5)  # B = 0: same start
    assert not math.isclose(losses.iloc[2], run["losses"].iloc[2], rel_tol=1e-6)


def test_heals_an_already_pruned_model_without_removing_more(run):
    pruned = prune_blocks(run["model"], REMOVE)
    healed, losses = heal_with_lora(pruned, run["tokenizer"], run["texts"], steps=1, seq_len=SEQ_LEN, progress=False)
    assert num_blocks(healed) == num_blocks(pruned) == N_LAYERS - 1
    assert len(losses) == 1 and healed is not pruned


def adapted(peft_model) -> list[str]:
    """Names (without peft's prefix) of the modules that carry a LoRA adapter."""
    prefix = "base_model.model."
    return sorted(name.removeprefix(prefix) for name, m in peft_model.named_modules() if hasattr(m, "lora_A"))


def test_default_adapters_are_the_projections_of_the_blocks():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    peft_model, _ = heal_with_lora(model, tokenizer, make_texts(2 * SEQ_LEN), merge=False, **{**HEAL, "steps": 1})
    projections = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    # The copy lost block 2, so its blocks are 0..4.
    assert adapted(peft_model) == sorted(f"model.layers.{i}.{p}" for i in range(N_LAYERS - 1) for p in projections)


def test_gpt2_conv1d_projections_are_healed():
    """GPT-2's projections are transformers Conv1D layers (weight stored transposed), not nn.Linear."""
    model, tokenizer = tiny_model("gpt2"), tiny_tokenizer()
    texts = make_texts(N_WINDOWS * SEQ_LEN)
    peft_model, losses = heal_with_lora(model, tokenizer, texts, merge=False, **HEAL)
    projections = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert adapted(peft_model) == sorted(f"transformer.h.{i}.{p}" for i in range(N_LAYERS - 1) for p in projections)
    assert losses.iloc[-5:].mean() < losses.iloc[:5].mean()  # GPT-2 trains with its dropout: noisy steps
    pruned = prune_blocks(model, REMOVE)
    before = perplexity(pruned, tokenizer, texts, seq_len=SEQ_LEN, progress=False)
    one_step, _ = heal_with_lora(model, tokenizer, texts, **{**HEAL, "steps": 1})
    assert perplexity(one_step, tokenizer, texts, seq_len=SEQ_LEN, progress=False).nll != pytest.approx(before.nll)
    # Merging folds B @ A into the transposed weight: W + (alpha / r) * (B @ A)^T for one projection.
    c_fc = peft_model.base_model.model.transformer.h[1].mlp.c_fc
    delta = (c_fc.lora_B["default"].weight @ c_fc.lora_A["default"].weight * (16 / 8)).T
    healed, _ = heal_with_lora(model, tokenizer, texts, **HEAL)
    torch.testing.assert_close(healed.transformer.h[1].mlp.c_fc.weight, pruned.transformer.h[1].mlp.c_fc.weight + delta)
    assert type(healed) is type(model) and not any("lora" in name for name in healed.state_dict())
    after = perplexity(healed, tokenizer, texts, seq_len=SEQ_LEN, progress=False)
    assert after.ppl < 0.9 * before.ppl


def test_lora_targets_by_name_are_the_blocks_projections():
    model = tiny_model("llama")
    assert lora_targets(model) == "all-linear"
    assert lora_targets(model, ["q_proj", "down_proj"]) == [
        f"model.layers.{i}.{p}" for i in range(N_LAYERS) for p in ("self_attn.q_proj", "mlp.down_proj")
    ]
    assert lora_targets(tiny_model("gpt2"), ["c_attn"]) == [f"transformer.h.{i}.attn.c_attn" for i in range(N_LAYERS)]
    with pytest.raises(ValueError, match="lm_head.*available"):
        lora_targets(model, ["lm_head"])
    with pytest.raises(ValueError, match="empty"):
        lora_targets(model, [])
    with pytest.raises(TypeError, match="list of module names"):
        lora_targets(model, "q_proj")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(remove=[N_LAYERS]), "block"),
        (dict(target_modules=["nope"]), "nope"),
        (dict(seq_len=1000), "fewer than one window"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(run, kwargs, match):
    model = run["model"]
    with pytest.raises(ValueError, match=match):
        heal_with_lora(model, run["tokenizer"], run["texts"], **{**HEAL, **kwargs})
    with pytest.raises(TypeError, match="list of strings, not one string"):
        heal_with_lora(model, run["tokenizer"], run["texts"][0], **HEAL)
    assert all(torch.equal(t, run["before"][name]) for name, t in model.state_dict().items())
    assert num_blocks(model) == N_LAYERS
