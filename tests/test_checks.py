"""One argument policy across the package: a wrong type is a TypeError, a wrong value a ValueError, and the message
names the argument, what was given and what is valid. Expected messages are written out by hand."""

from __future__ import annotations

import inspect
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pytest
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

from helpers import plots
from helpers.benefits import ideal_speedup, time_variants
from helpers.blocks import check_block_indices
from helpers.checks import check_choice, check_int, check_texts
from helpers.classification import draw_shots, sms_accuracy
from helpers.data import calibration_batches, load_sms, load_wikitext, tokenize_batches
from helpers.data_criteria import taylor_scores
from helpers.display import fmt
from helpers.healing import heal_with_lora, training_windows
from helpers.perplexity import perplexity
from helpers.selection import resolve_k, select_blocks
from helpers.similarity import block_similarity
from helpers.static_criteria import magnitude_scores, position_blocks
from helpers.statistics import bootstrap_ci
from helpers.ties import tied_ranks
from helpers.zero_shot import item_ids, load_task

MODEL = tiny_model("llama")
TOKENIZER = tiny_tokenizer()
SCORES = pd.Series([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])
SMS = pd.DataFrame({"text": ["hi", "win cash", "see you", "free prize"], "label": ["ham", "spam", "ham", "spam"]})


def test_check_int_and_check_choice_separate_type_from_value():
    with pytest.raises(TypeError, match=r"^n must be an integer; got 2.0 \(float\)$"):
        check_int("n", 2.0)
    with pytest.raises(TypeError, match=r"^n must be an integer; got True \(bool\)$"):
        check_int("n", True)
    with pytest.raises(ValueError, match=r"^n must be between 1 and 3, or None for all; got 4$"):
        check_int("n", 4, maximum=3, none_means="all")
    check_int("n", None, none_means="all")
    check_int("n", np.int64(2))
    with pytest.raises(TypeError, match=r"^how must be one of 'a', 'b'; got 1 \(int\)$"):
        check_choice("how", 1, ("a", "b"))
    with pytest.raises(ValueError, match=r"^how must be one of 'a', 'b', or None for neither; got 'c'$"):
        check_choice("how", "c", ("a", "b"), none_means="neither")
    with pytest.raises(TypeError, match=r"^how must be one of 'a', 'b'; got None \(NoneType\)$"):
        check_choice("how", None, ("a", "b"))
    check_choice("how", None, ("a", "b"), none_means="neither")


def test_check_texts_takes_any_collection_of_strings_but_not_one_string():
    assert check_texts(("a", "b")) == ["a", "b"]
    assert check_texts(pd.Series(["a", "b"])) == ["a", "b"]
    with pytest.raises(TypeError, match="not one string"):
        check_texts("ab")
    with pytest.raises(TypeError, match=r"texts\[1\] is 3"):
        check_texts(["a", 3])
    with pytest.raises(TypeError, match="got int"):
        check_texts(3)


ONE_STRING = "hi see you at home later " * 20


@pytest.mark.parametrize(
    "call",
    [
        lambda: tokenize_batches(TOKENIZER, ONE_STRING),
        lambda: perplexity(MODEL, TOKENIZER, ONE_STRING, seq_len=8, progress=False),
        lambda: training_windows(TOKENIZER, ONE_STRING, 8),
        lambda: heal_with_lora(MODEL, TOKENIZER, ONE_STRING, steps=1, seq_len=8, progress=False),
    ],
    ids=["tokenize_batches", "perplexity", "training_windows", "heal_with_lora"],
)
def test_one_string_for_texts_is_the_same_type_error_everywhere(call):
    with pytest.raises(TypeError, match=r"^texts must be a list of strings, not one string"):
        call()


WRONG_TYPES = {
    "load_wikitext split": (lambda: load_wikitext(3), r"split must be one of 'calibration', 'evaluation', 'all'"),
    "load_sms source": (lambda: load_sms(source=None), r"source must be one of 'auto', 'hub', 'local'"),
    "calibration_batches dataset": (lambda: calibration_batches(TOKENIZER, ["wikitext"]), "dataset must be one of"),
    "load_task source": (lambda: load_task("piqa", source=1), "source must be one of"),
    "sms_accuracy decision": (
        lambda: sms_accuracy(MODEL, TOKENIZER, pd.DataFrame({"text": ["hi"], "label": ["ham"]}), decision=0),
        "decision must be one of 'argmax', 'prior'; got 0",
    ),
    "position_blocks strategy": (lambda: position_blocks(10, 2, None), "strategy must be one of"),
    "position_blocks n_blocks": (lambda: position_blocks(10.0, 2, "first"), r"n_blocks must be an integer; got 10.0"),
    "magnitude_scores norm": (lambda: magnitude_scores(MODEL, norm=1), "norm must be one of 'l1', 'l2'; got 1"),
    "taylor_scores weights": (
        lambda: taylor_scores(MODEL, [{"input_ids": MODEL.dummy_inputs["input_ids"]}], weights=None, progress=False),
        "weights must be one of",
    ),
    "tied_ranks method": (lambda: tied_ranks(SCORES, method=None), "method must be one of 'average', 'min'"),
    "normalise": (lambda: plots.normalise(SCORES.to_frame(), 3), "normalise must be one of 'rank', 'minmax', or None"),
    "select_blocks protect_first": (lambda: select_blocks(SCORES, 2, protect_first=1.0), "protect_first must be an"),
    "ideal_speedup seq_len": (lambda: ideal_speedup(MODEL, [1], seq_len=2.5), "seq_len must be an integer, or None"),
    "time_variants repetitions": (lambda: time_variants(MODEL, TOKENIZER, {}, repetitions="2"), "repetitions must be"),
    "bootstrap_ci n_boot": (lambda: bootstrap_ci(np.ones(5), n_boot=10.0), r"n_boot must be an integer; got 10.0"),
    "item_ids limit": (lambda: item_ids(10, 2.5, 0), r"limit must be an integer, or None for every item; got 2.5"),
    "heal_with_lora steps": (lambda: heal_with_lora(MODEL, TOKENIZER, [ONE_STRING], steps=2.0), "steps must be an"),
    "fmt digits": (lambda: fmt(1.0, digits=2.0), r"digits must be an integer; got 2.0"),
    "check_block_indices index": (lambda: check_block_indices([1, 2.0], 6), r"block index 2.0 is not an integer"),
    "check_block_indices string": (lambda: check_block_indices("12", 6), "blocks must be a list of block indices"),
    "resolve_k k": (lambda: resolve_k("2", 6), r"k must be a number of blocks .*; got '2' \(str\)"),
    "select_blocks scores": (lambda: select_blocks(SCORES.to_numpy(), 2), "scores must be a pandas Series"),
    "block_similarity one batch": (
        lambda: block_similarity(MODEL, {"input_ids": MODEL.dummy_inputs["input_ids"]}, progress=False),
        "not one batch",
    ),
    "block_similarity batch": (
        lambda: block_similarity(MODEL, [MODEL.dummy_inputs["input_ids"]], progress=False),
        "batch 0 is a Tensor, not a dict",
    ),
    "draw_shots shots": (lambda: draw_shots(SMS, 2.0, exclude=SMS.iloc[:0]), r"shots must be an integer; got 2.0"),
}

WRONG_VALUES = {
    "load_wikitext split": (lambda: load_wikitext("train"), r"split must be one of .*; got 'train'"),
    "position_blocks strategy": (lambda: position_blocks(10, 2, "centre"), r"strategy must be one of .*'centre'"),
    "position_blocks n_blocks": (lambda: position_blocks(1, 1, "first"), "n_blocks must be at least 2; got 1"),
    "magnitude_scores norm": (lambda: magnitude_scores(MODEL, norm="l3"), "norm must be one of 'l1', 'l2'; got 'l3'"),
    "tied_ranks method": (lambda: tied_ranks(SCORES, method="dense"), "method must be one of 'average', 'min'"),
    "select_blocks protect_last": (
        lambda: select_blocks(SCORES, 2, protect_last=-1),
        "protect_last must be at least 0",
    ),
    "ideal_speedup seq_len": (lambda: ideal_speedup(MODEL, [1], seq_len=0), "seq_len must be at least 1, or None"),
    "time_variants warmup": (lambda: time_variants(MODEL, TOKENIZER, {}, warmup=-1), "warmup must be at least 0"),
    "bootstrap_ci n_boot": (lambda: bootstrap_ci(np.ones(5), n_boot=0), "n_boot must be at least 1000; got 0"),
    "item_ids limit": (lambda: item_ids(10, 0, 0), "limit must be at least 1, or None for every item; got 0"),
    "heal_with_lora rank": (lambda: heal_with_lora(MODEL, TOKENIZER, [ONE_STRING], rank=0), "rank must be at least 1"),
    "check_block_indices index": (lambda: check_block_indices([6], 6), r"out of range .* valid indices are 0\.\.5"),
    "resolve_k k": (lambda: resolve_k(6, 6), "k must be between 1 and 5 blocks"),
    "draw_shots shots": (lambda: draw_shots(SMS, -1, exclude=SMS.iloc[:0]), "shots must be at least 0; got -1"),
}


@pytest.mark.parametrize("case", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_a_wrong_type_is_a_type_error(case):
    call, message = case
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize("case", WRONG_VALUES.values(), ids=WRONG_VALUES.keys())
def test_a_wrong_value_is_a_value_error(case):
    call, message = case
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "function, argument, choices",
    [
        (sms_accuracy, "decision", ("argmax", "prior")),
        (load_wikitext, "split", ("calibration", "evaluation", "all")),
        (load_sms, "source", ("auto", "hub", "local")),
        (load_task, "source", ("auto", "hub", "local")),
        (calibration_batches, "dataset", ("wikitext", "sms")),
        (position_blocks, "strategy", ("first", "last", "middle", "keep_edges")),
        (magnitude_scores, "norm", ("l1", "l2")),
        (magnitude_scores, "weights", ("all", "matrices")),
        (taylor_scores, "weights", ("all", "matrices")),
        (tied_ranks, "method", ("average", "min")),
        (plots.plot_block_profiles, "normalise_by", ("rank", "minmax", None)),
    ],
)
def test_string_options_are_typed_as_literals(function, argument, choices):
    # The modules postpone annotations (strings); evaluate just this one in its module's namespace.
    hint = eval(inspect.signature(function).parameters[argument].annotation, vars(inspect.getmodule(function)))
    literal = next((a for a in get_args(hint) if getattr(a, "__origin__", None) is Literal), hint)
    values = get_args(literal) + ((None,) if type(None) in get_args(hint) else ())
    assert values == choices
