"""The course's variants on the zero-shot benchmarks, per item: the results chapters 5 and 6 stand on.

Every selection the course makes at its default k (20% of the blocks) is computed exactly as chapters 5 and 6 compute
it (same calibration sets, seeds and rules), identical selections are scored once, and each distinct variant plus the
full model is scored with ``helpers.zero_shot.evaluate_zero_shot`` on the same seeded item subsets (``item_ids(n,
limit, seed=0)``) of ARC-Easy, PIQA, HellaSwag and LAMBADA: 10 variants x 3400 items, about 5 minutes a variant plus 4
for the selections on 2 cores (the JSON keeps each variant's seconds). The per-item results go to
``helpers/results/zero_shot_items.csv.gz`` and what was run to ``helpers/results/zero_shot_items.json`` (model,
variants with their removed blocks and every name they go by, tasks with their hub ids and lm-eval YAMLs, item counts,
code fingerprint, versions, wall time). ``tests/test_stored_zero_shot.py`` recomputes a sample of the stored items
from scratch.

    python benchmarks/zero_shot_results.py                # the stored results: 3686 s on 2 CPU cores (61 min)
    python benchmarks/zero_shot_results.py --healed       # then chapter 6's healed rows, appended (see below)
    python benchmarks/zero_shot_results.py --limit 20     # a quick trial into /tmp, same code path

``--healed`` appends chapter 6's healed models, scored on the same items: its PPL and Taylor+ selections after its
LoRA run (section 4) and with the linear maps of section 4b fitted on WikiText and on SMS, each stored with the recipe
chapter 6 passes to ``benchmark_variants`` (``healing_recipes``), so that the stored rows serve only those settings.

Offline, point DEPTH_PRUNING_DATA at the data folder and set HF_DATASETS_OFFLINE=1 (and HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
import transformers

import helpers
from helpers.fast.lm_eval_engine import LM_EVAL_YAMLS
from helpers.fast.stored_results import (
    STORED_ITEMS,
    STORED_META,
    code_fingerprint,
    load_stored_zero_shot,
    save_stored_zero_shot,
)
from helpers.zero_shot import TASKS, evaluate_zero_shot, item_ids, load_task

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SEED = 0
PRUNE_FRACTION = 0.2
SEQ_LEN = 128
TASK_ITEMS = {"arc_easy": 1000, "piqa": 1000, "hellaswag": 400, "lambada_openai": 1000}
"""Items per task: about 1000 give paired intervals of about +-2.5 accuracy points between two variants. HellaSwag
gets fewer for time: its four long endings make one item cost about as much as five ARC-Easy items."""


def chapter5_selections(model, tokenizer, k: int, protect: dict) -> dict[str, list[int]]:
    """Chapter 5's selections: BI and the PPL criterion on WikiText, SMS and (PPL only) SMS in the task's format."""
    samples = {"wikitext": 8, "sms": 32}  # chapter 5's WIKI_SAMPLES, SMS_SAMPLES
    calibration = {
        name: helpers.calibration_batches(tokenizer, name, n_samples=n, seq_len=SEQ_LEN, seed=SEED, by_length=True)
        for name, n in samples.items()
    }
    sms_calibration = helpers.load_sms("calibration")
    task_batches = helpers.classification.sms_task_batches(
        tokenizer, sms_calibration, examples=sms_calibration, shots=2, n_samples=8, seed=SEED, batch_size=2
    )
    scores = {
        f"BI · {name}": helpers.block_similarity(model, batches, progress=False).blocks["block_influence"]
        for name, batches in calibration.items()
    }
    for name, batches in {**calibration, "sms-task": task_batches}.items():
        scores[f"PPL · {name}"] = helpers.data_criteria.ppl_by_sample(model, batches, progress=False).scores()
    return {name: helpers.select_blocks(values, k, **protect) for name, values in scores.items()}


def chapter6_selections(model, tokenizer, k: int, protect: dict) -> dict[str, list[int]]:
    """Chapter 6's selections: Magnitude+, Taylor+, PPL (with "+"), Block Influence (without), SLEB, static ones."""
    calibration = helpers.calibration_batches(tokenizer, "wikitext", n_samples=10, seq_len=SEQ_LEN, seed=SEED)
    n_blocks = helpers.num_blocks(model)
    selections = {
        "Magnitude+": helpers.select_blocks(helpers.magnitude_scores(model), k, **protect),
        "Taylor+": helpers.select_blocks(helpers.taylor_scores(model, calibration, progress=False), k, **protect),
        "PPL": helpers.select_blocks(
            helpers.data_criteria.ppl_scores(model, calibration, progress=False), k, **protect
        ),
        "Block Influence": helpers.select_blocks(
            helpers.block_similarity(model, calibration, progress=False).blocks["block_influence"], k
        ),
    }
    sleb_calibration = [{key: value[:2] for key, value in calibration[0].items()}]  # chapter 6's SLEB_SAMPLES
    selections["SLEB"] = sorted(
        helpers.data_criteria.sleb_removal(model, sleb_calibration, k, **protect)["block"].tolist()
    )
    selections["static: deepest"] = helpers.position_blocks(n_blocks, k, "keep_edges", **protect)
    selections["middle"] = helpers.position_blocks(n_blocks, k, "middle")
    return selections


HEALED = ("PPL", "Taylor+")
"""Chapter 6's selections healed after pruning (its sections 4 and 4b), with its settings below."""
HEAL = {"steps": 8, "seq_len": SEQ_LEN, "batch_size": 2, "lr": 1e-3, "rank": 8, "seed": SEED}
REPAIR_SAMPLES, REPAIR_SMS = 32, 160  # chapter 6's WikiText samples and SMS messages per linear map


def score(name: str, model, tokenizer, items: dict[str, list[int]]) -> tuple[pd.DataFrame, float]:
    """One variant on the items, timed, with a line of per-task accuracy: (per-item frame, seconds)."""
    began = time.perf_counter()
    frame = evaluate_zero_shot(model, tokenizer, list(items), items=items, progress=True)
    seconds = round(time.perf_counter() - began, 1)
    accuracy = frame.groupby("task", sort=False)["acc"].mean()
    print(f"{name}: {seconds} s; acc " + ", ".join(f"{t} {a:.3f}" for t, a in accuracy.items()), flush=True)
    return frame, seconds


def healing_recipes() -> dict[str, dict]:
    """The recipes chapter 6 passes to ``benchmark_variants`` for its healed rows: suffix -> recipe."""
    maps = {"method": "linear map", "seq_len": SEQ_LEN, "seed": SEED}
    return {
        " + LoRA": {"method": "LoRA", "texts": "WikiText calibration split", **HEAL},
        " + map (WikiText)": {**maps, "data": "WikiText calibration samples", "samples": REPAIR_SAMPLES},
        " + map (SMS)": {**maps, "data": "SMS calibration messages, first of 2 disjoint draws", "samples": REPAIR_SMS},
    }


def chapter6_healed(model, tokenizer, selections: dict[str, list[int]]) -> dict[str, tuple]:
    """Chapter 6's healed models, made as its sections 4 (LoRA) and 4b (linear maps) make them:
    ``{row: (model, removed blocks, recipe)}``."""
    sms_draws = helpers.data.disjoint_draws(
        helpers.data.calibration_texts("sms"), n_draws=2, n_samples=REPAIR_SMS, seed=SEED
    )
    repair_data = {
        " + map (WikiText)": helpers.calibration_batches(
            tokenizer, "wikitext", n_samples=REPAIR_SAMPLES, seq_len=SEQ_LEN, seed=SEED
        ),
        " + map (SMS)": helpers.data.tokenize_batches(tokenizer, sms_draws[0], seq_len=SEQ_LEN, by_length=True),
    }
    held_out = helpers.load_wikitext("evaluation")  # linear_repair measures the maps; the model does not depend on it
    heal_texts = helpers.load_wikitext("calibration")
    recipes, healed = healing_recipes(), {}
    for name in HEALED:
        blocks = selections[name]
        lora, _ = helpers.heal_with_lora(model, tokenizer, heal_texts, remove=blocks, **HEAL)
        healed[name + " + LoRA"] = (lora, blocks, recipes[" + LoRA"])
        for suffix, batches in repair_data.items():
            repair = helpers.linear_repair.linear_repair(
                model, tokenizer, blocks, batches, held_out, seq_len=SEQ_LEN, max_windows=2, progress=False
            )
            healed[name + suffix] = (repair.model, blocks, recipes[suffix])
    return healed


def add_healed(model, tokenizer, out: Path) -> None:
    """Append chapter 6's healed rows to the stored results in ``out``, scored on the stored items."""
    stored = load_stored_zero_shot(out / STORED_ITEMS.name, out / STORED_META.name)
    meta = stored.meta
    began = time.perf_counter()
    k = helpers.resolve_k(PRUNE_FRACTION, helpers.num_blocks(model))
    selections = chapter6_selections(model, tokenizer, k, dict(helpers.PLUS_HEURISTIC))
    healed = chapter6_healed(model, tokenizer, selections)
    print(f"{len(healed)} healed models made in {time.perf_counter() - began:.0f} s", flush=True)
    frames = {name: stored.frame(name) for name in meta["variants"] if name not in healed}
    items = stored.item_ids()
    for name, (healed_model, blocks, recipe) in healed.items():
        frames[name], meta["seconds_per_variant"][name] = score(name, healed_model, tokenizer, items)
        meta["variants"][name] = {"removed": list(blocks), "names": [name], "healing": recipe}
    meta["healed_wall_seconds"] = round(time.perf_counter() - began)
    meta["healed_git_commit"] = _git_commit()
    save_stored_zero_shot(frames, meta, out / STORED_ITEMS.name, out / STORED_META.name)
    print(f"added {len(healed)} healed variants to {out} in {meta['healed_wall_seconds']} s")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="items per task instead of TASK_ITEMS (a trial)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the two files (default: helpers/results)")
    parser.add_argument("--healed", action="store_true", help="append chapter 6's healed rows to the stored results")
    args = parser.parse_args()
    out = args.out or (STORED_ITEMS.parent if args.limit is None else Path("/tmp/zero_shot_trial"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    helpers.set_determinism(SEED, threads=2)
    model, tokenizer = helpers.load_model(MODEL_ID)
    if args.healed:
        return add_healed(model, tokenizer, out)
    n_blocks = helpers.num_blocks(model)
    k = helpers.resolve_k(PRUNE_FRACTION, n_blocks)
    protect = dict(helpers.PLUS_HEURISTIC)
    selections = {
        **chapter6_selections(model, tokenizer, k, protect),
        **chapter5_selections(model, tokenizer, k, protect),
    }
    by_blocks: dict[tuple[int, ...], list[str]] = {(): ["full"]}
    for name, blocks in selections.items():
        by_blocks.setdefault(tuple(blocks), []).append(name)
    variants = {names[0]: {"removed": list(blocks), "names": names} for blocks, names in by_blocks.items()}
    print(f"{len(selections)} selections, {len(variants) - 1} distinct; k = {k} of {n_blocks}", flush=True)
    for name, variant in variants.items():
        print(f"  {name}: {variant['removed']} ({' = '.join(variant['names'])})", flush=True)

    limits = {task: args.limit or n for task, n in TASK_ITEMS.items()}
    items = {task: item_ids(len(load_task(task)), limit, SEED) for task, limit in limits.items()}
    frames, seconds = {}, {}
    for name, variant in variants.items():
        with helpers.skip_blocks(model, variant["removed"]) as pruned:
            frames[name], seconds[name] = score(name, pruned, tokenizer, items)

    meta = {
        "model": MODEL_ID,
        "n_blocks": n_blocks,
        "k": k,
        "variants": variants,
        "tasks": {
            task: {
                "items": len(items[task]),
                "rows": len(load_task(task)),
                "draw": f"helpers.zero_shot.item_ids(rows, {limits[task]}, seed={SEED})",
                "hub": list(TASKS[task].hub),
                "lm_eval_yaml": LM_EVAL_YAMLS[task],
                "metrics": list(TASKS[task].metrics),
            }
            for task in items
        },
        "code_fingerprint": code_fingerprint(),
        "git_commit": _git_commit(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "pandas": pd.__version__},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "seconds_per_variant": seconds,
        "wall_seconds": round(time.perf_counter() - start),
    }
    save_stored_zero_shot(frames, meta, out / STORED_ITEMS.name, out / STORED_META.name)
    print(f"wrote {out / STORED_ITEMS.name} and {out / STORED_META.name} in {meta['wall_seconds']} s")


if __name__ == "__main__":
    main()
