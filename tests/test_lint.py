"""ruff's lint and format checks over the package, tests and scripts (settings in pyproject.toml), in the test command
so that CI runs them: a failure lists the file and line to fix (``ruff check --fix`` and ``ruff format`` fix most)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(command):
    done = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
