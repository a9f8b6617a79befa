"""Where Colab installs the course from: one constant, written into every notebook by this script.

A notebook opened in Colab has no clone beside it, so its first code cell installs the `helpers` package (the
run-time requirements only, requirements.txt) from the repository named in ``COURSE_REPO``, and its "Open in Colab"
badge opens the notebook from that repository. A fork changes the constant below and runs

    python notebooks/course_repo.py              # rewrite badge and install cell of every notebook (sources only)
    python notebooks/course_repo.py owner/name   # the same for another repository, without editing this file

tests/test_course_repo.py checks that every notebook names ``COURSE_REPO`` and nothing else.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from run_notebooks import course_notebooks

COURSE_REPO = "depth-pruning-course/depth-pruning"
"""GitHub "owner/name" of the course repository (its default branch holds the notebooks)."""

NOTEBOOKS = Path(__file__).resolve().parent
_REPO = r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+"
_BADGE = re.compile(rf"(colab\.research\.google\.com/github/)({_REPO})(/blob/)")
_INSTALL = re.compile(rf'^(COURSE_REPO = ")({_REPO})(")', re.MULTILINE)


def _check_repo(repo: str) -> str:
    if not re.fullmatch(_REPO, repo):
        raise ValueError(f'repository must be GitHub\'s "owner/name" (e.g. {COURSE_REPO!r}); got {repo!r}')
    return repo


def named_repos(notebook: dict) -> set[str]:
    """Every repository a notebook's badge links and its install cell installs from."""
    repos = set()
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        pattern = _BADGE if cell["cell_type"] == "markdown" else _INSTALL
        repos.update(match.group(2) for match in pattern.finditer(source))
    return repos


def set_course_repo(path: Path, repo: str = COURSE_REPO) -> bool:
    """Point the badge and install cell of the notebook at ``path`` to ``repo``; True if the file changed.

    Only cell sources change (outputs and metadata are kept), so strict nbval still compares the same outputs.
    """
    _check_repo(repo)
    text = path.read_text(encoding="utf-8")
    notebook = json.loads(text)
    if not named_repos(notebook):
        raise ValueError(f"{path.name} has no Colab badge or COURSE_REPO install cell to point at {repo}")
    for cell in notebook["cells"]:
        pattern = _BADGE if cell["cell_type"] == "markdown" else _INSTALL
        source = pattern.sub(lambda match: match.group(1) + repo + match.group(3), "".join(cell["source"]))
        cell["source"] = source.splitlines(keepends=True)
    new_text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if new_text == text:
        return False
    path.write_text(new_text, encoding="utf-8")
    return True


if __name__ == "__main__":
    target = _check_repo(sys.argv[1] if len(sys.argv) > 1 else COURSE_REPO)
    for notebook_path in course_notebooks(NOTEBOOKS):
        changed = set_course_repo(notebook_path, target)
        print(f"{notebook_path.name}: {'now installs from' if changed else 'already names'} {target}")
