"""Where a click of the live panel spends its time, with chapter 7's settings, before and after in one run.

Builds ``LivePanel.for_course`` as chapter 7 does (20 WikiText windows of 128 tokens, 48 SMS messages with 8 shots,
the "prior" decision, a 12-token continuation) twice on the packaged model: "before" as the panel ran every block of
every measure on each choice (``resume=False``, no first look, the full model measured at the first click), "after"
as it runs now (the full model measured before the panel shows, ``prepare``, in the cell that builds it; each choice
resumed from the full model's recorded block inputs, a first look on 8 windows and 16 messages, then the full
settings). Each panel is clicked with the same block choices (6 blocks, Shortened LLaMA's "+": never the first 4 nor
the last 2); every measure and the continuation are timed. Both panels must show the same final numbers. Prints the
preparation's seconds, the first click's and the median new choice's, split by measure, and the ratios after /
before.
Wall seconds depend on what else runs on the machine; CPU seconds of this process (both threads) less so.

    python benchmarks/bench_panel.py

Offline, point ``DEPTH_PRUNING_DATA`` at the data folder and set ``HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from helpers.data import load_sms, load_wikitext
from helpers.model import load_model
from helpers.settings import set_determinism
from helpers.widgets import LivePanel

PANEL = dict(seq_len=128, max_windows=20, sms_examples=48, shots=8, decision="prior", max_new_tokens=12)
"""Chapter 7's panel settings (its parameters cell: PANEL_WINDOWS = EVAL_WINDOWS = 20, PANEL_SMS = 48, SHOTS = 8)."""
CHOICES = (
    [16, 17, 18, 21, 25, 26],
    [4, 8, 12, 16, 20, 24],
    [10, 11, 12, 13, 14, 15],
    [20, 21, 22, 23, 24, 25],
    [12, 14, 16, 18, 20, 22],
)
"""Block choices of k = 6 in the order a learner clicks them: chapter 7's Taylor · sms selection first (that click
also measures the full model), then one spread from the first block allowed (the slowest: nothing before block 4 to
reuse), a middle run, a late run and a spread from the middle: the new choices whose median is reported."""


class Timers:
    """Wall and CPU seconds per measure name, for the evaluation running now."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args)
            finally:
                self.wall[name] += time.perf_counter() - wall
                self.cpu[name] += time.process_time() - cpu

        return timed

    def take(self, total_wall: float, total_cpu: float) -> dict[str, tuple[float, float]]:
        """(wall, cpu) per measure and "other" (the rest: bootstrap intervals, tables), then reset."""
        split = {name: (self.wall[name], self.cpu[name]) for name in self.wall}
        split["other"] = (total_wall - sum(self.wall.values()), total_cpu - sum(self.cpu.values()))
        split["total"] = (total_wall, total_cpu)
        self.wall.clear()
        self.cpu.clear()
        return split


def timed_panel(panel: LivePanel) -> Timers:
    """Time every measure of ``panel`` (a measure shared by the first look and the full settings stays shared)."""
    timers, wrapped = Timers(), {}
    for stage, measures in (("", panel.measures), ("first look ", panel.first_look or {})):
        for name, measure in measures.items():
            if id(measure) not in wrapped:
                wrapped[id(measure)] = timers.wrap(stage + name, measure)
            measures[name] = wrapped[id(measure)]
    panel._generate = timers.wrap("generation", panel._generate)
    return timers


def click(panel: LivePanel, timers: Timers, blocks: list[int]) -> tuple[dict, dict | None, dict]:
    """What a click does (``_evaluate_and_show``), timed: (first look split, or None; final split; final numbers)."""
    first = None
    wall, cpu = time.perf_counter(), time.process_time()
    if panel.first_look is not None:
        panel.evaluate(blocks, first_look=True)
        first = timers.take(time.perf_counter() - wall, time.process_time() - cpu)
        first_wall, first_cpu = first["total"]
    else:
        first_wall = first_cpu = 0.0
    results = panel.evaluate(blocks)
    final = timers.take(time.perf_counter() - wall - first_wall, time.process_time() - cpu - first_cpu)
    final["total"] = (final["total"][0] + first_wall, final["total"][1] + first_cpu)  # from the click on
    return first, final, results


def show(label: str, split: dict[str, tuple[float, float]]) -> None:
    parts = ", ".join(f"{name} {wall:.2f} s ({cpu:.2f} cpu)" for name, (wall, cpu) in split.items())
    print(f"  {label}: {parts}", flush=True)


def median_split(splits: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    return {
        name: (statistics.median(s[name][0] for s in splits), statistics.median(s[name][1] for s in splits))
        for name in splits[0]
    }


def measure(threads: int = 2) -> dict[str, float]:
    """Run both panels; return after / before for the first evaluation and the median choice (wall seconds)."""
    set_determinism(seed=0, threads=threads)
    model, tokenizer = load_model()
    wiki, sms, calibration = load_wikitext("evaluation"), load_sms("evaluation"), load_sms("calibration")
    panels = {
        "before": LivePanel.for_course(
            model,
            tokenizer,
            wiki,
            sms,
            examples=calibration,
            resume=False,
            first_look_windows=None,
            first_look_sms=None,
            **PANEL,
        ),
        "after": LivePanel.for_course(model, tokenizer, wiki, sms, examples=calibration, **PANEL),
    }
    totals, numbers = {}, {}
    for name, panel in panels.items():
        timers = timed_panel(panel)
        print(f"{name}:", flush=True)
        if name == "after":  # in the cell that shows the panel, before any click
            wall, cpu = time.perf_counter(), time.process_time()
            panel.prepare()
            show(
                "prepare (the cell, before the panel shows)",
                timers.take(time.perf_counter() - wall, time.process_time() - cpu),
            )
        firsts, finals = [], []
        for index, blocks in enumerate(CHOICES):
            first, final, results = click(panel, timers, blocks)
            numbers.setdefault(tuple(blocks), []).append(
                {metric: panel.evaluation.formatted(panel.CHOSEN, metric) for metric in panel.evaluation.metrics}
                | {"values": (results["perplexity"], results["SMS accuracy"], results["generation"])}
            )
            label = f"{blocks}{' (first click)' if index == 0 else ''}"
            if first is not None:
                show(f"{label} first look", first)
            show(f"{label} final", final)
            if index == 0:
                full, full_first = final, first
            else:
                firsts += [first] if first is not None else []
                finals.append(final)
        median = median_split(finals)
        show("median choice, final", median)
        if firsts:
            show("median choice, first look", median_split(firsts))
        totals[name] = {
            "first": full["total"][0],
            "first numbers": (full_first or full)["total"][0],
            "final": median["total"][0],
            "first look": median_split(firsts)["total"][0] if firsts else median["total"][0],
        }
    for blocks, (before, after) in numbers.items():
        assert before == after, f"blocks {list(blocks)}: before {before}, after {after}"
    print("the same final numbers before and after for every choice", flush=True)
    return {
        "first_click_numbers_after_vs_before": totals["after"]["first numbers"] / totals["before"]["first"],
        "first_click_final_after_vs_before": totals["after"]["first"] / totals["before"]["first"],
        "choice_first_look_after_vs_before": totals["after"]["first look"] / totals["before"]["final"],
        "choice_final_after_vs_before": totals["after"]["final"] / totals["before"]["final"],
    }


if __name__ == "__main__":
    for name, ratio in measure().items():
        print(f"{name}: {ratio:.3f}")
