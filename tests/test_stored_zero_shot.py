"""The committed per-item benchmark results (helpers/results) against independent computations: their own stored
log-likelihoods (predictions and accuracies re-derived), the course's static selections, and a seeded sample of items
re-scored from scratch with the packaged model (slow)."""

from __future__ import annotations

import numpy as np
import pytest
from test_zero_shot import real_data  # noqa: F401 - fixture used by name

from helpers.fast.stored_results import _code_lines, code_fingerprint, load_stored_zero_shot, stored_agreement
from helpers.model import load_model
from helpers.pruning import skip_blocks
from helpers.selection import PLUS_HEURISTIC, resolve_k, select_blocks
from helpers.static_criteria import magnitude_scores, position_blocks
from helpers.zero_shot import TASKS, evaluate_zero_shot, item_ids, load_task

STORED = load_stored_zero_shot()
META = STORED.meta


def test_the_fingerprint_reads_the_code_not_its_descriptions():
    source = (
        'X = 1\n"""About X."""\n\n\ndef f(a):\n    """Doc,\n    two lines."""\n    # why\n    return a + X  # how\n'
    )
    reworded = source.replace("About X", "X, reworded").replace("# why", "# because").replace("two", "three")

    assert _code_lines(reworded) == _code_lines(source) == ["X = 1", "def f(a):", "    return a + X  # how"]
    assert _code_lines(source.replace("a + X", "a - X")) != _code_lines(source)
    called = source.replace('"""Doc,\n    two lines."""', 'print("""Doc,\n    two lines.""")')
    assert _code_lines(called) != _code_lines(source)  # a string passed to a call is code


def test_the_stored_results_describe_themselves():
    assert META["code_fingerprint"] == code_fingerprint(), "the scoring code changed: rerun zero_shot_results.py"
    items = STORED.item_ids()
    assert {task: len(ids) for task, ids in items.items()} == {t: v["items"] for t, v in META["tasks"].items()}
    for task, ids in items.items():  # the documented seeded draw
        assert ids == item_ids(META["tasks"][task]["rows"], META["tasks"][task]["items"], 0)
    for name in META["variants"]:
        assert STORED.frame(name)[["task", "item"]].values.tolist() == [[t, i] for t, ids in items.items() for i in ids]
    k = resolve_k(0.2, META["n_blocks"])
    assert META["k"] == k
    removed = {name: variant["removed"] for name, variant in META["variants"].items()}
    assert STORED.variant_of(position_blocks(META["n_blocks"], k, "middle")) is not None
    assert STORED.variant_of(position_blocks(META["n_blocks"], k, "keep_edges", **PLUS_HEURISTIC)) is not None
    assert all(len(blocks) == k for name, blocks in removed.items() if name != "full")
    # A healed row lacks the blocks of a stored selection, has a recipe, and is found only with that recipe.
    for name, variant in META["variants"].items():
        if "healing" in variant:
            pruned = STORED.variant_of(variant["removed"])
            assert pruned is not None and pruned != name and name.startswith(tuple(META["variants"][pruned]["names"]))
            assert STORED.variant_of(variant["removed"], variant["healing"]) == name


def test_predictions_follow_from_the_stored_log_likelihoods(real_data):  # noqa: F811 - the fixture
    for task, rows in STORED.items.groupby("task"):
        if task == "lambada_openai":
            continue
        documents = load_task(task)
        for _, row in rows.iterrows():
            loglik = np.asarray(row["loglik"])
            assert row["pred"] == int(np.argmax(loglik)) and row["acc"] == float(row["pred"] == row["gold"])
            item = TASKS[task].to_item(documents[row["item"]])
            assert item.gold == row["gold"] and len(item.requests) == len(loglik)
            if item.choices:
                normalised = loglik / np.array([float(len(choice)) for choice in item.choices])
                assert row["pred_norm"] == int(np.argmax(normalised))


@pytest.mark.slow
def test_a_sample_of_stored_items_is_reproduced_from_scratch(real_data):  # noqa: F811 - the fixture
    model, tokenizer = load_model(META["model"])
    k = META["k"]
    magnitude = select_blocks(magnitude_scores(model), k, **PLUS_HEURISTIC)
    assert STORED.variant_of(magnitude) is not None, "the stored Magnitude+ selection is not this model's"
    names = [name for name, variant in META["variants"].items() if "healing" not in variant]  # healed: chapter 6
    for name in (names[0], STORED.variant_of(magnitude), names[-1]):
        items = {task: [ids[i] for i in item_ids(len(ids), 4, seed=7)] for task, ids in STORED.item_ids().items()}
        with skip_blocks(model, META["variants"][name]["removed"]) as variant:
            live = evaluate_zero_shot(variant, tokenizer, list(items), items=items, progress=False)
        agreement = stored_agreement(live, STORED.frame(name))
        assert agreement["agrees"].all(), f"{name}:\n{agreement}"
