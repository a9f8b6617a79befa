"""The lab's checks against independent computations: naive loops, hand counts, pruned copies."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import N_LAYERS, tiny_inputs, tiny_model
from tiny_tokenizer import tiny_tokenizer

from helpers.benefits import ideal_speedup, parameter_count
from helpers.blocks import get_blocks
from helpers.evaluation import VariantResults
from helpers.hooks import record_block_io
from helpers.lab import (
    Lab,
    _parameters_without,
    blocks_for_speedup,
    criterion_costs,
    level_results,
    relative_update_scores,
    score_mismatch,
)
from helpers.perplexity import PerplexityResult
from helpers.pruning import prune_blocks
from helpers.selection import select_blocks


def naive_relative_update(model, batches):
    """The learner's route: record every block's states, then average ||out - in|| / ||in|| over real tokens."""
    totals, count = np.zeros(N_LAYERS), 0
    for batch in batches:
        mask = batch["attention_mask"].bool()
        for index, io in record_block_io(model, batch).items():
            totals[index] += ((io.output - io.input).norm(dim=-1) / io.input.norm(dim=-1))[mask].sum().item()
        count += int(mask.sum())
    return pd.Series(totals / count, index=range(N_LAYERS))


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_relative_update_scores_match_the_recorded_states(family):
    model = tiny_model(family)
    batches = [tiny_inputs(seed=0), tiny_inputs(seed=1, batch=3, length=9)]
    scores = relative_update_scores(model, batches)
    assert scores.name == "relative_update" and scores.index.tolist() == list(range(N_LAYERS))
    np.testing.assert_allclose(scores.to_numpy(), naive_relative_update(model, batches).to_numpy(), rtol=1e-5)
    assert score_mismatch(naive_relative_update(model, batches), scores) is None


def test_relative_update_scores_refuse_batches_without_tokens():
    batch = tiny_inputs()
    with pytest.raises(ValueError, match="no real token"):
        relative_update_scores(tiny_model("llama"), [{**batch, "attention_mask": torch.zeros_like(batch["input_ids"])}])


def test_score_mismatch_says_what_is_wrong():
    reference = pd.Series([1.0, 2.0, 3.0])
    assert score_mismatch(reference * (1 + 1e-5), reference) is None
    assert score_mismatch(reference[::-1], reference) is None  # any order of the blocks
    assert "Series" in score_mismatch([1.0, 2.0, 3.0], reference)
    assert "0..2" in score_mismatch(pd.Series([1.0, 2.0]), reference)
    assert "[1]" in score_mismatch(pd.Series([1.0, np.nan, 3.0]), reference)
    assert "1 of 3 scores differ" in score_mismatch(pd.Series([1.0, 2.0, 3.3]), reference)
    assert "block 2" in score_mismatch(pd.Series([1.0, 2.0, 3.3]), reference)


def test_blocks_for_speedup_is_the_shortest_selection_that_reaches_the_target():
    model = tiny_model("llama")
    scores = pd.Series([9.0, 8.0, 3.0, 1.0, 2.0, 7.0])
    for target in (1.05, 1.2, 1.5):
        chosen = blocks_for_speedup(model, scores, target, protect_first=1, protect_last=1)
        naive = next(
            blocks
            for k in range(1, 5)
            if ideal_speedup(model, blocks := select_blocks(scores, k, protect_first=1, protect_last=1)) >= target
        )
        assert chosen == naive
        assert ideal_speedup(model, chosen) >= target > ideal_speedup(model, chosen[:-1]) if len(chosen) > 1 else True
    assert blocks_for_speedup(model, scores, 1.05, protect_first=1, protect_last=1) == [3]
    with pytest.raises(ValueError, match="target=10 cannot be reached"):
        blocks_for_speedup(model, scores, 10, protect_first=1, protect_last=1)
    with pytest.raises(ValueError, match="above 1"):
        blocks_for_speedup(model, scores, 1.0)


def test_parameters_without_equals_the_pruned_copy():
    model = tiny_model("llama")
    assert _parameters_without(model, [1, 3]) == parameter_count(prune_blocks(model, [1, 3]))


def fake_ppl(window_nll):
    """A perplexity result with the given per-window NLL sums (10 tokens per window)."""
    nll = np.asarray(window_nll, dtype=float)
    tokens = np.full(len(nll), 10)
    return PerplexityResult(
        float(np.exp(nll.sum() / tokens.sum())),
        nll.sum() / tokens.sum(),
        int(tokens.sum()),
        nll,
        tokens,
        10,
        10,
        np.zeros((len(nll), 10), dtype=int),
    )


def test_level_results_read_the_paired_verdicts():
    base = np.linspace(20, 40, 40)
    noise = np.random.default_rng(0).normal(0, 0.5, 40)
    windows = {"full": base - 5, "good": base, "noisy": base + noise, "bad": base + 10}
    results = VariantResults(
        variants={name: [] for name in windows},
        results={name: {"ppl": fake_ppl(nll)} for name, nll in windows.items()},
        info=pd.DataFrame(index=list(windows)),
    )
    levels = {"1": ("bad", "beat"), "2": ("noisy", "beat"), "3": ("noisy", "match"), "4": ("full", "match")}
    table = level_results(results, "good", levels, "ppl")
    # the naive reading: the sign of the paired difference and whether its interval reaches 0
    expected = [results.difference(base, "good", "ppl").verdict(better="lower") for base, _ in levels.values()]
    assert table["verdict"].tolist() == expected
    assert expected[0] == "better" and expected[3] == "worse"
    assert table["passed"].tolist() == [True, expected[1] == "better", expected[2] != "worse", False]
    table = level_results(results, "noisy", {"1": ("noisy", "match"), "2": ("noisy", "beat")}, "ppl")
    assert table["passed"].tolist() == [True, False]  # a selection against itself: within noise
    with pytest.raises(ValueError):
        level_results(results, "good", {"1": ("bad", "win")}, "ppl")


def test_criterion_costs_count_by_hand():
    costs = criterion_costs(30, 6, 10, protect_first=4, protect_last=2)
    assert costs.loc["magnitude", "forward passes"] == 0
    assert costs.loc["Block Influence", "forward passes"] == 10
    assert tuple(costs.loc["Taylor", ["forward passes", "backward passes"]]) == (10, 10)
    assert costs.loc["PPL", "forward passes"] == 300
    assert costs.loc["SLEB", "forward passes"] == 10 * (24 + 23 + 22 + 21 + 20 + 19)


# The Lab's checks, each fed a right and a wrong piece of learner code: the right one passes, the wrong one fails and
# the message says what is wrong.


def tiny_lab(family="llama"):
    """A Lab on a tiny model whose one measure is a fake perplexity: 30 windows of per-row NLL."""
    model = tiny_model(family)

    def measure(m):
        batch = tiny_inputs(seed=3, batch=30, length=8)
        logits = m(input_ids=batch["input_ids"]).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        return fake_ppl(nll.sum(1).detach().numpy() / 7 * 10)

    scores = pd.DataFrame({"a": np.arange(N_LAYERS, dtype=float), "b": np.arange(N_LAYERS, 0, -1, dtype=float)})
    baselines = {"first": [1, 2], "middle": [2, 3]}
    return Lab(
        model,
        tiny_tokenizer(),
        scores,
        k=2,
        protect={"protect_first": 1, "protect_last": 1},
        measures={"ppl": measure},
        baselines=baselines,
        levels={"1": ("first", "beat"), "2": ("middle", "match")},
    )


def hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


@contextmanager
def good_recorder(model):
    records, handles = {}, []

    def hook_for(index):
        def hook(module, args, kwargs, output):
            state = args[0] if args else kwargs["hidden_states"]
            records[index] = (state.detach(), (output[0] if isinstance(output, tuple) else output).detach())

        return hook

    try:
        for index, block in enumerate(get_blocks(model)):
            handles.append(block.register_forward_hook(hook_for(index), with_kwargs=True))
        yield records
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def leaky_recorder(model):
    """Removes its hooks only on a normal exit (no try/finally), and records outputs as inputs."""
    records = {}
    handles = [
        block.register_forward_hook(lambda m, a, o, i=i: records.__setitem__(i, (o, o)))
        for i, block in enumerate(get_blocks(model))
    ]
    yield records
    for handle in handles:
        handle.remove()


@contextmanager
def not_written(model):
    raise NotImplementedError("Exercise 4: write the recorder")
    yield


def test_check_recorder_tells_right_from_leaky(capsys):
    lab = tiny_lab()
    assert lab.check_recorder(good_recorder, tiny_inputs()) is True
    assert lab.check_recorder(leaky_recorder, tiny_inputs()) is False
    out = capsys.readouterr().out
    assert f"✗ hooks left after an error inside the with: {N_LAYERS}" in out and "block 0's input differs" in out
    assert hook_count(lab.model) == 0  # the check removed what the leaky recorder left
    assert lab.check_recorder(not_written, tiny_inputs()) is None
    assert "not attempted yet: Exercise 4" in capsys.readouterr().out


def renumbered_prune(model, blocks):
    small = copy.deepcopy(model)
    block_list = get_blocks(small)
    for index in sorted(blocks, reverse=True):
        del block_list[index]
    for position, block in enumerate(block_list):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    small.config.num_hidden_layers = len(block_list)
    if getattr(small.config, "layer_types", None):
        small.config.layer_types = [t for i, t in enumerate(small.config.layer_types) if i not in blocks]
    return small


def unrenumbered_prune(model, blocks):
    small = renumbered_prune(model, blocks)
    for position, block in enumerate(get_blocks(small)):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position + (position >= 1)  # block 1 onwards keeps its old index after removing 1
    return small


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_check_prune_tells_a_right_surgery_from_a_wrong_renumbering(family, capsys):
    lab = tiny_lab(family)
    layer_types = list(getattr(lab.model.config, "layer_types", None) or [])
    assert lab.check_prune(renumbered_prune, [1], "a b c") is True
    assert "logits equal prune_blocks'" in capsys.readouterr().out
    assert lab.check_prune(unrenumbered_prune, [1], "a b c") is False
    assert "block 1 (block 2 of the full model) has layer_idx 2, expected 1" in capsys.readouterr().out
    assert lab.check_prune(lambda m, b: m, [1], "a b c") is False  # the original itself, unpruned
    assert len(get_blocks(lab.model)) == N_LAYERS
    assert list(getattr(lab.model.config, "layer_types", None) or []) == layer_types


def test_check_selection_refuses_a_baseline_and_grades_the_rest(capsys):
    lab = tiny_lab()
    assert lab.check_selection([2, 3]) is None
    assert "is the baseline 'middle' itself: it passes no level" in capsys.readouterr().out
    levels = lab.check_selection([3, 4])
    naive = lab.judge([3, 4])[0].difference("middle", "yours", "ppl").verdict(better="lower")
    assert levels.loc["2", "verdict"] == naive
    assert lab.check_selection([3]) is None and "exactly k = 2" in capsys.readouterr().out
    assert lab.check_prediction(None, {"wikitext": [1, 2], "sms": [3, 4]}, {}) is None  # nothing measured
    assert "not attempted yet: set PREDICTION_3" in capsys.readouterr().out


def test_check_heatmap_reads_the_answer_from_the_heatmap(capsys):
    lab = tiny_lab()
    cos = [0.5, 0.9, 0.95, 0.2, 0.94, 0.6]  # cell (d, d+1) for block d
    depth = pd.DataFrame(np.eye(N_LAYERS + 1))
    for d, value in enumerate(cos):
        depth.iloc[d, d + 1] = value
    assert lab.check_heatmap(depth, 2, 3) is True
    assert lab.check_heatmap(depth, 4, 3) is True  # 0.94 looks as bright as 0.95
    assert lab.check_heatmap(depth, 1, 3) is False
    assert "the brightest is block 2's" in capsys.readouterr().out
    assert lab.check_heatmap(depth, None, 3) is None


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LAB_NOTEBOOK, SOLUTIONS = "07_hands_on_lab.ipynb", "solutions/07_hands_on_lab_solutions.ipynb"


def test_the_solutions_set_up_exactly_what_the_lab_sets_up():
    cells = [nbformat.read(NOTEBOOKS / name, as_version=4).cells for name in (LAB_NOTEBOOK, SOLUTIONS)]
    setup = [[cell.source for cell in notebook if "lab-setup" in cell.metadata.get("tags", [])] for notebook in cells]
    assert len(setup[0]) == 5 and setup[0] == setup[1]


def test_the_learners_notebook_stores_no_answer():
    cells = nbformat.read(NOTEBOOKS / LAB_NOTEBOOK, as_version=4).cells
    code = "\n".join(cell.source for cell in cells if cell.cell_type == "code")
    assert code.count('raise NotImplementedError("Exercise') == 6
    outputs = "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert outputs.count("not attempted yet") == 9 and "✓" not in outputs and "✗" not in outputs


def test_check_criterion_tells_the_right_scores_from_near_misses(capsys):
    lab = tiny_lab()
    batches = [tiny_inputs(seed=0), tiny_inputs(seed=1, batch=3, length=9)]
    assert lab.check_criterion(naive_relative_update, batches) is True
    assert "✓ your code" in capsys.readouterr().out

    def with_padding(model, batches):  # averages over padding tokens too
        padded = [{**batch, "attention_mask": torch.ones_like(batch["attention_mask"])} for batch in batches]
        return naive_relative_update(model, padded)

    assert lab.check_criterion(with_padding, batches) is False
    assert "scores differ from the reference" in capsys.readouterr().out


def test_check_speedup_compares_every_column_with_the_shortest_selection(capsys):
    lab = tiny_lab()

    def grow(scores, target):  # the naive route: one more block until the ideal speedup reaches the target
        return next(
            blocks
            for n in range(1, N_LAYERS - 1)
            if ideal_speedup(lab.model, blocks := select_blocks(scores, n, **lab.protect)) >= target
        )

    assert lab.check_speedup(grow, 1.2) is True
    assert lab.check_speedup(lambda scores, target: grow(scores, target)[:-1], 1.2) is False
    assert "✗ a: yours" in capsys.readouterr().out


def lstsq_map(model, batches, start, length, *, ridge=1e-4, mask=True, subtract=True):
    """The span's map by another route: states from ``output_hidden_states`` and an MLP hook, then ridge least
    squares as one stacked lstsq, [M; sqrt(lam) I] T = [L - Y; 0], instead of normal equations."""
    mlp_outputs = []
    handle = get_blocks(model)[start - 1].mlp.register_forward_hook(lambda m, a, out: mlp_outputs.append(out))
    rows_m, rows_target = [], []
    try:
        for batch in batches:
            with torch.no_grad():
                states = model(**batch, output_hidden_states=True).hidden_states  # states[i + 1]: block i's output
            real = batch["attention_mask"].bool() if mask else torch.ones_like(batch["input_ids"], dtype=torch.bool)
            m = mlp_outputs[-1][real].double()
            y = states[start][real].double() - m
            rows_m.append(m)
            rows_target.append(states[start + length][real].double() - (y if subtract else 0))
    finally:
        handle.remove()
    m, target = torch.cat(rows_m), torch.cat(rows_target)
    d = m.shape[1]
    lam = ridge * (m**2).sum() / d  # trace(M^T M) / d
    stacked = torch.cat([m, lam.sqrt() * torch.eye(d, dtype=torch.float64)])
    return torch.linalg.lstsq(stacked, torch.cat([target, torch.zeros(d, d, dtype=torch.float64)])).solution.float()


def test_check_linear_map_tells_a_right_solve_from_an_unmasked_and_a_wrong_target(capsys):
    lab = tiny_lab()
    batches = [tiny_inputs(seed=0, batch=4, length=12), tiny_inputs(seed=1, batch=3, length=9)]
    repair = [tiny_inputs(seed=5, batch=8, length=16)]
    down = get_blocks(lab.model)[1].mlp.down_proj
    weight, version = down.weight.detach().clone(), down.weight._version
    assert lab.check_linear_map(lstsq_map, batches, repair, [2, 3]) is True
    out = capsys.readouterr().out
    assert "✓ your code" in out and "repaired - pruned" in out and "windows)" in out
    # The map is folded into a copy only to measure: the same module, weights never written (the lab's reference
    # results, which watch PyTorch's version counters, stay valid).
    assert get_blocks(lab.model)[1].mlp.down_proj is down
    assert torch.equal(down.weight, weight) and down.weight._version == version
    unmasked = lab.check_linear_map(lambda *a: lstsq_map(*a, mask=False), batches, repair, [2, 3])
    assert unmasked is False and "differs from the reference" in capsys.readouterr().out
    assert lab.check_linear_map(lambda *a: lstsq_map(*a, subtract=False), batches, repair, [2, 3]) is False
    assert lab.check_linear_map(lambda *a: lstsq_map(*a, ridge=1e-2), batches, repair, [2, 3]) is False
    assert lab.check_linear_map(lambda *a: lstsq_map(*a)[:-1], batches, repair, [2, 3]) is False
    assert "has shape" in capsys.readouterr().out
    assert lab.check_linear_map(lambda *a: lstsq_map(*a).numpy(), batches, repair, [2, 3]) is False
    assert "expected a torch.Tensor" in capsys.readouterr().out


def test_check_linear_map_before_the_exercise_and_on_a_family_without_a_map(capsys):
    def not_yet(model, batches, start, length):
        raise NotImplementedError("Exercise 9: fit the map")

    batches = [tiny_inputs()]
    assert tiny_lab().check_linear_map(not_yet, batches, batches, [2, 3]) is None
    assert "not attempted yet: Exercise 9" in capsys.readouterr().out
    assert tiny_lab("gemma3_text").check_linear_map(not_yet, batches, batches, [2, 3]) is None
    out = capsys.readouterr().out  # the exercise is the exact fold: behind Gemma's post-MLP norm it is approximate
    assert "normalises its MLP output" in out and "measures nothing" in out
    with pytest.raises(ValueError, match="one run of consecutive blocks"):
        tiny_lab().check_linear_map(not_yet, batches, batches, [1, 3])
