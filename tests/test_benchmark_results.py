"""Benchmark results as evaluation units, the stored-results format, and ``benchmark_variants``, against hand
computations, a round trip, and a tiny random model (with SmolLM2's real tokenizer, so prompts tokenise as for the
course model)."""

from __future__ import annotations

import dataclasses
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from test_zero_shot import real_data, smollm_tokenizer, tiny_model  # noqa: F401 - fixtures used by name

import helpers
from helpers.benchmark_results import ZeroShotResult, zero_shot_results
from helpers.evaluation import FULL, VariantResults
from helpers.fast.stored_results import load_stored_zero_shot, save_stored_zero_shot, stored_agreement
from helpers.statistics import bootstrap_ci, paired_difference
from helpers.zero_shot import evaluate_zero_shot

matplotlib.use("Agg")


def frame(rows: list[tuple]) -> pd.DataFrame:
    """An evaluate_zero_shot-like frame from (task, item, gold, loglik, acc, acc_norm) tuples."""
    table = []
    for task, item, gold, loglik, acc, acc_norm in rows:
        pred = -1 if task == "lambada_openai" else int(np.argmax(loglik))
        table.append(
            {
                "task": task,
                "item": item,
                "gold": gold,
                "loglik": tuple(loglik),
                "pred": pred,
                "acc": acc,
                "pred_norm": pred if not np.isnan(acc_norm) else -1,
                "acc_norm": acc_norm,
            }
        )
    return pd.DataFrame(table).astype({"acc": float, "acc_norm": float})


EXAMPLE = frame(
    [
        ("arc_easy", 3, 0, (-1.0, -2.0, -3.0, -4.0), 1.0, 1.0),
        ("arc_easy", 7, 2, (-1.0, -2.0, -3.0), 0.0, 1.0),  # three choices: chance 1/3
        ("arc_easy", 9, 0, (-5.0, -2.0, -3.0, -4.0), 0.0, 0.0),
        ("lambada_openai", 1, 0, (-3.0,), 1.0, np.nan),
        ("lambada_openai", 4, 0, (-9.0,), 0.0, np.nan),
    ]
)


def test_unit_results_by_hand():
    found = zero_shot_results(EXAMPLE)
    assert list(found) == ["arc_easy acc", "arc_easy acc_norm", "lambada_openai acc"]
    arc = found["arc_easy acc"]
    assert arc.items.tolist() == [3, 7, 9] and arc.correct.tolist() == [1.0, 0.0, 0.0]
    assert arc.chance == pytest.approx((1 / 4 + 1 / 3 + 1 / 4) / 3)
    assert arc.majority == pytest.approx(2 / 3)  # gold 0 twice of three
    assert found["arc_easy acc_norm"].accuracy == pytest.approx(2 / 3)
    lambada = found["lambada_openai acc"]
    assert lambada.chance == 0.0 and np.isnan(lambada.majority) and lambada.accuracy == 0.5
    with pytest.raises(ValueError, match="repeats"):
        zero_shot_results(pd.concat([EXAMPLE, EXAMPLE.iloc[:1]]))
    with pytest.raises(ValueError, match="columns"):
        zero_shot_results(EXAMPLE.drop(columns="gold"))


def unit(correct, items=None, chance=0.25, majority=0.3, task="arc_easy"):
    correct = np.asarray(correct, dtype=float)
    items = np.arange(len(correct)) if items is None else np.asarray(items)
    return ZeroShotResult(task, "acc", items, correct, chance, majority)


def results_of(by_variant: dict[str, dict[str, ZeroShotResult]]) -> VariantResults:
    info = pd.DataFrame({"removed": [[] for _ in by_variant]}, index=list(by_variant))
    return VariantResults(variants={v: [] for v in by_variant}, results=by_variant, info=info)


def test_the_core_reads_them_like_accuracies():
    rng = np.random.default_rng(0)
    full = unit(rng.random(200) < 0.7)
    pruned = unit(rng.random(200) < 0.5)
    results = results_of({FULL: {"arc_easy acc": full}, "pruned": {"arc_easy acc": pruned}})
    assert results.interval("pruned", "arc_easy acc") == bootstrap_ci(pruned.correct)
    assert results.difference(FULL, "pruned", "arc_easy acc") == paired_difference(full.correct, pruned.correct)
    assert results.better("arc_easy acc") == "higher"
    assert results.majority_baselines() == {"arc_easy acc": 0.3}
    assert results.formatted(FULL, "arc_easy acc").startswith(f"{full.accuracy:.3f} [")
    with pytest.raises(ValueError, match="same task, metric and items"):
        results_of({FULL: {"m": full}, "other": {"m": unit(pruned.correct, items=np.arange(1, 201))}}).difference(
            FULL, "other", "m"
        )


def test_signal_and_retained_share_by_hand():
    full = unit([1] * 40 + [0] * 10)  # 0.8, far above chance 0.25 and majority 0.3
    half = unit([1] * 20 + [0] * 30)
    at_chance = unit([1] * 13 + [0] * 37, task="piqa", chance=0.5, majority=0.52)
    lambada = ZeroShotResult("lambada_openai", "acc", np.arange(50), np.array([1.0] * 10 + [0.0] * 40), 0.0, np.nan)
    results = results_of(
        {
            FULL: {"arc_easy acc": full, "piqa acc": at_chance, "lambada_openai acc": lambada},
            "half": {
                "arc_easy acc": half,
                "piqa acc": at_chance,
                "lambada_openai acc": dataclasses.replace(lambada, correct=np.zeros(50)),
            },
        }
    )
    signal = helpers.signal_table(results)
    assert signal.loc["arc_easy acc", "signal"] == "above chance and majority"
    assert signal.loc["piqa acc", "signal"] == "below chance"  # 0.26 with its interval below 0.52
    assert signal.loc["lambada_openai acc", "signal"] == "above chance and majority"
    assert signal.loc["arc_easy acc", "items"] == 50
    shares = helpers.variant_benchmarks.retained_share(results).set_index(["variant", "metric"])
    assert list(shares.index.get_level_values("metric")) == ["arc_easy acc", "lambada_openai acc"]
    # (0.4 - 0.25) / (0.8 - 0.25) by hand; LAMBADA (chance 0) from 0.2 to 0: nothing kept
    assert shares.loc[("half", "arc_easy acc"), "share"] == pytest.approx(0.15 / 0.55)
    assert shares.loc[("half", "lambada_openai acc"), "share"] == pytest.approx(0.0)
    diff = paired_difference(full.correct, half.correct)
    assert shares.loc[("half", "arc_easy acc"), "low"] == pytest.approx(1 + diff.low / 0.55)
    with pytest.raises(ValueError, match="above chance"):
        helpers.variant_benchmarks.retained_share(results, ["piqa acc"])
    figure = helpers.plots.plot_retained(
        helpers.variant_benchmarks.retained_share(results), title="t", highlight=["lambada_openai acc"]
    )
    assert len(figure.axes[0].get_legend().get_texts()) == 2
    with pytest.raises(ValueError, match="columns"):
        helpers.plots.plot_retained(pd.DataFrame(), title="t")


def test_stored_results_round_trip(tmp_path):
    other = EXAMPLE.assign(loglik=[tuple(v - 0.5 for v in ll) for ll in EXAMPLE["loglik"]])
    meta = {"model": "m", "n_blocks": 4, "variants": {"full": {"removed": []}, "cut": {"removed": [2, 1]}}}
    paths = tmp_path / "items.csv.gz", tmp_path / "items.json"
    save_stored_zero_shot({"full": EXAMPLE, "cut": other}, meta, *paths)
    stored = load_stored_zero_shot(*paths)
    assert stored.meta == json.loads(json.dumps(meta))
    for name, original in (("full", EXAMPLE), ("cut", other)):
        back = stored.frame(name)
        assert back.drop(columns="loglik").equals(original.drop(columns="loglik"))
        for a, b in zip(back["loglik"], original["loglik"]):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert stored.variant_of([1, 2]) == "cut" and stored.variant_of([]) == "full" and stored.variant_of([3]) is None
    assert stored.item_ids() == {"arc_easy": [3, 7, 9], "lambada_openai": [1, 4]}
    with pytest.raises(KeyError, match="no stored variant"):
        stored.frame("nope")
    with pytest.raises(ValueError, match="does not describe"):
        save_stored_zero_shot({"x": EXAMPLE}, meta, *paths)
    with pytest.raises(FileNotFoundError, match="zero_shot_results.py"):
        load_stored_zero_shot(tmp_path / "absent.csv.gz", paths[1])


def test_agreement_allows_only_float_ties(real_data):  # noqa: F811 - the fixture
    # Real ARC-Easy row 0 has four choices; its stored top two below are 5e-4 apart: a tie float rounding may flip.
    stored = frame([("arc_easy", 0, 1, (-2.0, -1.0, -1.0005, -5.0), 1.0, 1.0)])
    assert bool(stored_agreement(stored, stored).loc["arc_easy", "agrees"])
    nudged = stored.assign(loglik=[(-2.0, -1.0004, -1.0003, -5.0)], pred=[2], acc=[0.0])
    row = stored_agreement(nudged, stored).loc["arc_easy"]
    assert row["different_predictions"] == 1 and row["near_ties"] == 1 and bool(row["agrees"])
    apart = frame([("arc_easy", 0, 1, (-2.0, -1.0, -1.5, -5.0), 1.0, 1.0)])  # top two 0.5 apart
    flipped = apart.assign(loglik=[(-2.0, -1.0, -1.5, -5.0)], pred=[2], acc=[0.0])
    assert not bool(stored_agreement(flipped, apart).loc["arc_easy", "agrees"])
    drifted = stored.assign(loglik=[(-2.0, -1.0, -1.0005, -5.01)])
    assert stored_agreement(drifted, stored).loc["arc_easy", "max_loglik_diff"] == pytest.approx(0.01)
    assert not bool(stored_agreement(drifted, stored).loc["arc_easy", "agrees"])
    with pytest.raises(ValueError, match="not stored"):
        stored_agreement(frame([("arc_easy", 5, 0, (-1.0, -2.0), 1.0, 1.0)]), stored)


def test_benchmark_variants_stored_then_live(real_data, smollm_tokenizer, tmp_path):  # noqa: F811 - fixtures
    model = tiny_model("llama", len(smollm_tokenizer))
    variants = {"cut": [0]}
    items = {"arc_easy": [0, 5, 9], "lambada_openai": [2, 3]}
    frames = {}
    for name, blocks in {"full": [], "cut": [0]}.items():
        with helpers.skip_blocks(model, blocks) as variant:
            frames[name] = evaluate_zero_shot(variant, smollm_tokenizer, list(items), items=items, progress=False)
    meta = {"model": "tiny", "n_blocks": helpers.num_blocks(model), "code_fingerprint": "x"}
    meta["variants"] = {"full": {"removed": []}, "cut": {"removed": [0]}}
    save_stored_zero_shot(frames, meta, tmp_path / "i.csv.gz", tmp_path / "i.json")
    stored = load_stored_zero_shot(tmp_path / "i.csv.gz", tmp_path / "i.json")

    run = helpers.benchmark_variants(
        model, smollm_tokenizer, variants, model_id="tiny", stored=stored, check_items=2, check_variants=["full", "cut"]
    )
    assert run.source == "stored" and run.items == items
    assert run.agreement["agrees"].all() and set(run.agreement.index.get_level_values("variant")) == {"full", "cut"}
    assert run.results.metrics == ["arc_easy acc", "arc_easy acc_norm", "lambada_openai acc"]
    expected = zero_shot_results(frames["cut"])["arc_easy acc"]
    assert run.results.results["cut"]["arc_easy acc"].correct.tolist() == expected.correct.tolist()
    assert run.results.info.loc["cut", "n_removed"] == 1

    other = helpers.benchmark_variants(
        model, smollm_tokenizer, variants, model_id="another", stored=stored, fallback_items=2, tasks=["arc_easy"]
    )
    assert other.source == "live" and "not another" in other.reason and other.agreement is None
    assert other.results.metrics == ["arc_easy acc", "arc_easy acc_norm"]
    assert len(other.items["arc_easy"]) == 2
    missing = helpers.benchmark_variants(
        model, smollm_tokenizer, {"cut": [1]}, model_id="tiny", stored=stored, fallback_items=1, tasks=["piqa"]
    )
    assert missing.source == "live" and "no stored variant removes the blocks of cut" in missing.reason
    with pytest.raises(ValueError, match="check_variants"):
        helpers.benchmark_variants(model, smollm_tokenizer, variants, model_id="tiny", check_variants=["x"])
    with pytest.raises(ValueError):
        helpers.benchmark_variants(model, smollm_tokenizer, variants, model_id="tiny", live_items=0)


def test_healed_variants_are_served_by_their_recipe_and_scored_as_they_are(real_data, smollm_tokenizer, tmp_path):  # noqa: F811
    model = tiny_model("llama", len(smollm_tokenizer))
    healed_model = helpers.prune_blocks(model, [0])
    with torch.no_grad():  # a stand-in for healing: any change of the pruned model's weights
        for weight in healed_model.parameters():
            weight.add_(torch.randn_like(weight, generator=torch.Generator().manual_seed(3)) * 0.05)
    recipe = {"method": "a test", "steps": 2}
    healed = {"cut + heal": helpers.variant_benchmarks.HealedVariant(healed_model, [0], recipe)}
    items = {"arc_easy": [0, 5, 9], "lambada_openai": [2, 3]}
    frames = {}
    for name, blocks in {"full": [], "cut": [0]}.items():
        with helpers.skip_blocks(model, blocks) as variant:
            frames[name] = evaluate_zero_shot(variant, smollm_tokenizer, list(items), items=items, progress=False)
    frames["cut + heal"] = evaluate_zero_shot(healed_model, smollm_tokenizer, list(items), items=items, progress=False)
    meta = {"model": "tiny", "n_blocks": helpers.num_blocks(model), "code_fingerprint": "x"}
    meta["variants"] = {"full": {"removed": []}, "cut": {"removed": [0]}, "cut + heal": {"removed": [0]}}
    meta["variants"]["cut + heal"]["healing"] = recipe
    save_stored_zero_shot(frames, meta, tmp_path / "i.csv.gz", tmp_path / "i.json")
    stored = load_stored_zero_shot(tmp_path / "i.csv.gz", tmp_path / "i.json")
    assert stored.variant_of([0]) == "cut" and stored.variant_of([0], recipe) == "cut + heal"
    assert stored.variant_of([0], {**recipe, "steps": 3}) is None

    run = helpers.benchmark_variants(
        model, smollm_tokenizer, {"cut": [0]}, model_id="tiny", stored=stored, check_items=2, healed=healed,
        check_variants=["cut + heal"],
    )  # fmt: skip
    assert run.source == "stored" and run.agrees
    assert run.results.results["cut + heal"]["arc_easy acc"].correct.tolist() == (
        zero_shot_results(frames["cut + heal"])["arc_easy acc"].correct.tolist()
    )
    assert run.results.info.loc["cut + heal", "n_removed"] == 1

    changed = {"cut + heal": helpers.variant_benchmarks.HealedVariant(healed_model, [0], {**recipe, "steps": 3})}
    live = helpers.benchmark_variants(
        model, smollm_tokenizer, {"cut": [0]}, model_id="tiny", stored=stored, healed=changed, fallback_items=3,
        tasks=["arc_easy"],
    )  # fmt: skip
    assert live.source == "live" and "same healing" in live.reason
    expected = evaluate_zero_shot(healed_model, smollm_tokenizer, ["arc_easy"], items=live.items, progress=False)
    assert live.results.results["cut + heal"]["arc_easy acc"].correct.tolist() == (
        zero_shot_results(expected)["arc_easy acc"].correct.tolist()
    )
    assert live.results.model_state is None  # no later reuse may read the healed row as its pruned twin
    with pytest.raises(ValueError, match="also variants' names"):
        helpers.benchmark_variants(model, smollm_tokenizer, {"cut + heal": [0]}, model_id="tiny", healed=healed)
    with pytest.raises(TypeError, match="HealedVariant"):
        helpers.benchmark_variants(model, smollm_tokenizer, {}, model_id="tiny", healed={"h": healed_model})


def test_pooling_and_the_headline_view():
    arc = unit([1, 0, 1, 1], chance=0.25)
    piqa = unit([0, 1], task="piqa", chance=0.5)
    pooled = helpers.benchmark_results.pooled_result(
        {"arc_easy acc": arc, "piqa acc": piqa}, ["arc_easy acc", "piqa acc"]
    )
    assert pooled.items.tolist() == ["arc_easy:0", "arc_easy:1", "arc_easy:2", "arc_easy:3", "piqa:0", "piqa:1"]
    assert pooled.correct.tolist() == [1, 0, 1, 1, 0, 1] and pooled.accuracy == pytest.approx(4 / 6)
    assert pooled.chance == pytest.approx((4 * 0.25 + 2 * 0.5) / 6) and np.isnan(pooled.majority)
    with pytest.raises(ValueError, match="one metric per task"):
        helpers.benchmark_results.pooled_result({"a": arc, "b": arc}, ["a", "b"])
    results = results_of({FULL: {"arc_easy acc": arc, "piqa acc": piqa, "x": arc}})
    assert results.select(["piqa acc", "arc_easy acc"]).metrics == ["piqa acc", "arc_easy acc"]
    with pytest.raises(KeyError, match="not measured"):
        results.select(["nope"])
    run = helpers.variant_benchmarks.BenchmarkRun(results, "live", "", {}, None)
    view = run.headline(["arc_easy acc", "piqa acc"])
    assert view.metrics == ["arc_easy acc", "piqa acc", helpers.POOLED] and run.agrees is None
    table = helpers.benchmark_table(view)
    assert table.loc["chance"].tolist() == ["-", "0.250", "0.500", "0.333"]
    assert table.loc["majority answer"].tolist() == ["-", "0.300", "0.300", "-"]


def test_identical_selections_become_one_variant():
    variants, variant_of = helpers.evaluation.unique_variants({"a": [3, 1], "b": [2], "c": [1, 3], "d": []})
    assert variants == {"a = c": [1, 3], "b": [2], "d": []}
    assert variant_of == {"a": "a = c", "c": "a = c", "b": "b", "d": "d"}


def test_word_task_against_choice_tasks():
    rows = [
        ("pruned", "lambada_openai acc", 0.1, 0.0, 0.2),
        ("pruned", "choice", 0.8, 0.6, 1.0),
        ("close", "lambada_openai acc", 0.5, 0.3, 0.7),
        ("close", "choice", 0.6, 0.4, 0.8),
        ("up", "lambada_openai acc", 1.2, 1.1, 1.3),
        ("up", "choice", 0.8, 0.6, 1.0),
    ]
    shares = pd.DataFrame(rows, columns=["variant", "metric", "share", "low", "high"])
    verdicts = helpers.variant_benchmarks.word_vs_choice(shares, "lambada_openai acc", "choice")
    assert verdicts["verdict"].tolist() == ["less than multiple choice", "within noise", "more than multiple choice"]
    assert verdicts.loc["pruned", "choice kept"] == "0.80 [0.60, 1.00]"
    with pytest.raises(ValueError, match="lack"):
        helpers.variant_benchmarks.word_vs_choice(shares, "lambada_openai acc", "other")
    arc, piqa = unit([1, 0, 1, 1]), unit([0, 1], task="piqa", chance=0.5)
    added = helpers.variant_benchmarks.add_pooled(results_of({FULL: {"a": arc, "p": piqa}}), ["a", "p"], name="both")
    assert added.metrics == ["a", "p", "both"] and added.results[FULL]["both"].accuracy == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="already a metric"):
        helpers.variant_benchmarks.add_pooled(added, ["a", "p"], name="both")


def test_quality_by_k_draws_one_line_per_rule():
    results = results_of(
        {FULL: {"m": unit([1] * 10)}, "a2": {"m": unit([1] * 8 + [0] * 2)}, "a4": {"m": unit([1] * 5 + [0] * 5)}}
    )
    figure = helpers.plots.plot_metric_by_k(results, {"a": {2: "a2", 4: "a4"}}, "m", title="t", ylabel="y")
    lines = figure.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines if len(line.get_xdata()) == 2][0] == [0.8, 0.5]
    with pytest.raises(ValueError, match="series is empty"):
        helpers.plots.plot_metric_by_k(results, {}, "m", title="t", ylabel="y")
