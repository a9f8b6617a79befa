"""Runs inside a notebook's kernel, from a one-line cell that the browser test types: it reports what the Python
side holds for the block explorer the browser has just clicked (selection, results, error), and recomputes by a
second code path what the browser showed: the perplexity on a pruned copy of the model (the panel uses
``skip_blocks``), the k least important blocks with pandas' ``nsmallest`` (the chooser uses ``select_blocks``).
"""

from __future__ import annotations

import gc

from helpers.pruning import prune_blocks
from helpers.widgets import BlockChooser, LivePanel


def least_important(chooser: BlockChooser) -> list[int]:
    """The chooser's k least important blocks of the shown criterion, outside its protected first/last blocks.

    Ties go to the lower block (``keep="first"`` on the block-ordered scores), as ``select_blocks`` documents.
    """
    n_blocks = chooser.n_blocks
    scores = chooser.scores.iloc[chooser.protect_first.value : n_blocks - chooser.protect_last.value]
    k = chooser.k.value
    if chooser.higher_is_important(chooser.criterion.value):
        chosen = scores.nsmallest(k, keep="first")
    else:
        chosen = scores.nlargest(k, keep="first")
    return sorted(int(block) for block in chosen.index)


def _panel_showing(blocks: list[int]) -> LivePanel:
    """The one live panel (found among all objects, whatever the notebook named it) whose chooser selects ``blocks``."""
    panels = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, LivePanel) and obj.chooser is not None and obj.chooser.selected == blocks
    ]
    if len(panels) != 1:
        raise LookupError(f"expected one block explorer selecting {blocks}, found {len(panels)}")
    return panels[0]


def report(selections: list[list[int]]) -> dict:
    """The report (JSON-ready) for the explorer whose chooser now selects ``selections[-1]``: its selection, its
    metric names and last results, its error, the independent k least important blocks, and the panel's
    "perplexity" metric recomputed on a pruned copy for each of ``selections`` (only that metric: it is the cheap
    one; the others are compared with ``results``)."""
    panel = _panel_showing(selections[-1])
    perplexities = []
    for blocks in selections:
        pruned = prune_blocks(panel.model, blocks)
        perplexities.append(float(panel.measures["perplexity"](pruned).ppl))
        del pruned  # one model copy at a time
    return {
        "selected": panel.chooser.selected,
        "least_important": least_important(panel.chooser),
        "metrics": list(panel.measures),
        "results": panel.results,
        "error": None if panel.error is None else repr(panel.error),
        "perplexity": perplexities,
    }
