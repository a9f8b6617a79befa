"""Re-execute course notebooks and save them with their outputs (what strict nbval then compares against).

    python notebooks/run_notebooks.py                  # all chapters
    python notebooks/run_notebooks.py 03_hooks.ipynb   # one chapter

The kernel gets KERNEL_ENV, the same environment nbval's kernels get (notebooks/conftest.py), so the stored outputs
are what CI reproduces: no progress bars, no hub look-ups, two CPU threads.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

KERNEL_ENV = {
    "TQDM_DISABLE": "1",  # progress bars write to stderr, which nbval compares
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
}


def apply_kernel_env() -> None:
    """Set KERNEL_ENV in this process, so kernels started from it inherit it (caller's explicit values win)."""
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)


def check_no_trailing_semicolons(notebook, name: str) -> None:
    """nbval (0.10+) executes cells without IPython's history, so a trailing ';' no longer hides the last value:
    the stored notebook would lack an output that nbval then sees. End plotting cells with plt.show() instead."""
    for number, cell in enumerate(notebook.cells):
        lines = cell.source.rstrip().splitlines() if cell.cell_type == "code" else []
        if lines and lines[-1].rstrip().endswith(";") and not lines[-1].lstrip().startswith("%"):
            raise ValueError(f"{name}, cell {number}: ends with ';', which nbval ignores; end it with plt.show() "
                             "or assign the value instead")


def execute(path: Path, timeout: int = 1800) -> float:
    """Run one notebook top to bottom in a fresh kernel and save it in place; return the seconds it took.

    ``timeout`` is per cell: generous, because a loaded 2-core machine can take 10 minutes over the slowest cell."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    check_no_trailing_semicolons(notebook, path.name)
    started = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    # Widget state is per-session noise: the widget cells' outputs are ignored by nbval anyway.
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)
    return time.perf_counter() - started


def main(names: list[str]) -> None:
    apply_kernel_env()
    here = Path(__file__).parent
    paths = [here / name for name in names] if names else sorted(here.glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
