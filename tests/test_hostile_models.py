"""Models that depth pruning here does not handle, and broken checkpoints or paths: each gets a clear error (what was
wrong, what is valid) or a correct answer, and nothing is changed or written when it is refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, VOCAB, tiny_model
from tiny_tokenizer import tiny_tokenizer
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    LlamaConfig,
    LlamaModel,
    T5Config,
    T5ForConditionalGeneration,
)

import helpers.model as hm
from helpers.benefits import ideal_speedup, model_bytes, parameter_count, size_summary, time_variants
from helpers.classification import sms_accuracy
from helpers.data_criteria import block_influence_by_sample, ppl_scores, sleb_removal, taylor_scores
from helpers.fast.zero_shot_scorer import score_requests
from helpers.generation import greedy_continuation
from helpers.hooks import record_block_io
from helpers.perplexity import perplexity
from helpers.pruning import prune_blocks, skip_blocks
from helpers.similarity import block_similarity
from helpers.static_criteria import magnitude_scores

TOKENIZER = tiny_tokenizer()
TEXTS = ["free cash now call to claim prize ! see you at home later ok love"] * 8
SMS = pd.DataFrame({"text": ["free cash now", "see you at home later"], "label": ["spam", "ham"]})
BATCH = dict(TOKENIZER(["free cash now", "see you at home later ok"], return_tensors="pt", padding=True))

LOGIT_CALLS = {
    "perplexity": lambda m: perplexity(m, TOKENIZER, TEXTS, seq_len=8, progress=False),
    "sms_accuracy": lambda m: sms_accuracy(m, TOKENIZER, SMS, progress=False),
    "ppl_scores": lambda m: ppl_scores(m, [BATCH], progress=False),
    "taylor_scores": lambda m: taylor_scores(m, [BATCH], progress=False),
    "sleb_removal": lambda m: sleb_removal(m, [BATCH], 1, progress=False),
    "score_requests": lambda m: score_requests(m, [([5, 6, 7], [8, 9])], max_length=32, progress=False),
    "time_variants": lambda m: time_variants(m, TOKENIZER, {"all": []}, prompt_tokens=4, new_tokens=2, warmup=0),
    "greedy_continuation": lambda m: greedy_continuation(m, TOKENIZER, "free cash", max_new_tokens=2),
}
"""Entry points that read next-token logits: they need a causal LM with its head."""

BLOCK_CALLS = {
    "prune_blocks": lambda m: prune_blocks(m, [1]),
    "prune_blocks_inplace": lambda m: prune_blocks(m, [1], inplace=True),
    "skip_blocks": lambda m: skip_blocks(m, [1]).__enter__(),
    "record_block_io": lambda m: record_block_io(m, BATCH),
    "block_similarity": lambda m: block_similarity(m, [BATCH], progress=False),
    "block_influence_by_sample": lambda m: block_influence_by_sample(m, [BATCH], progress=False),
    "magnitude_scores": lambda m: magnitude_scores(m),
}
"""Entry points that find the block list (pruning, hooks, criteria): a decoder's backbone is enough."""

EVERY_CALL = {**LOGIT_CALLS, **BLOCK_CALLS}
DECODER_ONLY = r"depth pruning here handles decoder-only causal language models"


def bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64
    )


def t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=3, num_heads=4, d_kv=8, decoder_start_token_id=0
    )
    return T5ForConditionalGeneration(config).eval()


def snapshot(model: torch.nn.Module) -> tuple:
    """Everything a refused call must leave as it was: weights, config, training flags, module structure."""
    weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
    return weights, model.config.to_dict(), [m.training for m in model.modules()], repr(model)


def assert_unchanged(model: torch.nn.Module, before: tuple) -> None:
    weights, config, flags, structure = snapshot(model)
    assert weights.keys() == before[0].keys()
    assert all(torch.equal(weights[name], before[0][name]) for name in weights)
    assert (config, flags, structure) == before[1:]


@pytest.mark.parametrize("inplace", [False, True])
def test_t5_pruning_is_refused_and_leaves_the_model_alone(inplace):
    """Case 5: pruning an encoder-decoder (T5) is refused, naming the model type, and the model stays whole."""
    model = t5()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"T5ForConditionalGeneration \(model_type 't5'\) is an encoder-decoder.*"):
        prune_blocks(model, [1], inplace=inplace)
    with pytest.raises(ValueError, match=DECODER_ONLY):
        prune_blocks(model, [1], inplace=inplace)
    assert_unchanged(model, before)
    assert len(model.decoder.block) == len(model.encoder.block) == model.config.num_decoder_layers == 3


@pytest.mark.parametrize("call", sorted(EVERY_CALL))
def test_t5_is_refused_everywhere(call):
    """Misleading error (T5): every entry point says the model is an encoder-decoder, not a decoder-only causal LM."""
    model = t5()
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"\(model_type 't5'\) is an encoder-decoder model.*{DECODER_ONLY}"):
        EVERY_CALL[call](model)
    assert_unchanged(model, before)


@pytest.mark.parametrize("call", sorted(EVERY_CALL))
def test_masked_lm_is_refused_everywhere(call):
    """Case 6: a BertForMaskedLM gets no perplexity, SMS accuracy, criterion, hook record or pruning: a clear error."""
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config()).eval()
    before = snapshot(model)
    expected = rf"BertForMaskedLM \(model_type 'bert'\) is a bidirectional encoder.*{DECODER_ONLY}"
    with pytest.raises(ValueError, match=expected):
        EVERY_CALL[call](model)
    assert_unchanged(model, before)


@pytest.mark.parametrize("call", ["perplexity", "sms_accuracy", "ppl_scores", "prune_blocks", "record_block_io"])
def test_bert_backbone_is_named_as_an_encoder(call):
    """Misleading error (BertModel, today an AttributeError): it is named as a bidirectional encoder."""
    torch.manual_seed(0)
    model = BertModel(bert_config()).eval()
    with pytest.raises(
        ValueError, match=rf"BertModel \(model_type 'bert'\) is a bidirectional encoder.*{DECODER_ONLY}"
    ):
        EVERY_CALL[call](model)


@pytest.mark.parametrize("call", sorted(LOGIT_CALLS))
def test_backbone_without_lm_head_is_refused_where_logits_are_needed(call):
    """Case 6: a backbone (LlamaModel) has no LM head: refused where logits are read, still hooked and pruned."""
    torch.manual_seed(0)
    model = LlamaModel(TINY_CONFIGS["llama"]()).eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"LlamaModel has no LM head.*pass the causal LM \(e\.g\. LlamaForCausalLM"):
        LOGIT_CALLS[call](model)
    assert_unchanged(model, before)
    # Where a backbone works today, it still does: its blocks are found, hooked and pruned.
    assert len(record_block_io(model, BATCH)) == N_LAYERS
    assert len(prune_blocks(model, [1]).layers) == N_LAYERS - 1


def untied_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    config = TINY_CONFIGS["llama"]()
    config.tie_word_embeddings = False
    return AutoModelForCausalLM.from_config(config).eval()


def quantized(model: torch.nn.Module) -> torch.nn.Module:
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def test_int8_quantized_sizes_count_the_packed_weights():
    """Case 8: parameters, bytes and size summary of a dynamically int8-quantized model count its packed weights."""
    model = untied_llama()
    small = quantized(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    linear_weights = {id(m.weight) for m in linears}
    n_values = sum(p.numel() for p in model.parameters())  # quantizing changes no count, only the storage
    in_blocks = sum(p.numel() for p in model.model.layers.parameters())
    # int8 weights (1 byte each); everything else (norms, embeddings, the rotary buffer) as it was.
    expected_bytes = sum(p.numel() * (1 if id(p) in linear_weights else p.element_size()) for p in model.parameters())
    expected_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    assert parameter_count(small) == n_values
    assert model_bytes(small) == expected_bytes
    summary = size_summary(small)
    assert (summary["parameters"], summary["block_parameters"], summary["bytes"]) == (
        n_values,
        in_blocks,
        expected_bytes,
    )
    assert ideal_speedup(small, [1, 2]) == pytest.approx(ideal_speedup(model, [1, 2]), rel=1e-12)


def test_int8_quantized_magnitude_is_refused():
    """Case 8: the weight-magnitude criterion on packed int8 weights is refused, saying to score the float model."""
    small = quantized(untied_llama())
    with pytest.raises(
        ValueError, match=r"holds dynamically quantized layers .*Score the float model before quantizing"
    ):
        magnitude_scores(small)


def test_load_model_refuses_weights_for_blocks_the_config_lacks(tmp_path):
    """Case 9: a checkpoint with weights for blocks its config does not have is refused, not silently cut short."""
    folder = tmp_path / "tiny"
    hm.save_pruned(tiny_model("llama"), TOKENIZER, folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    expected = r"has weights for blocks 4, 5 .*config states 4 layers.*Does config\.json belong to these weights"
    with pytest.raises(ValueError, match=expected):
        hm.load_model(folder, device="cpu")


@pytest.mark.parametrize("empty", ["", "  "])
def test_save_pruned_refuses_an_empty_path(tmp_path, monkeypatch, empty):
    """Case 10: save_pruned(..., "") is refused instead of writing into the current folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"folder is empty; pass the folder to save into"):
        hm.save_pruned(tiny_model("llama"), TOKENIZER, empty)
    assert list(tmp_path.iterdir()) == []


def meta_llama() -> torch.nn.Module:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(TINY_CONFIGS["llama"]())


def test_save_pruned_refuses_a_model_on_the_meta_device(tmp_path):
    """Case 10: a model on the meta device (no weights) is refused before anything is written."""
    with pytest.raises(ValueError, match=r"weights of LlamaForCausalLM are on the meta device.*load real weights"):
        hm.save_pruned(meta_llama(), TOKENIZER, tmp_path / "meta")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call", ["perplexity", "sms_accuracy", "ppl_scores", "record_block_io", "magnitude_scores"])
def test_meta_model_says_its_weights_are_not_loaded(call):
    """Misleading error (meta device): running or scoring an empty model says its weights are not loaded."""
    with pytest.raises(ValueError, match=r"weights of LlamaForCausalLM are on the meta device.*load real weights"):
        EVERY_CALL[call](meta_llama())


@pytest.mark.parametrize("call", ["prune_blocks", "record_block_io", "magnitude_scores"])
def test_zero_layer_model_is_refused(call):
    """Misleading error (0 layers): a model without blocks is refused, saying that at least one block is needed."""
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=0, num_attention_heads=4
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(ValueError, match=r"config of LlamaForCausalLM states 0 layers.*at least one transformer block"):
        EVERY_CALL[call](model)


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    """Misleading error (a cut-short model.safetensors): load_model names the file and says to save it again."""
    folder = tmp_path / "tiny"
    hm.save_pruned(tiny_model("llama"), TOKENIZER, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=r"model\.safetensors.*damaged or incomplete.*save or download it again"):
        hm.load_model(folder, device="cpu")


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    """Misleading error (device="cuda" without CUDA, today an AssertionError): load_model says what is valid."""
    folder = tmp_path / "tiny"
    hm.save_pruned(tiny_model("llama"), TOKENIZER, folder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda' but CUDA is not available.*use device='cpu' or None"):
        hm.load_model(folder, device="cuda")
