"""Block explorer widgets, driven without a frontend: set values, click buttons, read ``selected`` and ``results``."""

from __future__ import annotations

import asyncio
import random
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex
from tiny_models import N_LAYERS, tiny_inputs, tiny_model
from tiny_tokenizer import WORDS, tiny_tokenizer

from helpers.blocks import get_blocks, num_blocks
from helpers.display import fmt
from helpers.pruning import prune_blocks
from helpers.widgets import REMOVED_STYLE, BlockChooser, LivePanel, block_explorer

SCORES = pd.DataFrame(
    {
        "taylor": [3.0, 1.0, 4.0, 1.5, 9.0, 2.0],  # higher = more important
        "similarity": [0.2, 0.9, 0.5, 0.95, 0.1, 0.6],  # higher = more removable
    }
)


def expected_colours(values, higher_is_important):
    """By hand (no ties in the test scores): each block's place in the importance order, scaled to [0, 1], then the
    viridis colour at that point."""
    importance = np.asarray(values) if higher_is_important else -np.asarray(values)
    place = {block: i for i, block in enumerate(sorted(range(len(importance)), key=lambda b: importance[b]))}
    return [to_hex(matplotlib.colormaps["viridis"](place[b] / (len(importance) - 1))) for b in range(len(importance))]


def colours(chooser):
    return [b.style.button_color for b in chooser.block_buttons]


def test_clicks_toggle_blocks_and_notify():
    chooser = BlockChooser(SCORES)
    seen = []
    chooser.observe(lambda change: seen.append(change["new"]), names="selected")
    for block in (3, 1, 3, 5):
        chooser.block_buttons[block].click()
    assert chooser.selected == [1, 5]
    assert seen == [[3], [1, 3], [1], [1, 5]]
    chooser.selected = [4, 0]
    assert chooser.selected == [0, 4]
    chooser.clear_button.click()
    assert chooser.selected == []


def test_invalid_selection_rejected_and_unchanged():
    chooser = BlockChooser(SCORES)
    chooser.selected = [2]
    for bad in ([6], [1, 1], list(range(N_LAYERS))):
        with pytest.raises(ValueError):
            chooser.selected = bad
    assert chooser.selected == [2]


def test_colours_follow_importance_and_direction():
    chooser = BlockChooser(SCORES, higher_is_important={"similarity": False})
    assert colours(chooser) == expected_colours(SCORES["taylor"], True)
    assert colours(chooser)[4] == to_hex(matplotlib.colormaps["viridis"](1.0))  # most important: top colour
    chooser.criterion.value = "similarity"
    assert colours(chooser) == expected_colours(SCORES["similarity"], False)
    # A removed block is faded and struck through; un-removing it gives its colour back.
    chooser.block_buttons[2].click()
    button = chooser.block_buttons[2]
    assert (button.style.button_color, button.style.text_decoration) == (REMOVED_STYLE["button_color"], "line-through")
    button.click()
    assert colours(chooser) == expected_colours(SCORES["similarity"], False)


def test_an_outlier_does_not_flatten_the_other_colours():
    chooser = BlockChooser(pd.Series([0.98, 0.02, 0.05, 0.1, 0.2, 0.23]))
    shown = colours(chooser)
    assert len(set(shown[1:])) == 5  # blocks 1..5 all distinct despite block 0's 0.98
    viridis = matplotlib.colormaps["viridis"]
    assert shown == [to_hex(viridis(x)) for x in (1.0, 0.0, 0.2, 0.4, 0.6, 0.8)]  # ordered by rank, evenly spaced
    assert "rank" in chooser.legend.value and "outlying" in chooser.legend.value


def test_tied_scores_share_a_colour_and_constant_scores_get_the_middle():
    viridis = matplotlib.colormaps["viridis"]
    # 2.0 and 2.000001 are near-ties (within 0.1%): average rank 2.5 of 1..4 -> (2.5 - 1) / 3 = 0.5.
    chooser = BlockChooser(pd.Series([1.0, 2.0, 2.000001, 5.0]))
    assert colours(chooser) == [to_hex(viridis(x)) for x in (0.0, 0.5, 0.5, 1.0)]
    assert set(colours(BlockChooser(pd.Series([3.0, 3.0, 3.0])))) == {to_hex(viridis(0.5))}


@pytest.mark.parametrize("layout", ["dict", "multiindex"])
def test_datasets_switch_scores(layout):
    sms = pd.DataFrame({"taylor": [9.0, 8, 7, 6, 5, 4]})
    tables = {"wikitext": SCORES, "sms": sms}
    scores = tables if layout == "dict" else pd.concat(tables, axis=1)
    chooser = BlockChooser(scores, higher_is_important={"similarity": False})
    assert list(chooser.dataset.options) == ["wikitext", "sms"]
    chooser.criterion.value = "similarity"
    chooser.dataset.value = "sms"  # no similarity there: falls back to the first criterion of sms
    assert list(chooser.criterion.options) == ["taylor"] and chooser.criterion.value == "taylor"
    assert colours(chooser) == expected_colours(sms["taylor"], True)
    chooser.dataset.value = "wikitext"
    assert chooser.criterion.value == "taylor" and colours(chooser) == expected_colours(SCORES["taylor"], True)


def test_single_table_hides_dataset_menu_and_nan_is_grey():
    chooser = BlockChooser(SCORES["taylor"].where(SCORES.index != 2))
    assert chooser.dataset.layout.display == "none"
    assert colours(chooser)[2] == "#bdbdbd"


@pytest.mark.parametrize(
    "bad, match",
    [
        (pd.DataFrame(), "non-empty"),
        (SCORES.set_axis([1, 2, 3, 4, 5, 6]), "0..L-1"),
        (SCORES.assign(name="x"), "numeric"),
        ({"a": SCORES, "b": SCORES.iloc[:4]}, "same blocks"),
        ({}, "non-empty dict"),
    ],
)
def test_bad_scores_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        BlockChooser(bad)


def test_select_button_passes_criterion_direction_and_protection():
    calls = []

    def fake_select(scores, k, **options):
        calls.append((scores.tolist(), k, options))
        return [2, 1]

    chooser = BlockChooser(
        SCORES, higher_is_important={"similarity": False}, protect_first=1, protect_last=2, select=fake_select
    )
    chooser.criterion.value = "similarity"
    chooser.k.value = 2
    chooser.select_button.click()
    assert calls == [
        (SCORES["similarity"].tolist(), 2, {"higher_is_important": False, "protect_first": 1, "protect_last": 2})
    ]
    assert chooser.selected == [1, 2]


@pytest.mark.parametrize("criterion, higher", [("taylor", True), ("similarity", False)])
def test_select_least_important_matches_argsort(criterion, higher):
    pytest.importorskip("helpers.selection")
    chooser = BlockChooser(SCORES, higher_is_important={"similarity": False}, k=2, protect_first=1, protect_last=1)
    chooser.criterion.value = criterion
    chooser.select_button.click()
    allowed = np.arange(1, N_LAYERS - 1)
    importance = SCORES[criterion].to_numpy()[allowed] * (1 if higher else -1)
    assert chooser.selected == sorted(allowed[np.argsort(importance)[:2]].tolist())


def test_select_error_is_shown_and_selection_kept():
    def failing_select(scores, k, **options):
        raise ValueError("cannot remove 5 blocks")

    chooser = BlockChooser(SCORES, select=failing_select)
    chooser.selected = [3]
    chooser.select_button.click()
    assert "cannot remove 5 blocks" in chooser.status.value and "ValueError" in chooser.status.value
    assert chooser.selected == [3]


# --- LivePanel ---------------------------------------------------------------------------------------------------


def logits(model):
    with torch.no_grad():
        return model(**tiny_inputs()).logits


def assert_restored(model, reference_logits):
    assert num_blocks(model) == N_LAYERS and model.config.num_hidden_layers == N_LAYERS
    assert [b.self_attn.layer_idx for b in get_blocks(model)] == list(range(N_LAYERS))
    torch.testing.assert_close(logits(model), reference_logits, rtol=0, atol=0)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_panel_measures_inside_skip_blocks(model):
    reference = logits(model)
    seen = []

    def depth(m):
        seen.append((num_blocks(m), m.config.num_hidden_layers))
        return float(num_blocks(m))

    def count(m):  # independent of helpers.benefits: distinct parameters of the model as it is now
        return sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())

    chooser = BlockChooser(SCORES)
    panel = LivePanel(model, {"depth": depth}, chooser=chooser)
    chooser.block_buttons[1].click()
    chooser.block_buttons[4].click()
    assert seen == []  # auto-update is off by default
    panel.evaluate_button.click()
    assert seen == [(N_LAYERS, N_LAYERS), (N_LAYERS - 2, N_LAYERS - 2)]  # full model first, then blocks 1, 4 skipped
    removed = sum(p.numel() for b in (1, 4) for p in get_blocks(model)[b].parameters())
    total = count(model)
    assert panel.results["parameters_removed"] == removed and panel.results["parameters"] == total - removed
    assert panel.results["params_removed_pct"] == pytest.approx(100 * removed / total)
    assert panel.results["depth"] == N_LAYERS - 2 and panel.baseline["depth"] == N_LAYERS
    assert f"{removed:,}" in panel.table.value and f"{fmt(panel.results['ideal_speedup'])}x" in panel.table.value
    chooser.block_buttons[2].click()
    panel.evaluate_button.click()
    assert seen[2:] == [(N_LAYERS - 3, N_LAYERS - 3)]  # the full model's numbers are kept, not measured again
    assert panel.error is None and panel.status.value == ""
    assert_restored(model, reference)


def test_metric_error_shown_and_model_restored(model):
    reference = logits(model)

    def broken(m):  # the full model (baseline) passes, the shallower one fails
        if num_blocks(m) < N_LAYERS:
            raise RuntimeError("metric failed on purpose")
        return 1.0

    chooser = BlockChooser(SCORES)
    panel = LivePanel(model, {"broken": broken}, chooser=chooser)
    chooser.selected = [2]
    panel.evaluate_button.click()
    assert "RuntimeError" in panel.status.value and "metric failed on purpose" in panel.status.value
    assert panel.results == {"error": "RuntimeError: metric failed on purpose"}
    assert isinstance(panel.error, RuntimeError) and panel.table.value == ""
    assert_restored(model, reference)


def naive_perplexity(model, ids):
    """exp(mean next-token NLL) of one row, written out by hand."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    nll = -log_probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].mean()
    return float(torch.exp(nll))


def test_panel_ppl_equals_pruned_copy(model):
    ids = tiny_inputs(seed=3, batch=1, length=24)["input_ids"]
    panel = LivePanel(model, {"ppl": lambda m: naive_perplexity(m, ids)})
    results = panel.evaluate([0, 3])
    expected = naive_perplexity(prune_blocks(model, [0, 3]), ids)
    assert results["ppl"] == pytest.approx(expected, rel=1e-6)
    assert panel.baseline["ppl"] == pytest.approx(naive_perplexity(model, ids), rel=1e-6)
    assert results["ppl"] != pytest.approx(panel.baseline["ppl"])
    assert fmt(results["ppl"]) in panel.table.value


def test_auto_update_without_event_loop_evaluates_each_change(model):
    calls = []
    chooser = BlockChooser(SCORES)
    LivePanel(model, {"depth": lambda m: calls.append(num_blocks(m)) or 0.0}, chooser=chooser, auto_update=True)
    chooser.block_buttons[1].click()
    chooser.block_buttons[2].click()
    assert calls == [N_LAYERS, N_LAYERS - 1, N_LAYERS - 2]  # the full model once, then each choice


def test_auto_update_debounced_on_event_loop(model):
    calls = []
    chooser = BlockChooser(SCORES)
    panel = LivePanel(
        model,
        {"depth": lambda m: calls.append(num_blocks(m)) or 0.0},
        chooser=chooser,
        auto_update=True,
        debounce_s=0.05,
    )

    async def burst_of_clicks():
        for block in (1, 2, 5):
            chooser.block_buttons[block].click()
        assert calls == []  # nothing runs while the learner is still clicking
        await asyncio.sleep(0.3)

    asyncio.run(burst_of_clicks())
    assert calls == [N_LAYERS, N_LAYERS - 3] and panel.results["removed"] == [1, 2, 5]


def test_panel_rejects_reserved_metric_names(model):
    with pytest.raises(ValueError, match="reserved"):
        LivePanel(model, {"parameters": lambda m: 0.0})


# --- the course's measurements -------------------------------------------------------------------------------------


def course_data():
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS[:-3]) for _ in range(40)) for _ in range(4)]
    sms = pd.DataFrame(
        {
            "text": ["win cash prize now", "see you at home", "claim your free prize", "ok love"],
            "label": ["spam", "ham", "spam", "ham"],
        }
    )
    return texts, sms


def test_for_course_numbers_equal_direct_calls_on_pruned_copy(model):
    pytest.importorskip("helpers.benefits")
    from helpers.benefits import ideal_speedup
    from helpers.classification import sms_accuracy
    from helpers.perplexity import perplexity

    tokenizer, (texts, sms) = tiny_tokenizer(), course_data()
    reference = logits(model)
    panel = LivePanel.for_course(
        model, tokenizer, texts, sms, seq_len=16, max_windows=4, prompt="I am going", max_new_tokens=4
    )
    results = panel.evaluate([2, 5])
    pruned = prune_blocks(model, [2, 5])
    assert results["perplexity"] == pytest.approx(
        perplexity(pruned, tokenizer, texts, seq_len=16, max_windows=4, progress=False).ppl, rel=1e-6
    )
    assert results["SMS accuracy"] == sms_accuracy(pruned, tokenizer, sms, progress=False).accuracy
    assert results["ideal_speedup"] == pytest.approx(ideal_speedup(model, [2, 5]))
    assert results["parameters_removed"] == sum(p.numel() for b in (2, 5) for p in get_blocks(model)[b].parameters())
    prompt = tokenizer("I am going", return_tensors="pt")
    continuation = pruned.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert results["generation"] == tokenizer.decode(
        continuation[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True
    )
    for metric in ("perplexity", "SMS accuracy"):  # each with its interval, and the paired change with a verdict
        assert panel.evaluation.formatted("chosen", metric) in panel.table.value
        assert panel.evaluation.formatted_difference("full", "chosen", metric) in panel.table.value
    # Each number says how many units it rests on: the windows measured, and every SMS message.
    windows = len(perplexity(pruned, tokenizer, texts, seq_len=16, max_windows=4, progress=False).window_nll)
    assert f"perplexity <small>(n={windows})</small>" in panel.table.value
    assert f"SMS accuracy <small>(n={len(sms)})</small>" in panel.table.value
    assert_restored(model, reference)


def test_for_course_passes_few_shot_options_to_sms_accuracy(model, monkeypatch):
    import helpers.classification as classification

    tokenizer, (texts, sms) = tiny_tokenizer(), course_data()
    examples = pd.DataFrame(
        {
            "text": [
                "txt win cash now",
                "hi see you later",
                "free prize call now",
                "ok going home",
                "reply stop to win",
                "be there soon",
            ],
            "label": ["spam", "ham", "spam", "ham", "spam", "ham"],
        }
    )
    options = {"shots": 2, "examples": examples, "decision": "prior"}
    calls = []
    original = classification.sms_accuracy
    monkeypatch.setattr(
        classification, "sms_accuracy", lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs)
    )
    panel = LivePanel.for_course(
        model, tokenizer, texts, sms, seq_len=16, max_windows=2, sms_examples=3, max_new_tokens=1, **options
    )
    results = panel.evaluate([1, 4])
    assert [{key: call[key] for key in options} for call in calls] == [options, options]  # full model, then pruned
    assert all(call["max_examples"] == 3 for call in calls)
    # "prior" calls round(spam share of examples * 3) = 2 of the 3 messages spam: a second code path on a copy.
    expected = original(prune_blocks(model, [1, 4]), tokenizer, sms, max_examples=3, progress=False, **options)
    assert (expected.predictions == "spam").sum() == 2
    assert results["SMS accuracy"] == expected.accuracy


def test_block_explorer_wires_chooser_to_panel(model):
    pytest.importorskip("helpers.benefits")
    texts, sms = course_data()
    explorer = block_explorer(model, tiny_tokenizer(), SCORES, texts, sms, seq_len=16, max_windows=2, max_new_tokens=2)
    chooser, panel = explorer.children
    chooser.selected = [1]
    panel.evaluate_button.click()
    assert panel.error is None and panel.results["removed"] == [1] and panel.results["blocks_left"] == N_LAYERS - 1


def test_prepare_measures_the_full_model_once_so_a_click_measures_only_its_choice(model):
    calls, generated = [], []

    def depth(m):
        calls.append(num_blocks(m))
        return float(num_blocks(m))

    def few(m):
        calls.append(("few", num_blocks(m)))
        return 0.5

    chooser = BlockChooser(SCORES)
    panel = LivePanel(
        model,
        {"depth": depth},
        first_look={"depth": few},
        generate=lambda m: generated.append(num_blocks(m)) or "text",
        chooser=chooser,
    )
    panel.prepare()
    assert calls == [("few", N_LAYERS), N_LAYERS] and generated == [N_LAYERS]
    assert "Full model measured" in panel.status.value and panel.table.value == ""
    panel.prepare()  # the weights did not change: nothing is measured again
    assert len(calls) == 2 and len(generated) == 1
    chooser.selected = [0, 2]
    panel.evaluate_button.click()
    assert calls[2:] == [("few", N_LAYERS - 2), N_LAYERS - 2] and generated[1:] == [N_LAYERS - 2]
    assert panel.baseline["depth"] == N_LAYERS and panel.results["depth"] == N_LAYERS - 2


def test_block_explorer_reuses_a_panel_built_before(model):
    tokenizer, (texts, sms) = tiny_tokenizer(), course_data()
    panel = LivePanel.for_course(model, tokenizer, texts, sms, seq_len=16, max_windows=2, max_new_tokens=2)
    before = panel.evaluate([1])
    full = panel.evaluation.results["full"]["perplexity"]
    explorer = block_explorer(model, tokenizer, SCORES, panel=panel, k=2)
    chooser, shown = explorer.children
    assert shown is panel and panel.chooser is chooser
    chooser.selected = [1]
    panel.evaluate_button.click()
    assert panel.error is None and panel.results["perplexity"] == before["perplexity"]
    assert panel.evaluation.results["full"]["perplexity"] is full  # the full model was not measured again
    with pytest.raises(ValueError, match="not both"):
        block_explorer(model, tokenizer, SCORES, texts, sms, panel=LivePanel.for_course(model, tokenizer, texts, sms))
    with pytest.raises(ValueError, match="without a chooser"):
        block_explorer(model, tokenizer, SCORES, panel=panel)
    with pytest.raises(ValueError, match="eval_texts, sms_frame"):
        block_explorer(model, tokenizer, SCORES, texts)


# --- a click's first look, refined, and the working state ----------------------------------------------------------


def test_click_shows_first_look_then_refines_to_the_full_settings(model):
    from helpers.perplexity import perplexity

    tokenizer, (texts, sms) = tiny_tokenizer(), course_data()
    reference = logits(model)
    chooser = BlockChooser(SCORES)
    panel = LivePanel.for_course(
        model,
        tokenizer,
        texts,
        sms,
        seq_len=8,
        max_windows=6,
        sms_examples=4,
        first_look_windows=2,
        max_new_tokens=2,
        chooser=chooser,
    )
    assert panel.first_look_label == "2 of 6 windows"  # 4 messages: fewer than 16, so all of them in the first look
    shown = []  # (status, stage of the table, perplexity shown) at every status change
    panel.status.observe(
        lambda change: shown.append((change["new"], re.search(r"data-stage='([^']*)'", panel.table.value))),
        names="value",
    )
    chooser.selected = [2, 5]
    panel.evaluate_button.click()
    statuses = [status for status, _ in shown]
    assert "working" in statuses[0] and "first look on 2 of 6 windows" in statuses[0]
    assert "working" in statuses[1] and "refining" in statuses[1] and statuses[2:] == [""]
    assert shown[1][1] is not None and shown[1][1].group(1) == "first look"  # the first look is on screen meanwhile
    assert "First look on 2 of 6 windows" not in panel.table.value and "data-stage='final'" in panel.table.value
    assert not panel.evaluate_button.disabled
    pruned = prune_blocks(model, [2, 5])
    full = perplexity(pruned, tokenizer, texts, seq_len=8, max_windows=6, progress=False)
    assert panel.results["perplexity"] == pytest.approx(full.ppl, rel=1e-6)
    assert len(panel.evaluation.results["chosen"]["perplexity"].window_nll) == 6
    assert_restored(model, reference)


def test_first_look_numbers_are_those_of_fewer_units_and_say_so(model):
    from helpers.perplexity import perplexity

    tokenizer, (texts, sms) = tiny_tokenizer(), course_data()
    panel = LivePanel.for_course(model, tokenizer, texts, sms, seq_len=8, max_windows=6, first_look_windows=2)
    results = panel.evaluate([1, 3], first_look=True)
    few = perplexity(prune_blocks(model, [1, 3]), tokenizer, texts, seq_len=8, max_windows=2, progress=False)
    assert results["perplexity"] == pytest.approx(few.ppl, rel=1e-6)
    assert "generation" not in results and panel.generation.value == ""
    assert "First look on 2 of 6 windows" in panel.table.value and "data-stage='first look'" in panel.table.value


def test_a_measure_shared_by_first_look_and_full_settings_runs_once_per_choice(model):
    calls = []

    def depth(m):
        calls.append(num_blocks(m))
        return float(num_blocks(m))

    chooser = BlockChooser(SCORES)
    panel = LivePanel(
        model,
        {"depth": depth, "few": lambda m: 1.0},
        first_look={"depth": depth, "few": lambda m: 0.5},
        first_look_label="less",
        chooser=chooser,
    )
    chooser.selected = [0]
    panel.evaluate_button.click()
    assert calls == [N_LAYERS, N_LAYERS - 1]  # the full model and the choice, each once for both stages
    assert panel.results["few"] == 1.0 and panel.results["depth"] == N_LAYERS - 1


def test_without_a_first_look_a_click_shows_working_then_clears(model):
    statuses = []
    chooser = BlockChooser(SCORES)
    panel = LivePanel(model, {"one": lambda m: 1.0}, chooser=chooser)
    panel.status.observe(lambda change: statuses.append(change["new"]), names="value")
    chooser.selected = [1]
    panel.evaluate_button.click()
    assert len(statuses) == 2 and "working" in statuses[0] and statuses[1] == ""


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"first_look": {"other": lambda m: 1.0}}, ValueError, "same metrics"),
        ({"first_look": [1]}, TypeError, "first_look"),
        ({"resume": "yes"}, TypeError, "resume"),
    ],
)
def test_panel_rejects_bad_first_look_and_resume(model, options, error, match):
    with pytest.raises(error, match=match):
        LivePanel(model, {"one": lambda m: 1.0}, **options)


@pytest.mark.parametrize(
    ("options", "error"), [({"first_look_windows": 0}, ValueError), ({"first_look_sms": 1.5}, TypeError)]
)
def test_for_course_rejects_bad_first_look_sizes(model, options, error):
    texts, sms = course_data()
    with pytest.raises(error, match=next(iter(options))):
        LivePanel.for_course(model, tiny_tokenizer(), texts, sms, **options)
