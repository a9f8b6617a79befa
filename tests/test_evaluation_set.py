"""One evaluation set for the whole course: every notebook that evaluates pruned variants sets the same window length,
number of perplexity windows, number of SMS messages and shots, so the full model's perplexity and SMS accuracy read
the same in every chapter (a learner comparing chapters compares like with like)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from run_notebooks import course_notebooks

NOTEBOOKS = course_notebooks(Path(__file__).resolve().parents[1] / "notebooks")
SHARED = ("SEQ_LEN", "EVAL_WINDOWS", "EVAL_SMS", "SHOTS")
"""The parameters that define the evaluation set (perplexity on load_wikitext("evaluation"), accuracy on
load_sms("evaluation") with shots from load_sms("calibration"))."""
NOT_EVALUATION = ("MAX_WINDOWS", "MAX_SMS")
"""Earlier names of the same settings: a notebook using them would escape this test."""


def parameters(path: Path) -> dict[str, object]:
    """The literal assignments of the notebook's cell tagged "parameters"."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    found = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # computed from another parameter: not a literal setting
    return found


def test_every_notebook_that_evaluates_variants_uses_the_same_set():
    settings = {path.name: parameters(path) for path in NOTEBOOKS}
    evaluating = {name: found for name, found in settings.items() if "EVAL_WINDOWS" in found or "EVAL_SMS" in found}
    assert len(evaluating) >= 4, f"expected the evaluating chapters to set EVAL_WINDOWS/EVAL_SMS; found {evaluating}"
    for key in SHARED:
        values = {name: found.get(key) for name, found in evaluating.items()}
        assert len(set(map(repr, values.values()))) == 1, f"{key} differs between notebooks: {values}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_no_notebook_names_the_set_differently(path):
    assert not set(NOT_EVALUATION) & set(parameters(path)), f"{path.name}: use EVAL_WINDOWS / EVAL_SMS"
