"""The evaluation core (evaluate_variants, VariantResults) and its presets, against direct evaluation of really
pruned copies: a second code path that never goes through skip_blocks."""

from __future__ import annotations

import random

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import N_LAYERS, TINY_CONFIGS, tiny_model
from tiny_tokenizer import WORDS, tiny_tokenizer
from transformers import AutoModelForCausalLM

from helpers.benefits import ideal_speedup, model_bytes, parameter_count
from helpers.blocks import num_blocks
from helpers.classification import accuracy_difference, sms_accuracy
from helpers.display import fmt_ci
from helpers.evaluation import FULL, benefits_table, evaluate_variants, quality_measures
from helpers.perplexity import perplexity, perplexity_ci, perplexity_difference
from helpers.pruning import prune_blocks

matplotlib.use("Agg")

PLAIN_WORDS = [w for w in WORDS if not w.startswith("##")]
VARIANTS = {"early": [1, 2], "late": [4]}


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(PLAIN_WORDS, k=rng.randint(3, 10))) for _ in range(n)]


def sms(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame({"text": sentences(n, seed), "label": [rng.choice(["ham", "spam"]) for _ in range(n)]})


def tiny_measures(tokenizer, texts, frame, examples):
    """The course's measures on the tiny data: every window and message, 2 shots, 16-token windows."""
    return quality_measures(
        tokenizer,
        texts={"wiki": texts},
        sms=frame,
        sms_examples=examples,
        shots=2,
        seq_len=16,
        max_windows=None,
        max_sms=None,
    )


@pytest.fixture(scope="module")
def setup():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    texts, frame, examples = sentences(40, 1), sms(30, 2), sms(20, 3)
    measures = tiny_measures(tokenizer, texts, frame, examples)
    results = evaluate_variants(model, VARIANTS, measures, progress=False)
    return model, tokenizer, texts, frame, examples, results


def direct(model, tokenizer, texts, frame, examples, blocks):
    """Perplexity and SMS accuracy of a really pruned copy (or of the model itself for blocks=None)."""
    variant = model if blocks is None else prune_blocks(model, blocks)
    return (
        perplexity(variant, tokenizer, texts, seq_len=16, progress=False),
        sms_accuracy(variant, tokenizer, frame, shots=2, examples=examples, decision="prior", progress=False),
    )


def test_results_equal_direct_evaluation_of_pruned_copies(setup):
    model, tokenizer, texts, frame, examples, results = setup
    assert list(results.variants) == [FULL, "early", "late"] and results.metrics == ["ppl_wiki", "sms_acc"]
    wide = results.wide()
    for name, blocks in [(FULL, None), *VARIANTS.items()]:
        ppl, acc = direct(model, tokenizer, texts, frame, examples, blocks)
        assert wide.loc[name, "ppl_wiki"] == pytest.approx(ppl.ppl, rel=1e-5)
        assert wide.loc[name, "sms_acc"] == pytest.approx(acc.accuracy)
        ci = results.interval(name, "ppl_wiki")
        assert ci.low <= ci.estimate <= ci.high
        assert (ci.low, ci.high) == pytest.approx(tuple(perplexity_ci(ppl))[1:], rel=1e-4)
    assert results.majority_baselines() == {"sms_acc": pytest.approx(acc.baseline)}


def test_paired_differences_and_verdicts_match_those_of_pruned_copies(setup):
    model, tokenizer, texts, frame, examples, results = setup
    full_ppl, full_acc = direct(model, tokenizer, texts, frame, examples, None)
    early_ppl, early_acc = direct(model, tokenizer, texts, frame, examples, VARIANTS["early"])
    expected = perplexity_difference(full_ppl, early_ppl)
    assert tuple(results.difference(FULL, "early", "ppl_wiki")) == pytest.approx(tuple(expected), rel=1e-4)
    assert tuple(results.difference(FULL, "early", "sms_acc")) == pytest.approx(
        tuple(accuracy_difference(full_acc, early_acc))
    )
    assert results.verdict(FULL, "early", "ppl_wiki") == expected.verdict(better="lower")
    assert results.better("ppl_wiki") == "lower" and results.better("sms_acc") == "higher"
    assert tuple(results.difference(FULL, FULL, "ppl_wiki")) == (0.0, 0.0, 0.0)

    long = results.long().set_index(["variant", "metric"])
    assert long.loc[("early", "ppl_wiki"), "diff_low"] == pytest.approx(expected.low, rel=1e-4)
    assert long.loc[("early", "ppl_wiki"), "verdict"] == expected.verdict(better="lower")
    assert long.loc[(FULL, "sms_acc"), "verdict"] == "reference"


def test_sizes_are_exact_counts(setup):
    model, _, _, _, _, results = setup
    total = sum(p.numel() for p in model.parameters())  # tied weights: the tiny llama has none tied
    removed = sum(p.numel() for i in VARIANTS["early"] for p in model.model.layers[i].parameters())
    info = results.info
    assert info.loc["early", "removed"] == [1, 2] and info.loc[FULL, "removed"] == []
    assert info.loc["early", "params_removed_pct"] == pytest.approx(100 * removed / total)
    assert info.loc["early", "parameters"] == total - removed
    assert info.loc["late", "blocks_left"] == N_LAYERS - 1
    assert info.loc[FULL, "ideal_speedup"] == 1.0 and info.loc["early", "ideal_speedup"] > 1.0


def test_table_shows_intervals_and_verdicts(setup):
    _, _, _, _, _, results = setup
    table = results.table(differences=True)
    assert table.loc["early", "removed"] == "1,2" and table.loc[FULL, "removed"] == "-"
    assert table.loc["early", "ppl_wiki"] == fmt_ci(results.interval("early", "ppl_wiki"))
    assert table.loc["late", "sms_acc"] == fmt_ci(results.interval("late", "sms_acc"), decimals=3)
    verdict = results.verdict(FULL, "late", "sms_acc")
    assert table.loc["late", "sms_acc vs full"].endswith(verdict) and table.loc[FULL, "sms_acc vs full"] == ""
    with pytest.raises(ValueError, match="info columns \\['speed'\\] do not exist"):
        results.table(info=["speed"])


def test_plot_draws_one_panel_per_metric_with_the_majority_baseline(setup):
    _, _, _, _, _, results = setup
    fig = results.plot(title="tiny")
    assert len(fig.axes) == 2
    lines = [line.get_ydata()[0] for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"]
    assert lines == [pytest.approx(results.majority_baselines()["sms_acc"])]
    with pytest.raises(ValueError, match="were not measured"):
        results.plot(title="tiny", metrics=["bleu"])


def test_custom_measures_numbers_mappings_and_reuse():
    model = tiny_model("llama")
    calls = []

    def depth(m):
        calls.append(num_blocks(m))
        return num_blocks(m)

    results = evaluate_variants(
        model,
        {"a": [0], "b": [1, 2]},
        {"depth": depth, "pair": lambda m: {"twice": 2.0 * num_blocks(m), "one": 1}},
        reference="a",
        progress=False,
    )
    assert calls == [N_LAYERS, N_LAYERS - 1, N_LAYERS - 2] and num_blocks(model) == N_LAYERS
    assert results.metrics == ["depth", "twice", "one"] and results.reference == "a"
    assert results.difference("a", "b", "twice").estimate == -2.0
    assert np.isnan(results.interval("b", "depth").low) and results.better("depth") is None
    with pytest.raises(ValueError, match="plain number"):
        results.verdict("a", "b", "depth")

    again = evaluate_variants(
        model,
        {"a": [0], "c": [3]},
        {"depth": depth, "pair": lambda m: {"twice": 0, "one": 1}},
        reuse=results,
        progress=False,
    )
    assert calls[3:] == [N_LAYERS - 1]  # only "c" is new: the full model and "a" (same blocks) are reused
    assert list(again.variants) == [FULL, "a", "c"] and again.interval(FULL, "twice").estimate == 2.0 * N_LAYERS


def test_bad_arguments_raise(setup):
    model, tokenizer, texts, frame, _, results = setup
    wiki = quality_measures(tokenizer, texts={"wiki": texts}, seq_len=16)
    with pytest.raises(ValueError, match="reference 'nope' is not a variant"):
        evaluate_variants(model, VARIANTS, wiki, reference="nope", progress=False)
    with pytest.raises(ValueError, match="few-shot SMS needs `sms_examples`"):
        quality_measures(tokenizer, texts={}, sms=frame)
    with pytest.raises(ValueError, match="out of range"):
        evaluate_variants(model, {"bad": [9]}, wiki, progress=False)
    with pytest.raises(
        ValueError, match=r"'full' is reserved .* given blocks \[1, 2\]; give that variant another name"
    ):
        evaluate_variants(model, {"full": [1, 2]}, wiki, progress=False)
    with pytest.raises(TypeError, match="measure 'text' returned str"):
        evaluate_variants(model, {}, {"text": lambda m: "hello"}, progress=False)
    with pytest.raises(KeyError, match="no variant 'nope'"):
        results.interval("nope", "sms_acc")
    with pytest.raises(ValueError, match="different metrics"):
        evaluate_variants(model, {"x": [0]}, {"other": lambda m: 1.0}, reuse=results, progress=False)
    assert num_blocks(model) == N_LAYERS


def llama(tied: bool) -> torch.nn.Module:
    config = TINY_CONFIGS["llama"]()
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def test_benefits_table_matches_pruned_copies():
    model, tok = llama(tied=True), tiny_tokenizer()
    variants = {"two middle": [2, 3], "last": [5]}
    table = benefits_table(model, variants, tokenizer=tok, prompt_tokens=8, new_tokens=3, repetitions=1)

    assert list(table.index) == ["full", "two middle", "last"]
    assert num_blocks(model) == N_LAYERS  # nothing was removed for real
    for name, blocks in variants.items():
        pruned = prune_blocks(model, blocks)
        assert table.loc[name, "parameters"] == parameter_count(pruned)
        assert table.loc[name, "MiB"] == pytest.approx(model_bytes(pruned) / 2**20)
        assert table.loc[name, "blocks_left"] == N_LAYERS - len(blocks)
        assert table.loc[name, "ideal_speedup"] == pytest.approx(ideal_speedup(model, blocks))
    assert table.loc["full", "measured_speedup"] == 1.0
    assert (table["decode_tokens_per_s"] > 0).all()

    without_latency = benefits_table(model, variants)
    assert "decode_tokens_per_s" not in without_latency.columns
    assert without_latency.loc["last", "blocks_left"] == N_LAYERS - 1
    with pytest.raises(ValueError, match="'full'"):
        benefits_table(model, {"full": [1]})


def test_plot_before_after_takes_the_results_and_draws_log_axes(setup):
    from helpers.plots import plot_before_after

    _, _, _, _, _, results = setup
    fig = plot_before_after(results, title="tiny", logy=["ppl_wiki"])
    assert [axis.get_yscale() for axis in fig.axes] == ["log", "linear"]
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx([results.interval(v, "ppl_wiki").estimate for v in results.variants])
    with pytest.raises(ValueError, match="logy must be a collection of metrics"):
        plot_before_after(results, title="tiny", logy=["bleu"])


def test_ranking_compare_and_majority_verdicts(setup):
    _, _, _, _, _, results = setup
    ppl = {v: results.interval(v, "ppl_wiki").estimate for v in VARIANTS}
    assert results.ranking("ppl_wiki") == sorted(VARIANTS, key=ppl.get)  # lower perplexity first
    table = results.compare([("early", "late"), (FULL, "early")], "ppl_wiki")
    expected = results.difference("early", "late", "ppl_wiki")
    assert (table.loc[0, "b - a"], table.loc[0, "low"], table.loc[0, "high"]) == tuple(expected)
    assert table.loc[0, "verdict for b"] == expected.verdict(better="lower")
    assert table.loc[1, "verdict for b"] == results.verdict(FULL, "early", "ppl_wiki")
    baseline = results.majority_baselines()["sms_acc"]
    for variant in results.variants:
        ci = results.interval(variant, "sms_acc")
        by_hand = "within noise" if ci.low <= baseline <= ci.high else ("better" if ci.low > baseline else "worse")
        assert results.majority_verdict(variant, "sms_acc") == by_hand
    assert list(results.table(differences=True)["sms_acc vs majority"]) == [
        results.majority_verdict(v, "sms_acc") for v in results.variants
    ]
    with pytest.raises(KeyError, match="not a classification metric"):
        results.majority_verdict("early", "ppl_wiki")


def test_plot_labels_rename_panels_and_their_options(setup):
    _, _, _, _, _, results = setup
    fig = results.plot(
        title="tiny", labels={"ppl_wiki": "WikiText perplexity", "sms_acc": "SMS accuracy"}, logy=["ppl_wiki"]
    )
    assert [axis.get_ylabel() for axis in fig.axes] == ["WikiText perplexity", "SMS accuracy"]
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_legend() is not None  # the majority line's legend


def test_resumed_variants_equal_pruned_copies_without_running_the_blocks_before(setup):
    model, tokenizer, texts, frame, examples, _ = setup
    measures = tiny_measures(tokenizer, texts, frame, examples)
    first = evaluate_variants(model, {}, measures, resume=True, progress=False)  # the full model, recorded
    runs = [0] * N_LAYERS
    handles = [
        block.register_forward_pre_hook(lambda *_, i=i: runs.__setitem__(i, runs[i] + 1))
        for i, block in enumerate(model.model.layers)
    ]
    try:  # a later call (another cell) resumes from the recording that `reuse` carries
        results = evaluate_variants(model, VARIANTS, measures, reuse=first, resume=True, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    for name, blocks in VARIANTS.items():
        ppl, acc = direct(model, tokenizer, texts, frame, examples, blocks)
        assert results.interval(name, "ppl_wiki").estimate == pytest.approx(ppl.ppl, rel=1e-5)
        assert (results.results[name]["sms_acc"].predictions == acc.predictions).all()
    # Both variants keep block 0, and each runs from its first removed block: block 0 never runs again, block 3 does.
    assert runs[0] == 0 and runs[3] > 0
    with pytest.raises(TypeError, match="resume"):
        evaluate_variants(model, {}, measures, resume="yes", progress=False)
