"""How long each notebook cell takes: the figures for teaching live (every cell <= 30 s, 90% <= 10 s, every chapter
<= 3 minutes, the course <= 12 minutes on two cores).

    python benchmarks/cell_times.py              # read the timings stored by the last notebooks/run_notebooks.py
    python benchmarks/cell_times.py --run        # execute copies of the chapters now (nothing in the repo changes)
    python benchmarks/cell_times.py --run 05_wikitext_vs_sms.ipynb

nbclient records when each cell started and when its reply came (``metadata.execution``); both modes read those.
``--run`` executes copies in a temporary folder with the course's kernel environment, except that progress bars are
on, so the table can also say which slow cells show progress while they run (a bar or a line of stream output
before the cell's end). Each cell over --over seconds is listed; then each chapter's total and the distribution.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
from run_notebooks import KERNEL_ENV, OFFLINE_ENV, course_notebooks, run  # noqa: E402

PROGRESS_MARKERS = ("it/s", "s/it", "%|")
"""Text that a tqdm bar writes (in its text form or its widget's description)."""


def _seconds(cell: nbformat.NotebookNode) -> float | None:
    """The cell's run time from nbclient's timestamps, or None for a cell that was not run."""
    execution = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in execution or "shell.execute_reply" not in execution:
        return None
    start, end = (datetime.fromisoformat(execution[key]) for key in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def _shows_progress(cell: nbformat.NotebookNode) -> bool:
    """True when the cell wrote a progress bar (text or widget) or more than one piece of stream output."""
    outputs = cell.get("outputs", [])
    streams = [output for output in outputs if output.get("output_type") == "stream"]
    texts = [str(output.get("text", "")) for output in streams]
    texts += [str(output.get("data", {}).get("text/plain", "")) for output in outputs if "data" in output]
    return any(marker in text for text in texts for marker in PROGRESS_MARKERS) or len(streams) > 1


def _execute_copies(paths: list[Path]) -> list[Path]:
    """Run each notebook as a copy in a temporary folder (bars on, offline) and return the copies' paths."""
    folder = Path(tempfile.mkdtemp(prefix="cell-times-"))
    env = os.environ | KERNEL_ENV | OFFLINE_ENV | {"TQDM_DISABLE": "0"}
    copies = []
    for path in paths:
        copy = folder / path.name
        shutil.copy(path, copy)
        notebook = nbformat.read(copy, as_version=4)
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        run(notebook, NOTEBOOKS, timeout=1800, env=env, skip_tag="nbval-skip")
        nbformat.write(notebook, copy)
        copies.append(copy)
    return copies


def report(paths: list[Path], over: float, check_progress: bool) -> None:
    """Print the cells over ``over`` seconds, each chapter's total and the distribution over all cells."""
    times: list[float] = []
    print(f"{'chapter':<40} {'cell':>4} {'seconds':>8}" + ("  progress shown" if check_progress else ""))
    totals = {}
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        chapter = []
        for number, cell in enumerate(notebook.cells):
            seconds = _seconds(cell) if cell.cell_type == "code" else None
            if seconds is None:
                continue
            chapter.append(seconds)
            if seconds > over:
                flag = ("  yes" if _shows_progress(cell) else "  NO") if check_progress else ""
                print(f"{path.name:<40} {number:>4} {seconds:>8.1f}{flag}")
        totals[path.name] = sum(chapter)
        times.extend(chapter)
    if not times:
        raise SystemExit("no cell timings found: run notebooks/run_notebooks.py first, or pass --run")
    print()
    for name, total in totals.items():
        print(f"chapter_s {name}: {total:.0f}")
    print(f"course_s: {sum(times):.0f}")
    cut = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    print(
        f"cells: {len(times)}, median_s {statistics.median(times):.1f}, p90_s {cut:.1f}, max_s {max(times):.1f}, "
        f"over_10_s {sum(t > 10 for t in times)}, over_30_s {sum(t > 30 for t in times)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="chapter file names (default: all)")
    parser.add_argument("--run", action="store_true", help="execute copies now instead of reading stored timings")
    parser.add_argument("--over", type=float, default=10.0, help="list the cells slower than this (seconds)")
    args = parser.parse_args()
    paths = [NOTEBOOKS / name for name in args.notebooks] or course_notebooks(NOTEBOOKS)
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    report(_execute_copies(paths) if args.run else paths, args.over, check_progress=args.run)


if __name__ == "__main__":
    main()
