"""helpers.zero_shot and its fast scorer (helpers.fast) against independent computations: lm-eval itself, a naive
per-request loop, the data README.

lm-eval runs offline on the offline copies (``evaluate_zero_shot(..., engine="lm-eval")``); the hub is never
reached: tests that read the hub path replace ``datasets.load_dataset`` with a fake. Real-data tests read
``$DEPTH_PRUNING_DATA`` (set to /work/shared/data when unset). Models: tiny random ones with SmolLM2's real tokenizer
(so prompts tokenise as for the course model), and the packaged SmolLM2 (slow).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import TINY_CONFIGS
from tiny_tokenizer import tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.fast.gguf import prepare_default_model
from helpers.fast.packing import packs
from helpers.fast.zero_shot_scorer import _batches, _Encoder, _packed_row, _units, score_requests
from helpers.model import load_model
from helpers.pruning import skip_blocks
from helpers.settings import DATA_ENV, data_dir
from helpers.zero_shot import (
    BENCHMARK_DIR,
    TASK_NAMES,
    TASKS,
    evaluate_zero_shot,
    item_ids,
    load_task,
)

SHARED_DATA = Path("/work/shared/data")
LOGLIK_TOLERANCE = 1e-3  # nats; float32 sums computed in other batch shapes differ by ~1e-5


@pytest.fixture
def real_data(monkeypatch):
    """The offline copies, read offline: ``$DEPTH_PRUNING_DATA`` if set (CI), else /work/shared/data."""
    if DATA_ENV not in os.environ:
        if not (SHARED_DATA / BENCHMARK_DIR).is_dir():
            pytest.skip(f"no offline benchmark copies in {SHARED_DATA} and ${DATA_ENV} is not set")
        monkeypatch.setenv(DATA_ENV, str(SHARED_DATA))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return data_dir() / BENCHMARK_DIR


@pytest.fixture(scope="module")
def smollm_tokenizer():
    return AutoTokenizer.from_pretrained(prepare_default_model())


def tiny_model(family: str, vocab: int, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of ``family`` over a real tokenizer's vocabulary (weights perturbed, eval mode)."""
    torch.manual_seed(seed)
    config = TINY_CONFIGS[family]()
    config.vocab_size = vocab
    for name in ("max_position_embeddings", "n_positions"):
        if hasattr(config, name):
            setattr(config, name, 1024)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


DECISIONS = ["gold", "pred", "acc", "pred_norm"]


def assert_same_as_lm_eval(ours: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Same columns and items, log-likelihoods within float32 noise, the same gold, predictions, acc and acc_norm."""
    assert list(ours.columns) == list(reference.columns)
    assert list(zip(ours["task"], ours["item"])) == list(zip(reference["task"], reference["item"]))
    for (_, a), (_, b) in zip(ours.iterrows(), reference.iterrows()):
        where = f"{a['task']} item {a['item']}"
        np.testing.assert_allclose(a["loglik"], b["loglik"], rtol=0, atol=LOGLIK_TOLERANCE, err_msg=where)
        assert a[DECISIONS].tolist() == b[DECISIONS].tolist(), where
        assert a["acc_norm"] == b["acc_norm"] or np.isnan(a["acc_norm"]) and np.isnan(b["acc_norm"]), where


# --- lm-eval itself ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2: sliding window and logit soft-capping
def test_both_engines_give_the_same_items_on_tiny_models(real_data, smollm_tokenizer, family):
    """Every task kind: multiple choice with and without acc_norm, WinoGrande's two contexts, LAMBADA's last word."""
    model = tiny_model(family, len(smollm_tokenizer))
    items = {task: item_ids(len(load_task(task)), 3, seed=1) for task in TASK_NAMES}
    ours = evaluate_zero_shot(model, smollm_tokenizer, items=items, batch_tokens=256, progress=False)
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    lm_eval = evaluate_zero_shot(model, smollm_tokenizer, items=items, engine="lm-eval", batch_size=4, progress=False)
    assert torch.equal(torch.rand(3), expected_draw)  # lm-eval left the caller's random generator alone
    assert_same_as_lm_eval(ours, lm_eval)


@pytest.mark.slow
def test_smollm2_scores_like_lm_eval_also_with_skipped_blocks(real_data):
    model, tokenizer = load_model()
    items = {task: item_ids(len(load_task(task)), 2, seed=2) for task in TASK_NAMES}
    with skip_blocks(model, [5, 20]):
        ours = evaluate_zero_shot(model, tokenizer, items=items, progress=False)
        lm_eval = evaluate_zero_shot(model, tokenizer, items=items, engine="lm-eval", batch_size=8, progress=False)
    assert_same_as_lm_eval(ours, lm_eval)


def test_the_lm_eval_engine_leaves_the_tokenizer_and_the_training_mode_alone(real_data, smollm_tokenizer):
    tokenizer = copy.deepcopy(smollm_tokenizer)
    tokenizer.pad_token = None  # HFLM sets a missing pad token on the tokenizer it is given
    model = tiny_model("llama", len(tokenizer)).train()  # and calls model.eval()
    evaluate_zero_shot(model, tokenizer, ["piqa"], items={"piqa": [0]}, engine="lm-eval", progress=False)
    assert tokenizer.pad_token is None and len(tokenizer) == len(smollm_tokenizer)
    assert all(module.training for module in model.modules())


def test_the_lm_eval_engine_says_how_to_install_lm_eval(real_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    with pytest.raises(ImportError, match="pip install lm-eval"):
        evaluate_zero_shot(object(), object(), ["piqa"], items={"piqa": [0]}, engine="lm-eval")


@pytest.mark.parametrize("add_bos", [False, True])
def test_pairs_tokenise_like_lm_eval(smollm_tokenizer, add_bos):
    from lm_eval.models.huggingface import HFLM

    tokenizer = tiny_tokenizer(add_bos=add_bos) if add_bos else smollm_tokenizer
    model = tiny_model("llama", len(tokenizer))
    reference = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    ours = _Encoder(tokenizer)
    pairs = [
        ("Question: is the message free?\nAnswer:", " yes"),
        ("the cat sat on ", "the mat ."),
        ("[BOS] hi ", "ok"),
        ("<|im_start|>hi ", " there"),
        ("Answer:  ", "you win"),
    ]
    for context, continuation in pairs:
        assert ours.pair(context, continuation) == reference._encode_pair(context, continuation)
    assert (ours.pair("hi", "ok")[0][:1] == [tokenizer.bos_token_id]) == add_bos


# --- scoring: a naive loop on every family ---------------------------------------------------------------------------


def naive_scores(model, pairs, max_length):
    """One full forward pass per request on (context + continuation)[-(max_length + 1):][:-1], no cache, as lm-eval."""
    loglik, greedy = [], []
    for context, continuation in pairs:
        tokens = (context + continuation)[-(max_length + 1) :]
        with torch.no_grad():
            log_probs = model(input_ids=torch.tensor([tokens[:-1]])).logits[0].log_softmax(-1)
        scored = log_probs[-len(continuation) :]
        target = torch.tensor(continuation)
        loglik.append(float(scored.gather(1, target[:, None]).sum()))
        greedy.append(bool((scored.argmax(-1) == target).all()))
    return np.array(loglik), np.array(greedy)


PACKED = {
    *("gemma", "gpt2", "gpt_bigcode", "gpt_neox", "gptj", "llama", "mixtral", "olmo2", "opt", "phi", "phi3"),
    *("qwen3", "qwen3_moe", "smollm3"),
}
"""The tiny families scored on packed rows; the rest (ALiBi, sliding windows) use the KV cache."""


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_scores_equal_a_naive_loop_for_every_family(family):
    model = tiny_model(family, 96)
    assert packs(model) == (family in PACKED)  # the fast path is never skipped silently
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 96, (n,), generator=g).tolist()  # noqa: E731
    shared, packed = ids(9), ids(5)
    pairs = [
        (shared, ids(3)),
        (shared, ids(1)),
        (shared, ids(6)),
        (ids(4), ids(1)),
        (ids(1), ids(5)),
        (ids(7), ids(2)),
        (ids(30), ids(4)),
        (ids(12), ids(12)),
        (ids(9), ids(3)),
        *[(packed, ids(n)) for n in (2, 7, 1, 4, 9)],  # one packed row of segments of different lengths
    ]
    greedy_target = ids(6)  # a continuation that is the model's own greedy choice
    with torch.no_grad():
        for _ in range(3):
            greedy_target.append(int(model(input_ids=torch.tensor([greedy_target])).logits[0, -1].argmax()))
    pairs.append((greedy_target[:6], greedy_target[6:]))
    lengths = sorted(len(_packed_row(unit)[0]) for unit in _units(pairs, 1024))
    assert any(lengths[r[0]] != lengths[r[-1]] for r in _batches(lengths, 64, False))  # batches with padded rows
    implementations = ["sdpa", "eager"] if family in PACKED else [model.config._attn_implementation]
    for implementation in implementations:  # the packed mask as a bool (sdpa) and as an additive float (eager)
        model.set_attn_implementation(implementation)
        for max_length, batch_tokens in ((1024, 40), (1024, 64), (1024, 4096), (20, 64)):  # 20: long pairs truncated
            loglik, greedy = score_requests(
                model, pairs, max_length=max_length, batch_tokens=batch_tokens, progress=False
            )
            expected_loglik, expected_greedy = naive_scores(model, pairs, max_length)
            np.testing.assert_allclose(loglik, expected_loglik, rtol=0, atol=1e-4)
            assert greedy.tolist() == expected_greedy.tolist() and greedy[-1]


@pytest.mark.parametrize("family", ["mistral", "qwen2", "starcoder2"])
def test_sliding_window_families_pack_without_a_window(family):
    config = TINY_CONFIGS[family]()
    config.sliding_window, config.use_sliding_window = None, False
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = ["full_attention"] * config.num_hidden_layers
    model = AutoModelForCausalLM.from_config(config).eval()
    assert packs(model)
    g = torch.Generator().manual_seed(1)
    context = torch.randint(3, 96, (8,), generator=g).tolist()
    pairs = [(context, torch.randint(3, 96, (n,), generator=g).tolist()) for n in (3, 1, 5)]
    loglik, greedy = score_requests(model, pairs, max_length=128, batch_tokens=64, progress=False)
    expected_loglik, expected_greedy = naive_scores(model, pairs, 128)
    np.testing.assert_allclose(loglik, expected_loglik, rtol=0, atol=1e-4)
    assert greedy.tolist() == expected_greedy.tolist()


# --- documents: hub and offline copies --------------------------------------------------------------------------------


def hub_rows_by_hand(task: str, folder: Path) -> list[dict]:
    """The hub rows lm-eval loads, built from the raw offline files with the data README's mapping."""

    def lines(name):
        return (folder / name).read_text(encoding="utf-8").splitlines()

    files = [json.loads(line) for line in lines(TASKS[task].files[0])]
    if task == "hellaswag":
        return [{**d, "label": str(d["label"])} for d in files]
    if task in ("arc_easy", "arc_challenge", "openbookqa"):
        question = "question" if task != "openbookqa" else "question_stem"
        return [
            {
                "id": d["id"],
                question: d["question"]["stem"],
                "choices": {
                    "text": [c["text"] for c in d["question"]["choices"]],
                    "label": [c["label"] for c in d["question"]["choices"]],
                },
                "answerKey": d["answerKey"],
            }
            for d in files
        ]
    if task == "piqa":
        return [
            {"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)}
            for d, y in zip(files, lines("piqa/valid-labels.lst"))
        ]
    if task == "winogrande":
        return [{key: d[key] for key in ("sentence", "option1", "option2", "answer")} for d in files]
    if task == "boolq":
        return [
            {
                "question": d["question"],
                "passage": f"{d['title']} -- {d['passage']}",
                "idx": i,
                "label": 1 if d["answer"] else 0,
            }
            for i, d in enumerate(files)
        ]
    return [{"text": d["text"]} for d in files]


ROWS = {
    "hellaswag": 10042,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "piqa": 1838,
    "winogrande": 1267,
    "boolq": 3270,
    "openbookqa": 500,
    "lambada_openai": 5153,
}  # the data README's row counts


@pytest.mark.parametrize("task", TASK_NAMES)
def test_hub_and_offline_copies_give_the_same_rows(real_data, monkeypatch, task):
    hub = hub_rows_by_hand(task, real_data)
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(hub)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    local = load_task(task, source="local")
    assert len(local) == ROWS[task]
    assert load_task(task, source="hub") == local == hub
    path, name, split = TASKS[task].hub
    assert calls == [((path, name), {"split": split})]
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert load_task(task) == local  # "auto" with the (fake) hub reachable


def test_prompts_follow_the_readme(real_data):
    hellaswag = TASKS["hellaswag"].to_item(load_task("hellaswag")[0])
    assert hellaswag.requests[0] == (
        "Roof shingle removal: A man is sitting on a roof. He",
        " is using wrap to wrap a pair of skis.",
    )
    assert hellaswag.gold == 3 and len(hellaswag.choices) == 4
    arc = load_task("arc_easy")
    regents = next(i for i, row in enumerate(arc) if row["id"].startswith("NYSEDREGENTS"))
    row = arc[regents]  # digit labels: the gold index comes from the label list, never from the letter
    assert TASKS["arc_easy"].to_item(row).gold == row["choices"]["label"].index(row["answerKey"])
    wino = TASKS["winogrande"].to_item(load_task("winogrande")[0])
    assert len(wino.requests) == 2 and wino.requests[0][1] == wino.requests[1][1] and wino.choices == ()
    text = load_task("lambada_openai")[0]["text"]
    ((context, target),) = TASKS["lambada_openai"].to_item({"text": text}).requests
    assert context + target == text and " " not in target[1:]


def test_missing_offline_copies_say_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    for switch in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(switch, raising=False)
    with pytest.raises(FileNotFoundError, match="hellaswag_val.jsonl") as error:
        load_task("hellaswag", source="local")
    assert f"${DATA_ENV}" in str(error.value)
    (tmp_path / "benchmarks" / "piqa").mkdir(parents=True)
    (tmp_path / "benchmarks" / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="valid-labels.lst.*HF_HUB_OFFLINE"):
        load_task("piqa")


# --- items, statistics, bad input ------------------------------------------------------------------------------------


def test_item_subsets_are_seeded_nested_and_in_row_order():
    ten = item_ids(1000, 10, seed=0)
    assert ten == sorted(ten) and len(set(ten)) == 10 and ten == item_ids(1000, 10, seed=0)
    assert set(item_ids(1000, 4, seed=0)) <= set(ten) and item_ids(1000, 10, seed=1) != ten
    assert item_ids(5, None, seed=0) == list(range(5)) and item_ids(5, 9, seed=0) == list(range(5))


def test_bad_input_is_rejected(real_data):
    model, tokenizer = object(), object()  # never reached: the checks come first
    with pytest.raises(ValueError, match="hellaswag, arc_easy.*got \\['mmlu'\\]"):
        evaluate_zero_shot(model, tokenizer, ["mmlu"])
    with pytest.raises(ValueError, match="engine must be one of 'course', 'lm-eval'; got 'vllm'"):
        evaluate_zero_shot(model, tokenizer, ["piqa"], engine="vllm")
    with pytest.raises(ValueError, match="either limit"):
        evaluate_zero_shot(model, tokenizer, ["piqa"], limit=3, items={"piqa": [0]})
    with pytest.raises(ValueError, match="no row indices for tasks \\['boolq'\\]"):
        evaluate_zero_shot(model, tokenizer, ["piqa", "boolq"], items={"piqa": [0]})
    with pytest.raises(ValueError, match="rows 0..499; got item indices \\[500\\]"):
        evaluate_zero_shot(model, tokenizer, ["openbookqa"], items={"openbookqa": [0, 500]})
    with pytest.raises(ValueError, match="limit must be at least 1"):
        item_ids(10, 0, seed=0)
    with pytest.raises(ValueError, match="'auto', 'hub', 'local'; got 'disk'"):
        load_task("piqa", source="disk")
