"""Re-execute course notebooks and save them with their outputs (what strict nbval then compares against).

    python notebooks/run_notebooks.py                  # all chapters and the lab's solutions
    python notebooks/run_notebooks.py 03_hooks.ipynb   # one chapter
    python notebooks/run_notebooks.py solutions/07_hands_on_lab_solutions.ipynb

The kernel gets KERNEL_ENV, the same environment nbval's kernels get (notebooks/conftest.py), so the stored outputs
are what CI reproduces: no progress bars, no hub look-ups, two CPU threads.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbformat import NotebookNode

KERNEL_ENV = {
    "TQDM_DISABLE": "1",  # progress bars write to stderr, which nbval compares
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""What keeps a kernel off the hub: the tests that start kernels of their own add it to KERNEL_ENV."""


def course_notebooks(folder: Path | None = None) -> list[Path]:
    """Every notebook of the course, in order: the chapters (``NN_*.ipynb``), then the lab's solutions
    (``solutions/NN_*.ipynb``, kept out of the learner's notebook); ``folder`` defaults to this one."""
    folder = Path(__file__).parent if folder is None else folder
    return sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted(folder.glob("solutions/[0-9][0-9]_*.ipynb"))


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
            raise ValueError(
                f"{name}, cell {number}: ends with ';', which nbval ignores; end it with plt.show() "
                "or assign the value instead"
            )


WIDGET_ONLY = "widget-only"
"""Tag of a cell whose only output is a live widget: a saved notebook can show nothing of it but its text repr
("VBox(children=...)"), which is what GitHub would display, so it is stored with no output."""


def strip_widget_outputs(notebook, name: str) -> None:
    """Clear the outputs of cells tagged WIDGET_ONLY; they must also carry nbval's "nbval-ignore-output" tag."""
    for number, cell in enumerate(notebook.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if WIDGET_ONLY in tags:
            if "nbval-ignore-output" not in tags:
                raise ValueError(f"{name}, cell {number}: tagged {WIDGET_ONLY!r} but not 'nbval-ignore-output'")
            cell.outputs = []


def with_parameters(source: Path, target: Path, overrides: dict[str, object]) -> None:
    """Write ``source`` to ``target`` with a cell that sets ``overrides`` right after the cell tagged "parameters"
    (papermill's convention: the new cell is tagged "injected-parameters"). Every name must be assigned in the
    parameters cell, so a renamed parameter fails here instead of being silently ignored."""
    notebook = json.loads(source.read_text())
    index = next(
        (i for i, cell in enumerate(notebook["cells"]) if "parameters" in cell["metadata"].get("tags", [])), None
    )
    if index is None:
        raise ValueError(f"{source.name} has no cell tagged 'parameters'")
    defined = "".join(notebook["cells"][index]["source"])
    unknown = [name for name in overrides if f"\n{name} = " not in f"\n{defined}"]
    if unknown:
        raise ValueError(f"{source.name}: the parameters cell sets no {unknown}")
    code = "# Parameters injected by a test (e.g. small sizes, so that it runs in seconds)\n" + "\n".join(
        f"{name} = {value!r}" for name, value in overrides.items()
    )
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": "injected-parameters",
        "metadata": {"tags": ["injected-parameters"]},
        "outputs": [],
        "source": code,
    }
    notebook["cells"].insert(index + 1, cell)
    target.write_text(json.dumps(notebook, indent=1))


def run(
    notebook: NotebookNode,
    folder: Path,
    *,
    timeout: int = 600,
    env: dict[str, str] | None = None,
    skip_tag: str = "skip-execution",
) -> None:
    """Execute ``notebook`` in place, top to bottom, in a fresh kernel whose working folder is ``folder``.

    ``env``: the kernel's whole environment (default: this process's). Cells tagged ``skip_tag`` are not run
    (nbclient's default tag unless told otherwise). A cell that raises stops the run with nbclient's
    CellExecutionError, which shows the cell and its traceback.
    """
    from nbclient import NotebookClient

    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        skip_cells_with_tag=skip_tag,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute(**({} if env is None else {"env": env}))


def execute(path: Path, timeout: int = 1800) -> float:
    """Run one notebook top to bottom in a fresh kernel and save it in place; return the seconds it took.

    ``timeout`` is per cell: generous, because a loaded 2-core machine can take 10 minutes over the slowest cell."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    check_no_trailing_semicolons(notebook, path.name)
    started = time.perf_counter()
    run(notebook, path.parent, timeout=timeout)
    # Widget state is per-session noise: the widget cells' outputs are ignored by nbval anyway.
    notebook.metadata.pop("widgets", None)
    strip_widget_outputs(notebook, path.name)
    nbformat.write(notebook, path)
    return time.perf_counter() - started


def main(names: list[str]) -> None:
    apply_kernel_env()
    here = Path(__file__).parent
    paths = [here / name for name in names] if names else course_notebooks(here)
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
