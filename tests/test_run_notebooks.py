"""run_notebooks' post-processing of executed notebooks: widget-only cells are stored without output."""

from __future__ import annotations

import nbformat
import pytest
from run_notebooks import WIDGET_ONLY, strip_widget_outputs


def notebook_with(tags: list[str]) -> nbformat.NotebookNode:
    widget = nbformat.v4.new_code_cell("explorer", metadata={"tags": tags})
    widget.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "VBox(children=(...))"})]
    plain = nbformat.v4.new_code_cell("1 + 1")
    plain.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"})]
    return nbformat.v4.new_notebook(cells=[widget, plain])


def test_widget_only_outputs_are_cleared_and_others_kept():
    notebook = notebook_with([WIDGET_ONLY, "nbval-ignore-output"])
    strip_widget_outputs(notebook, "nb")
    assert notebook.cells[0].outputs == [] and notebook.cells[1].outputs[0]["data"]["text/plain"] == "2"


def test_a_widget_only_cell_must_be_ignored_by_nbval():
    with pytest.raises(ValueError, match="cell 0: tagged 'widget-only' but not 'nbval-ignore-output'"):
        strip_widget_outputs(notebook_with([WIDGET_ONLY]), "nb")
