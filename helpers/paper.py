"""Shortened LLaMA's findings checked on a miniature: the paper's numbers in one place, and the verdicts.

Every number here is from Kim et al. (2024), "Shortened LLaMA: Depth Pruning for Large Language Models" (arXiv
2402.02834), for LLaMA-1-7B (32 blocks) with 6 blocks (20%) removed, as the paper reports them; the selections are
the paper's, made as its official code (Nota-NetsPresso/shortened-llm, ``src/block_prune.py``) makes them, with the
"+" rule applied to every criterion's order. ``shortened_llama_findings`` sets each finding beside what a miniature
measured and reads a verdict from the miniature's numbers: a comparison of two selections is decided only by its
paired interval, and one that contains 0 is "undecided", never a yes or a no.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

import pandas as pd

from .display import fmt, fmt_interval, fmt_pct
from .statistics import TOO_FEW, ConfidenceInterval
from .ties import tied_order

PAPER_MODEL = "LLaMA-1-7B"
PAPER_N_BLOCKS = 32
PAPER_BLOCKS: Mapping[str, tuple[int, ...]] = {"PPL": (10, 13, 24, 25, 26, 27), "Taylor+": (24, 25, 26, 27, 28, 29)}
"""The 6 blocks each criterion removed from LLaMA-1-7B."""
PAPER_WIKITEXT2_PPL: Mapping[str, float] = {"PPL": 17.66, "Taylor+": 20.21, "unpruned": 12.62}
"""WikiText2 perplexity after LoRA retraining (20% pruned), and of the unpruned model."""
PAPER_ZERO_SHOT: Mapping[str, float] = {"PPL": 61.83, "Taylor+": 63.49}
"""Average accuracy (%) over seven zero-shot tasks after LoRA retraining (20% pruned)."""
PAPER_BLOCK0_PPL: Mapping[str, float] = {"block 0": 8276.0, "best block": 21.1}
"""The PPL criterion's calibration perplexity without block 0, and without the least important block."""

VITAL_RATIO = 10.0
"""The course's threshold for "removing block 0 is catastrophic": at least this many times the perplexity without the
least important block (the paper's ratio is about 390)."""

HOLDS, FAILS, REVERSED, UNDECIDED = "yes", "no", "no: reversed", "undecided (within noise)"
"""The verdicts of the "holds here?" column."""

Better = Literal["lower", "higher"]


class Results(Protocol):
    """What the findings read from an evaluation (``helpers.VariantResults`` is one)."""

    def interval(self, variant: str, metric: str) -> ConfidenceInterval: ...

    def difference(self, a: str, b: str, metric: str) -> ConfidenceInterval: ...


class HealingOutcome(NamedTuple):
    """Perplexities around a LoRA healing run, for the findings table.

    Attributes:
        selection: the name of the healed selection.
        full: the perplexity of the full model, untrained.
        before: the selection's perplexity before healing.
        after: its perplexity after healing.
        tuned_full: the perplexity of the full model trained the same way (the control).
        gain: the paired interval of after - before (below 0 = healing helped).
    """

    selection: str
    full: float
    before: float
    after: float
    tuned_full: float
    gain: ConfidenceInterval


def count_runs(blocks: Sequence[int]) -> int:
    """How many runs of consecutive indices ``blocks`` holds (1 = one contiguous span).

    Args:
        blocks: block indices, in any order, without repeats.

    Returns:
        The number of maximal runs of consecutive indices; 0 for no blocks.

    Raises:
        ValueError: if an index repeats.
    """
    ordered = sorted(blocks)
    if len(set(ordered)) != len(ordered):
        raise ValueError(f"blocks must not repeat; got {list(blocks)}")
    return sum(1 for i, block in enumerate(ordered) if i == 0 or block != ordered[i - 1] + 1)


def describe_blocks(blocks: Sequence[int]) -> str:
    """The blocks, sorted, with their number of runs: ``"10, 13, 24, 25 (3 runs)"``.

    Args:
        blocks: block indices, without repeats.

    Returns:
        The text.

    Raises:
        ValueError: as ``count_runs``.
    """
    runs = count_runs(blocks)
    return ", ".join(map(str, sorted(blocks))) + f" ({runs} run{'s' * (runs != 1)})"


def paired_verdict(gap: ConfidenceInterval, *, a: str, b: str, better: Better, paper_winner: str) -> str:
    """Whether the paper's winner of a comparison wins here: from the paired interval of b - a.

    Args:
        gap: the paired interval of the metric of ``b`` minus that of ``a``.
        a: the selection subtracted.
        b: the other selection.
        better: "lower" or "higher": the direction in which the metric improves.
        paper_winner: ``a`` or ``b``, the side the paper found better.

    Returns:
        ``HOLDS`` when ``paper_winner`` is better beyond noise, ``REVERSED`` when the other side is, ``UNDECIDED`` when
        the interval contains 0, ``TOO_FEW`` when it rests on too few units to decide.

    Raises:
        ValueError: if ``paper_winner`` is neither ``a`` nor ``b``; as ``ConfidenceInterval.verdict``.
    """
    if paper_winner not in (a, b):
        raise ValueError(f"paper_winner must be {a!r} or {b!r}; got {paper_winner!r}")
    if gap.too_few:
        return TOO_FEW
    winner = gap.winner(a, b, better=better)
    if winner is None:
        return UNDECIDED
    return HOLDS if winner == paper_winner else REVERSED


def _taylor_deep_run(blocks: Sequence[int], n_blocks: int) -> str:
    """One contiguous run in the deeper half (every block at index n_blocks / 2 or later), as the paper's Taylor+."""
    contiguous, deep = count_runs(blocks) == 1, min(blocks) >= n_blocks / 2
    if contiguous and deep:
        return HOLDS
    if contiguous or deep:
        return "partly: " + ("contiguous, not deep" if contiguous else "deep, not contiguous")
    return FAILS


def shortened_llama_findings(
    results: Results,
    scores: pd.DataFrame,
    selections: Mapping[str, Sequence[int]],
    *,
    n_blocks: int,
    healing: HealingOutcome | None = None,
    perplexity_metric: str = "ppl_wikitext",
    accuracy_metric: str = "sms_acc",
    accuracy_label: str = "SMS accuracy",
    benchmarks: Results | None = None,
    benchmark_metric: str = "all items (pooled)",
    benchmark_label: str = "zero-shot benchmarks",
) -> pd.DataFrame:
    """The paper's findings beside a miniature's measurements, each with a verdict computed from them.

    Args:
        results: the evaluation of the selections named "PPL" and "Taylor+" (a ``VariantResults``), with a
            perplexity and an accuracy metric.
        scores: the criteria's block scores, one column each for "PPL" (perplexity without the block), "Magnitude"
            and "Taylor", indexed by block.
        selections: the removed blocks of "PPL" and "Taylor+".
        n_blocks: how many blocks the miniature has ("deep" = index n_blocks / 2 or later).
        healing: the LoRA healing run, or None to leave that finding out.
        perplexity_metric: the name of the perplexity metric in ``results``.
        accuracy_metric: the name of the accuracy metric in ``results`` (shown with 3 decimals).
        accuracy_label: what the accuracy measures, for the table.
        benchmarks: the zero-shot benchmark results of "PPL" and "Taylor+" (e.g. ``BenchmarkRun.headline()``), for
            the paper's own accuracy finding; None leaves that row out.
        benchmark_metric: the accuracy of ``benchmarks`` to read (default: all items pooled).
        benchmark_label: what that accuracy covers, for the table.

    Returns:
        A frame indexed by ``finding`` with the columns "paper (LLaMA-1-7B)", "here" and "holds here?" (``HOLDS``,
        ``FAILS``, ``REVERSED``, ``UNDECIDED`` or "partly: ...").

    Raises:
        KeyError: if a selection, score column, variant or metric is missing.
        ValueError: as ``count_runs`` and ``paired_verdict``.
    """
    ppl_blocks, taylor_blocks = selections["PPL"], selections["Taylor+"]
    rows = {
        "PPL criterion removes scattered blocks": (
            describe_blocks(PAPER_BLOCKS["PPL"]),
            describe_blocks(ppl_blocks),
            HOLDS if count_runs(ppl_blocks) > 1 else FAILS,
        ),
        "Taylor+ removes one contiguous run of deep blocks": (
            describe_blocks(PAPER_BLOCKS["Taylor+"]),
            describe_blocks(taylor_blocks),
            _taylor_deep_run(taylor_blocks, n_blocks),
        ),
    }

    ppl = {name: results.interval(name, perplexity_metric).estimate for name in ("PPL", "Taylor+")}
    gap = results.difference("PPL", "Taylor+", perplexity_metric)
    rows["PPL criterion gives lower perplexity than Taylor+"] = (
        f"{PAPER_WIKITEXT2_PPL['PPL']} vs {PAPER_WIKITEXT2_PPL['Taylor+']} (WikiText2, after LoRA)",
        f"{fmt(ppl['PPL'])} vs {fmt(ppl['Taylor+'])} (no retraining; Taylor+ − PPL: "
        f"{fmt_interval(gap.low, gap.high, sign=True)})",
        paired_verdict(gap, a="PPL", b="Taylor+", better="lower", paper_winner="PPL"),
    )
    accuracies = {
        f"Taylor+ gives higher accuracy than PPL ({accuracy_label})": (results, accuracy_metric, accuracy_label)
    }
    if benchmarks is not None:
        accuracies[f"Taylor+ gives higher accuracy than PPL ({benchmark_label})"] = (
            benchmarks,
            benchmark_metric,
            benchmark_label,
        )
    for finding, (source, metric, label) in accuracies.items():
        acc = {name: source.interval(name, metric).estimate for name in ("PPL", "Taylor+")}
        gap = source.difference("PPL", "Taylor+", metric)
        rows[finding] = (
            f"{PAPER_ZERO_SHOT['Taylor+']} vs {PAPER_ZERO_SHOT['PPL']} (7 zero-shot tasks, after LoRA)",
            f"{fmt(acc['Taylor+'], decimals=3)} vs {fmt(acc['PPL'], decimals=3)} ({label}; Taylor+ − PPL: "
            f"{fmt_interval(gap.low, gap.high, decimals=3, sign=True)})",
            paired_verdict(gap, a="PPL", b="Taylor+", better="higher", paper_winner="Taylor+"),
        )

    without = scores["PPL"]
    ratio = without[0] / without.min()
    rows["Removing block 0 is catastrophic"] = (
        f"PPL {PAPER_BLOCK0_PPL['block 0']:g} vs {PAPER_BLOCK0_PPL['best block']} for the best block",
        f"{fmt(without[0])} vs {fmt(without.min())} ({fmt(ratio)}x, calibration)",
        HOLDS if ratio >= VITAL_RATIO else FAILS,
    )
    ranks = {name: tied_order(scores[name]).index(0) + 1 for name in ("Magnitude", "Taylor")}
    first = [name for name, rank in ranks.items() if rank == 1]
    rows["Without +, Taylor and Magnitude remove block 0 first"] = (
        "yes (hence the + rule)",
        ", ".join(f"{name}: block 0 ranks {rank}" for name, rank in ranks.items()),
        HOLDS if len(first) == len(ranks) else ("partly: " + ", ".join(first)) if first else FAILS,
    )

    if healing is not None:
        gap_left = healing.before - healing.full
        closed = (
            f"{fmt_pct((healing.before - healing.after) / gap_left, decimals=0)} of the gap"
            if gap_left > 0
            else "pruning left no gap"
        )
        rows["LoRA retraining lowers the perplexity of the pruned model"] = (
            f"PPL {PAPER_WIKITEXT2_PPL['PPL']} / {PAPER_WIKITEXT2_PPL['Taylor+']} vs "
            f"{PAPER_WIKITEXT2_PPL['unpruned']} unpruned",
            f"{healing.selection}: {fmt(healing.before)} -> {fmt(healing.after)} ({closed}; "
            f"full + LoRA {fmt(healing.tuned_full)})",
            {"better": HOLDS, "within noise": UNDECIDED, "worse": FAILS, TOO_FEW: TOO_FEW}[
                healing.gain.verdict(better="lower")
            ],
        )

    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[f"paper ({PAPER_MODEL})", "here", "holds here?"])
    frame.index.name = "finding"
    return frame


PATTERN_FINDINGS = ("PPL criterion gives lower perplexity than Taylor+", "Taylor+ gives higher accuracy than PPL (")
"""The two findings that make the paper's headline pattern (the second: the row whose name starts so and names the
zero-shot benchmarks, see ``shortened_llama_findings``'s ``benchmark_label``)."""


def paper_pattern(findings: pd.DataFrame, benchmark_label: str) -> tuple[str, str, str]:
    """Whether the paper's headline pattern, "PPL criterion wins perplexity, Taylor+ wins zero-shot accuracy", holds.

    Args:
        findings: ``shortened_llama_findings``' frame, made with benchmarks.
        benchmark_label: the ``benchmark_label`` it was made with.

    Returns:
        ``(overall, perplexity half, zero-shot half)``: overall "holds" when both halves hold, "does not hold" when
        either fails or is reversed, else "is undecided".

    Raises:
        KeyError: if either finding is missing from ``findings``.
    """
    halves = (
        findings.loc[PATTERN_FINDINGS[0], "holds here?"],
        findings.loc[f"{PATTERN_FINDINGS[1]}{benchmark_label})", "holds here?"],
    )
    if all(half == HOLDS for half in halves):
        return "holds", *halves
    if any(half in (FAILS, REVERSED) for half in halves):
        return "does not hold", *halves
    return "is undecided", *halves
