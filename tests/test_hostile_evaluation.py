"""Calls a learner could make against the evaluation core, each of which once gave a silent or wrong answer: every
one must now give the right answer or a clear error, with the caller's model, lists and dicts left as they were."""

from __future__ import annotations

import copy
import os

import numpy as np
import pandas as pd
import pytest
import torch
from test_benchmark_results import results_of, unit
from test_evaluation_core import sentences, sms
from test_lab import fake_ppl
from tiny_models import N_LAYERS, tiny_inputs, tiny_model
from tiny_tokenizer import tiny_tokenizer

import helpers
from helpers.benchmark_results import zero_shot_results
from helpers.blocks import num_blocks
from helpers.classification import accuracy_difference, sms_accuracy
from helpers.evaluation import FULL, VariantResults, evaluate_variants, quality_measures, unique_variants
from helpers.lab import level_results
from helpers.perplexity import perplexity, perplexity_ci, perplexity_difference
from helpers.statistics import bootstrap_ci, paired_difference
from helpers.widgets import LivePanel
from helpers.zero_shot import evaluate_zero_shot

TOO_FEW = "too few to decide"
STATED_MINIMUM = 10
"""The stated minimum number of units (windows, messages, items) below which no verdict is given."""


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert num_blocks(model) == N_LAYERS and model.config.num_hidden_layers == N_LAYERS
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


# --- case 1: one unit, or too few, gives no verdict -----------------------------------------------------------------


def lower_by_five(n: int) -> VariantResults:
    """Variant "b" has a perplexity NLL 5 lower than "a" on each of ``n`` windows: better on every unit."""
    a = np.linspace(20.0, 40.0, n)
    return VariantResults(
        variants={"a": [], "b": []},
        results={"a": {"ppl": fake_ppl(a)}, "b": {"ppl": fake_ppl(a - 5.0)}},
        info=pd.DataFrame(index=["a", "b"]),
        reference="a",
    )


def all_correct(n: int) -> VariantResults:
    """``n`` items all answered correctly, far above chance (0.25) and the majority answer (0.3)."""
    return results_of({FULL: {"acc": unit(np.ones(n))}, "pruned": {"acc": unit(np.ones(n))}})


def panel_verdict(n: int) -> str:
    """The change the live panel shows for a measure of ``n`` windows, 5 nats lower per window without block 1."""
    a = np.linspace(20.0, 40.0, n)
    measure = lambda m: fake_ppl(a - 5.0 * (N_LAYERS - num_blocks(m)))  # noqa: E731
    panel = LivePanel(tiny_model("llama"), {"ppl": measure})
    panel.evaluate([1])
    return next(v for v in ("better", "worse", "within noise", TOO_FEW) if v in panel.table.value)


def lab_passes(n: int) -> str:
    """Whether "b" passes a "match a" level of the lab."""
    return str(level_results(lower_by_five(n), "b", {"1": ("a", "match")}, "ppl").loc["1", "passed"])


VERDICT_SITES = {
    "paired interval": lambda n: paired_difference(np.arange(n) + 5.0, np.arange(n)).verdict(better="lower"),
    "VariantResults.verdict": lambda n: lower_by_five(n).verdict("a", "b", "ppl"),
    "long table": lambda n: lower_by_five(n).long().set_index("variant").loc["b", "verdict"],
    "table with differences": lambda n: lower_by_five(n).table(info=[], differences=True).loc["b", "ppl vs a"],
    "compare": lambda n: lower_by_five(n).compare([("a", "b")], "ppl").loc[0, "verdict for b"],
    "majority verdict": lambda n: all_correct(n).majority_verdict("pruned", "acc"),
    "live panel": panel_verdict,
    "lab level": lambda n: level_results(lower_by_five(n), "b", {"1": ("a", "match")}, "ppl").loc["1", "verdict"],
    "lab passes": lab_passes,
    "signal table": lambda n: helpers.signal_table(all_correct(n)).loc["acc", "signal"],
}
EXPECTED = {"signal table": ("above chance and majority", TOO_FEW), "lab passes": ("True", "False")}
"""Per site, what it shows at the stated minimum and one unit below; by default "better" and "too few to decide"."""


@pytest.mark.parametrize("site", VERDICT_SITES)
def test_too_few_units_give_no_verdict_anywhere(site):
    """Case 1: below the stated minimum of units every verdict is "too few to decide", at it the usual verdict."""
    decided, too_few = EXPECTED.get(site, ("better", TOO_FEW))
    assert VERDICT_SITES[site](STATED_MINIMUM).endswith(decided)
    assert VERDICT_SITES[site](STATED_MINIMUM - 1).endswith(too_few)


def test_one_window_and_one_message_decide_nothing(model):
    """Case 1: the course's measures on one window and one message flag their intervals and decide no verdict."""
    measures = quality_measures(
        tiny_tokenizer(),
        texts={"wiki": sentences(40, 1)},
        sms=sms(12, 2),
        sms_examples=sms(20, 3),
        shots=0,
        seq_len=16,
        max_windows=1,
        max_sms=1,
    )
    results = evaluate_variants(model, {"drop": [1, 2]}, measures, progress=False)
    assert helpers.MIN_UNITS == STATED_MINIMUM
    assert results.interval("drop", "ppl_wiki").too_few and results.difference(FULL, "drop", "ppl_wiki").too_few
    assert results.formatted("drop", "ppl_wiki").endswith("(n=1, too few)")
    assert results.verdict(FULL, "drop", "ppl_wiki") == TOO_FEW == results.majority_verdict("drop", "sms_acc")
    assert set(results.long().query("variant == 'drop'")["verdict"]) == {TOO_FEW}
    table = results.table(differences=True).loc["drop"]
    assert all(
        table[column].endswith(TOO_FEW) for column in ("ppl_wiki vs full", "sms_acc vs full", "sms_acc vs majority")
    )
    # the lab's "match" level reads the same rule
    assert not level_results(results, "drop", {"1": (FULL, "match")}, "ppl_wiki").loc["1", "passed"]


@pytest.mark.parametrize(
    "interval",
    [
        lambda n_boot: bootstrap_ci(np.arange(50.0), n_boot=n_boot),
        lambda n_boot: paired_difference(np.arange(50.0), np.arange(50.0) + 1, n_boot=n_boot),
        lambda n_boot: perplexity_ci(fake_ppl(np.linspace(20, 40, 50)), n_boot=n_boot),
    ],
    ids=["bootstrap_ci", "paired_difference", "perplexity_ci"],
)
@pytest.mark.parametrize("n_boot", [1, 100, 999])
def test_too_few_resamples_are_refused(interval, n_boot):
    """Case 1: a bootstrap of fewer than 1000 resamples is refused with the minimum; 1000 are accepted."""
    with pytest.raises(ValueError, match=f"n_boot must be at least 1000; got {n_boot}"):
        interval(n_boot)
    interval(1000)


# --- case 2: reused results must be of the model as it is now -------------------------------------------------------


@pytest.mark.parametrize("caller", ["evaluate_variants", "LivePanel"])
def test_reuse_after_an_in_place_weight_change_measures_again(caller):
    """Case 2: after a weight changes in place, reused results are measured again, as a fresh evaluation gives them."""
    model, tokenizer, texts = tiny_model("llama"), tiny_tokenizer(), sentences(40, 1)
    measures = {"ppl": lambda m: perplexity(m, tokenizer, texts, seq_len=16, max_windows=4, progress=False)}
    ids = tiny_inputs()["input_ids"]

    def generate(m):  # stands for a continuation: text that changes with every weight
        with torch.no_grad():
            return repr(float(m(input_ids=ids).logits.sum()))

    def run(reuse):
        if caller == "evaluate_variants":
            results = evaluate_variants(model, {"drop": [1]}, measures, reuse=reuse, progress=False)
            return results, [results.interval(v, "ppl").estimate for v in (FULL, "drop")]
        panel = reuse or LivePanel(model, measures, generate=generate)
        chosen = panel.evaluate([1])
        return panel, [panel.baseline["ppl"], chosen["ppl"], panel.baseline["generation"], chosen["generation"]]

    first, before = run(None)
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight.mul_(4.0)
    _, again = run(first)
    _, fresh = run(None)
    assert again == fresh and fresh[0] != before[0]


# --- case 4: paired differences only on the same units --------------------------------------------------------------


@pytest.mark.parametrize("metric", ["perplexity", "sms accuracy"])
def test_paired_differences_refuse_different_texts_or_messages(model, metric):
    """Case 4: two results on different texts or messages (same counts, same index) cannot be paired."""
    tokenizer = tiny_tokenizer()
    if metric == "perplexity":
        a, b = (
            perplexity(model, tokenizer, sentences(40, s), seq_len=16, max_windows=4, progress=False) for s in (1, 2)
        )
        with pytest.raises(ValueError, match="evaluate both models with the same texts, tokenizer"):
            perplexity_difference(a, b)
    else:
        a, b = (sms_accuracy(model, tokenizer, sms(12, s), progress=False) for s in (2, 5))
        with pytest.raises(ValueError, match="different messages; evaluate both models on the same frame"):
            accuracy_difference(a, b)


# --- case 11: unique_variants takes block lists and names as given --------------------------------------------------


@pytest.mark.parametrize(
    ("selections", "error", "match"),
    [
        ({"a": "12"}, TypeError, "blocks must be a list of block indices, got '12'"),
        ({"a": [1.7]}, TypeError, r"block index 1\.7 is not an integer"),
        ({"a = b": [1], "a": [2], "b": [2]}, ValueError, r"selection names must not contain ' = '.*\['a = b'\]"),
    ],
    ids=["string", "float", "separator in a name"],
)
def test_unique_variants_refuses_strings_floats_and_the_separator(selections, error, match):
    """Case 11: "12" is not [1, 2], [1.7] is not [1], and a name with " = " cannot collide with a merged name."""
    before = copy.deepcopy(selections)
    with pytest.raises(error, match=match):
        unique_variants(selections)
    assert selections == before


# --- case 12b: a NaN result names its variant and measure -----------------------------------------------------------


@pytest.mark.parametrize(
    "nan", [float("nan"), np.float32("nan"), {"twice": 2.0, "half": float("nan")}], ids=["float", "float32", "mapping"]
)
def test_a_nan_measure_result_is_refused(model, nan):
    """Case 12b: a measure that returns NaN on a variant is refused, naming the variant, measure and metric."""
    before = snapshot(model)
    bad = lambda m: 1.0 if num_blocks(m) == N_LAYERS else nan  # noqa: E731 - NaN on the variant only
    metric = "half" if isinstance(nan, dict) else "bad"
    with pytest.raises(ValueError, match=f"measure 'bad' returned NaN for metric '{metric}' on variant 'drop'"):
        evaluate_variants(model, {"drop": [2]}, {"bad": bad}, progress=False)
    assert_unchanged(model, before)


# --- case 14a: an item twice would count twice ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["request", "frame"])
def test_duplicate_zero_shot_items_are_refused(where, monkeypatch):
    """Case 14: an item listed twice would count twice; it is refused, in a request and in a results frame."""
    monkeypatch.setenv("DEPTH_PRUNING_DATA", os.environ.get("DEPTH_PRUNING_DATA", "/work/shared/data"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    items = {"piqa": [3, 5, 3]}
    if where == "request":
        with pytest.raises(ValueError, match=r"items of piqa repeat rows \[3\]; list each row once"):
            evaluate_zero_shot(object(), object(), ["piqa"], items=items)  # refused before any scoring
        assert items == {"piqa": [3, 5, 3]}
    else:
        frame = pd.DataFrame({"task": "boolq", "item": [0, 1, 0], "gold": 1, "loglik": [(-1.0, -2.0)] * 3})
        with pytest.raises(ValueError, match=r"repeats \(task, item\) pairs"):
            zero_shot_results(frame.assign(acc=[1.0, 0.0, 1.0], acc_norm=np.nan))


# --- case 14b: the live panel on no blocks, a list for a dict ------------------------------------------------------


def test_live_panel_evaluates_no_blocks_as_the_full_model(model):
    """Case 14: LivePanel.evaluate([]) shows the full model against itself, as its docstring says."""
    panel = LivePanel(model, {"depth": lambda m: float(num_blocks(m))})
    chosen = panel.evaluate([])
    assert chosen["removed"] == [] and chosen["parameters_removed"] == 0
    assert chosen["depth"] == panel.baseline["depth"] == N_LAYERS


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: evaluate_variants(m, [[1]], {}, progress=False), r"variants must be a mapping \{name: blocks"),
        (lambda m: evaluate_variants(m, {"a": [1]}, [len], progress=False), r"measures must be a mapping \{name: "),
        (
            lambda m: quality_measures(tiny_tokenizer(), texts=sentences(4, 1)),
            r"texts must be a mapping \{label: texts\}",
        ),
        (lambda m: LivePanel(m, [len]), r"measures must be a mapping \{name: "),
        (lambda m: unique_variants([[1], [2]]), r"selections must be a mapping \{name: "),
    ],
    ids=["evaluate_variants variants", "evaluate_variants measures", "quality_measures texts", "LivePanel", "unique"],
)
def test_a_list_instead_of_a_dict_is_a_clear_type_error(model, call, match):
    """Case 14: a list where a dict is expected is a TypeError naming the expected form, the model untouched."""
    before = snapshot(model)
    with pytest.raises(TypeError, match=match):
        call(model)
    assert_unchanged(model, before)
