"""Interactive block explorer: pick blocks to remove, coloured by importance, and see what removing them costs.

``BlockChooser`` shows one button per block, coloured by its importance rank on a chosen criterion, and can select
the k least important blocks of a criterion. ``LivePanel`` re-evaluates the model with the chosen blocks skipped
(``skip_blocks``: no copy, exact restore) and shows the numbers beside those of the full model. ``block_explorer``
wires both. The widgets are plain ipywidgets: they can be built and driven (set values, ``.click()``) without a
frontend, nothing is displayed at import time, and errors raised by a callback are shown in the widget.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import matplotlib
import pandas as pd
import traitlets
from matplotlib.colors import to_hex, to_rgb
from transformers import PreTrainedModel

from .block_inputs import BlockInputs, MissingRecording
from .blocks import check_block_indices, num_blocks
from .checks import check_bool, check_int, check_mapping
from .display import fmt
from .evaluation import FULL, INFO_COLUMNS, Measure, VariantResults, _model_state, evaluate_variants
from .generation import greedy_continuation
from .pruning import skip_blocks
from .settings import progress_bar
from .statistics import MIN_UNITS
from .ties import tied_ranks

if TYPE_CHECKING:  # imported lazily in LivePanel.for_course
    from .classification import Decision

REMOVED_STYLE = {"button_color": "#eeeeee", "text_color": "#888888", "text_decoration": "line-through"}
"""How a block chosen for removal looks: faded out and struck through (no colormap colour is this pale)."""
NO_SCORE_COLOUR = "#bdbdbd"
"""Background of a block whose score is NaN (not computed, or undefined)."""

IDLE_STATUS = "<small>Choose blocks, then press Evaluate.</small>"
"""What the panel's status line says before the first evaluation."""

Scores = pd.DataFrame | Mapping[str, pd.DataFrame] | pd.Series
Select = Callable[..., list[int]]


def _as_score_tables(scores: Scores) -> dict[str, pd.DataFrame]:
    """Scores as ``{dataset: DataFrame[block x criterion]}``; one table without datasets becomes ``{"": table}``.

    Accepted: a Series (one criterion), a DataFrame (criteria as columns), a DataFrame whose columns are a
    (dataset, criterion) MultiIndex, or a dict ``{dataset: DataFrame}``.
    """
    if isinstance(scores, pd.Series):
        scores = scores.to_frame(name=scores.name if scores.name is not None else "score")
    if isinstance(scores, pd.DataFrame) and isinstance(scores.columns, pd.MultiIndex):
        if scores.columns.nlevels != 2:
            raise ValueError("MultiIndex score columns must have exactly two levels: (dataset, criterion)")
        scores = {str(d): scores[d] for d in scores.columns.unique(level=0)}
    tables = {"": scores} if isinstance(scores, pd.DataFrame) else scores
    if not isinstance(tables, Mapping) or not tables:
        raise ValueError(
            "scores must be a Series, a DataFrame [block x criterion], a DataFrame with (dataset, "
            f"criterion) MultiIndex columns, or a non-empty dict {{dataset: DataFrame}}; got {scores!r}"
        )
    first_index = None
    for dataset, table in tables.items():
        if not isinstance(table, pd.DataFrame) or table.empty:
            raise ValueError(f"scores for dataset {dataset!r} must be a non-empty DataFrame [block x criterion]")
        if list(table.index) != list(range(len(table))):
            raise ValueError(
                f"scores for dataset {dataset!r} must be indexed by the blocks 0..L-1 in order, got "
                f"index {list(table.index)}"
            )
        first_index = table.index if first_index is None else first_index
        if len(table.index) != len(first_index):
            raise ValueError(
                "every dataset's scores must cover the same blocks; got tables of "
                f"{len(first_index)} and {len(table.index)} blocks"
            )
        if not all(pd.api.types.is_numeric_dtype(t) for t in table.dtypes):
            raise ValueError(f"scores for dataset {dataset!r} must be numeric (NaN allowed), got {dict(table.dtypes)}")
    return {str(d): t.astype(float) for d, t in tables.items()}


def importance_colours(scores: pd.Series, *, higher_is_important: bool = True, cmap: str = "viridis") -> list[str]:
    """Hex colour per block: the colormap at the block's importance *rank* among the blocks (NaN -> grey).

    Colouring by rank rather than by value keeps one outlying block (e.g. block 0, far more important than the rest)
    from squeezing all the others into one colour: the least important block gets the colormap's bottom colour, the
    most important its top, and the others are spread evenly between in the order of their scores. Near-ties
    (``tied_ranks``) share a colour; when every score is tied, all get the middle colour.

    Args:
        scores: one score per block.
        higher_is_important: False for scores where high means removable (e.g. cosine similarity).
        cmap: the name of a matplotlib colormap.

    Returns:
        One hex colour string per score, in the order of ``scores``; ``NO_SCORE_COLOUR`` for a NaN score.

    Raises:
        KeyError: if ``cmap`` is not a matplotlib colormap name.
        TypeError: if ``higher_is_important`` is not a bool.
    """
    check_bool("higher_is_important", higher_is_important)
    colormap = matplotlib.colormaps[cmap]
    importance = pd.Series(scores.to_numpy(dtype=float), index=range(len(scores)))
    if not higher_is_important:
        importance = -importance
    ranks = tied_ranks(importance.dropna()) if importance.notna().any() else pd.Series(dtype=float)
    low, high = (ranks.min(), ranks.max()) if len(ranks) else (0.0, 0.0)
    colours = []
    for position in importance.index:
        if position not in ranks.index:
            colours.append(NO_SCORE_COLOUR)
        else:
            colours.append(to_hex(colormap((ranks[position] - low) / (high - low) if high > low else 0.5)))
    return colours


def _text_colour(background: str) -> str:
    """Black or white, whichever reads better on ``background`` (relative luminance, sRGB approximation)."""
    r, g, b = to_rgb(background)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _working_html(what: str) -> str:
    return f"<span class='live-panel-working' style='color:#8a5a00'><b>⏳ working…</b> {html.escape(what)}…</span>"


def _error_html(error: BaseException) -> str:
    return f"<span style='color:#b00020'><b>{type(error).__name__}</b>: {html.escape(str(error))}</span>"


class BlockChooser(widgets.VBox):
    """Buttons, one per block, to choose the blocks to remove; coloured by importance rank on the chosen criterion.

    Per-dataset score tables give a dataset menu. The chosen blocks are the trait ``selected`` (sorted list): read
    it, set it, or ``observe`` it. Each block button toggles its block on ``click()``; ipywidgets' ToggleButton
    cannot be coloured, Button can.
    """

    selected = traitlets.List(traitlets.Int(), help="sorted 0-based indices of the blocks chosen for removal")

    def __init__(
        self,
        scores: Scores,
        *,
        higher_is_important: bool | Mapping[str, bool] = True,
        protect_first: int = 0,
        protect_last: int = 0,
        k: int = 1,
        select: Select | None = None,
        cmap: str = "viridis",
    ) -> None:
        """Build the chooser, with nothing selected.

        Args:
            scores: a Series (one criterion), a DataFrame [block x criterion], a DataFrame with (dataset, criterion)
                MultiIndex columns, or a dict ``{dataset: DataFrame}``, indexed by the blocks 0..L-1 in order.
            higher_is_important: one bool for all criteria or ``{criterion: bool}`` (missing criteria count as
                True); it orients both the colours and "select the k least important".
            protect_first: the initial "keep first" value: blocks "select" never removes at the start.
            protect_last: the initial "keep last" value: blocks "select" never removes at the end.
            k: the initial value of the k slider, clipped to 0..L-1.
            select: the selection function, called like ``select_blocks`` of ``helpers.selection`` (the default).
            cmap: the matplotlib colormap of the importance colours.

        Raises:
            ValueError: for ``scores`` of another kind (MultiIndex columns of more than two levels included),
                empty, not numeric, not indexed by 0..L-1 in order, or whose datasets cover different blocks.
            KeyError: if ``cmap`` is not a matplotlib colormap name.
            TypeError: if ``higher_is_important`` (or a value of the mapping) is not a bool.
        """
        for direction in (
            higher_is_important.values() if isinstance(higher_is_important, Mapping) else [higher_is_important]
        ):
            check_bool("higher_is_important", direction)
        self._tables = _as_score_tables(scores)
        self.n_blocks = len(next(iter(self._tables.values())))
        self._direction = higher_is_important
        self._select = select
        self._cmap = cmap
        matplotlib.colormaps[cmap]  # fail now, not at the first redraw, on an unknown colormap name
        datasets = list(self._tables)
        self.dataset = widgets.Dropdown(options=datasets, value=datasets[0], description="dataset")
        if datasets == [""]:
            self.dataset.layout.display = "none"
        self.criterion = widgets.Dropdown(options=list(self._tables[datasets[0]].columns), description="criterion")
        self.k = widgets.IntSlider(
            value=min(max(k, 0), self.n_blocks - 1), min=0, max=self.n_blocks - 1, description="k"
        )
        self.protect_first = widgets.BoundedIntText(
            value=protect_first, min=0, max=self.n_blocks, description="keep first", layout={"width": "150px"}
        )
        self.protect_last = widgets.BoundedIntText(
            value=protect_last, min=0, max=self.n_blocks, description="keep last", layout={"width": "150px"}
        )
        self.select_button = widgets.Button(description="Select the k least important", layout={"width": "auto"})
        self.clear_button = widgets.Button(description="Clear")
        self.block_buttons = [
            widgets.Button(description=str(i), layout={"width": "44px"}) for i in range(self.n_blocks)
        ]
        self.legend = widgets.HTML()
        self.status = widgets.HTML()
        super().__init__(
            [
                widgets.HBox([self.dataset, self.criterion]),
                widgets.HBox([self.k, self.protect_first, self.protect_last, self.select_button, self.clear_button]),
                widgets.HBox(self.block_buttons, layout={"flex_flow": "row wrap"}),
                self.legend,
                self.status,
            ]
        )
        for i, button in enumerate(self.block_buttons):
            button.on_click(lambda _, block=i: self._toggle(block))
        self.select_button.on_click(lambda _: self._select_least_important())
        self.clear_button.on_click(lambda _: setattr(self, "selected", []))
        self.dataset.observe(self._on_dataset, names="value")
        self.criterion.observe(lambda _: self._redraw(), names="value")
        self._redraw()

    def higher_is_important(self, criterion: str) -> bool:
        """Whether a higher value of ``criterion`` means a more important block.

        Args:
            criterion: a criterion name (one missing from a ``higher_is_important`` mapping counts as True).

        Returns:
            True when higher means more important.
        """
        if isinstance(self._direction, Mapping):
            return self._direction.get(criterion, True)
        return self._direction

    @property
    def scores(self) -> pd.Series:
        """The scores shown: the chosen criterion on the chosen dataset, indexed by block."""
        return self._tables[self.dataset.value][self.criterion.value]

    @traitlets.validate("selected")
    def _valid_selection(self, proposal: dict[str, Any]) -> list[int]:
        return check_block_indices(proposal["value"], self.n_blocks, allow_empty=True)

    @traitlets.observe("selected")
    def _on_selected(self, _: dict[str, Any]) -> None:
        self._redraw()

    def _toggle(self, block: int) -> None:
        self.selected = sorted(set(self.selected) ^ {block})

    def _on_dataset(self, _: dict[str, Any]) -> None:
        criteria = list(self._tables[self.dataset.value].columns)
        keep = self.criterion.value if self.criterion.value in criteria else criteria[0]
        with self.criterion.hold_trait_notifications():
            self.criterion.options = criteria
            self.criterion.value = keep
        self._redraw()

    def _select_least_important(self) -> None:
        """Select the k least important blocks of the shown criterion, honouring the protected first/last blocks."""
        try:
            if self._select is None:
                from .selection import select_blocks  # lazy: widgets must import even where selection cannot

                self._select = select_blocks
            chosen = self._select(
                self.scores,
                self.k.value,
                higher_is_important=self.higher_is_important(self.criterion.value),
                protect_first=self.protect_first.value,
                protect_last=self.protect_last.value,
            )
            self.selected = list(chosen)
        except Exception as error:  # noqa: BLE001 - shown to the learner instead of vanishing into the kernel log
            self.status.value = _error_html(error)
        else:
            self.status.value = ""

    def _redraw(self) -> None:
        scores = self.scores
        direction = self.higher_is_important(self.criterion.value)
        removed = set(self.selected)
        for block, (button, colour) in enumerate(
            zip(self.block_buttons, importance_colours(scores, higher_is_important=direction, cmap=self._cmap))
        ):
            style = (
                REMOVED_STYLE
                if block in removed
                else {"button_color": colour, "text_color": _text_colour(colour), "text_decoration": "none"}
            )
            for key, value in style.items():
                setattr(button.style, key, value)
            state = "removed" if block in removed else "kept"
            button.tooltip = f"block {block} ({state}): {self.criterion.value} = {scores.iloc[block]:.4g}"
        low, high = ("lowest", "highest") if direction else ("highest", "lowest")
        self.legend.value = (
            f"<small>colour: importance rank by <b>{html.escape(str(self.criterion.value))}</b>, dark = least "
            f"important ({low} value), bright = most important ({high} value), evenly spaced by rank rather than by "
            "value so that one outlying block does not wash out the others (tied blocks share a colour; hover for "
            f"the value); struck through = removed. "
            f"Removing {len(removed)} of {self.n_blocks} blocks: {sorted(removed)}</small>"
        )


class LivePanel(widgets.VBox):
    """Evaluate the model with the chosen blocks skipped and show the results beside those of the full model.

    A preset of ``evaluate_variants``: each measure runs on the full model once and on every new choice inside
    ``skip_blocks``; perplexity and accuracy results come with their 95% bootstrap intervals and the paired
    difference to the full model with its verdict, so the panel says whether a change is beyond noise. The blocks
    come from ``chooser`` (its ``selected``) or from ``evaluate(blocks)``. ``evaluation`` holds the last
    ``VariantResults``; ``results`` and ``baseline`` its numbers for the chosen blocks and for the full model. The
    full model's numbers are measured again when its weights change.

    A click answers in seconds: with ``resume``, the full model's hidden states entering a few blocks are recorded
    while it is measured, and a choice runs only from the last of those blocks before its first removed one
    (``BlockInputs``: the same numbers, less work). With ``first_look`` measures (the same metrics on fewer windows
    and messages), a click shows their numbers first, says so, and then refines them to those of ``measures``; the
    panel shows that it is working until the final numbers are in.
    """

    CHOSEN = "chosen"
    """The variant name of the chosen blocks in ``evaluation``."""

    def __init__(
        self,
        model: PreTrainedModel,
        measures: Mapping[str, Measure],
        *,
        generate: Callable[[PreTrainedModel], str] | None = None,
        chooser: BlockChooser | None = None,
        auto_update: bool = False,
        debounce_s: float = 1.0,
        first_look: Mapping[str, Measure] | None = None,
        first_look_label: str = "fewer units",
        resume: bool = False,
    ) -> None:
        """Build the panel; nothing is evaluated until ``evaluate`` or the Evaluate button.

        Args:
            model: the full model; it is restored after every evaluation.
            measures: ``{name: f(model) -> result}`` (see ``helpers.evaluation.Measure``), one table row each.
            generate: ``f(model) -> str``, a short continuation of a fixed prompt, shown for both models; None shows
                none.
            chooser: a ``BlockChooser`` whose ``selected`` blocks are evaluated; None: pass blocks to ``evaluate``.
            auto_update: re-evaluate when the chooser's selection changes, after ``debounce_s`` seconds of quiet (on
                the kernel's event loop; where none runs, at once).
            debounce_s: the quiet period of ``auto_update``, in seconds.
            first_look: measures of the same names as ``measures`` on fewer units, shown first after a click (a
                measure may be the same object as in ``measures``: it then runs once per choice); None: clicks show
                the numbers of ``measures`` only.
            first_look_label: what the first look covers, as the panel says it, e.g. "8 of 24 windows".
            resume: record the full model's block inputs and run each choice from its first removed block on (the
                same numbers, less work). Only for measures that read nothing but the model's outputs (perplexity,
                accuracy): inside, the blocks before are missing, so a size or a speed would be another model's.

        Raises:
            ValueError: if a measure name is reserved (an ``INFO_COLUMNS`` name, "parameters_removed" or
                "generation"), ``debounce_s`` is negative, ``first_look`` names other measures than ``measures``, or
                ``chooser`` covers another number of blocks than ``model`` has.
            TypeError: if ``measures`` or ``first_look`` is not a mapping, or ``resume`` is not a bool.
        """
        check_mapping("measures", measures, "{name: f(model) -> result}")
        check_bool("resume", resume)
        if first_look is not None:
            check_mapping("first_look", first_look, "{name: f(model) -> result}, the names of measures")
            if list(first_look) != list(measures):
                raise ValueError(
                    f"first_look must measure the same metrics as measures, in the same order: {list(measures)}; "
                    f"got {list(first_look)}"
                )
        reserved = {*INFO_COLUMNS, "parameters_removed", "generation"}
        if set(measures) & reserved:
            raise ValueError(f"measure names {sorted(set(measures) & reserved)} are reserved; rename them")
        if debounce_s < 0:
            raise ValueError(f"debounce_s must be >= 0 seconds, got {debounce_s}")
        self.model = model
        self.measures = dict(measures)
        self.first_look = None if first_look is None else dict(first_look)
        self.first_look_label = first_look_label
        self.resume = resume
        self._n_blocks = num_blocks(model)
        self._recordings: dict[int, BlockInputs] = {}  # id of a measure -> the full model's block inputs
        # (id of a measure, removed blocks) -> its result, for the current choice and the full model
        self._measured: dict[tuple, Any] = {}
        self._evaluations: dict[bool, VariantResults | None] = {False: None, True: None}  # by first look or not
        self._state: tuple = ()
        self._removed: list[int] = []
        self._generate = generate
        self.debounce_s = debounce_s
        self.evaluation: VariantResults | None = None
        self.results: dict[str, Any] = {}
        self.baseline: dict[str, Any] | None = None
        self._full_generation: tuple[tuple, str] | None = None  # (the model's state, its continuation)
        self.error: BaseException | None = None
        self._pending: asyncio.TimerHandle | None = None

        self.evaluate_button = widgets.Button(description="Evaluate", button_style="primary")
        self.auto_update = widgets.Checkbox(value=auto_update, description="re-evaluate when the blocks change")
        self.table = widgets.HTML()
        self.generation = widgets.HTML()
        self.status = widgets.HTML(IDLE_STATUS)
        super().__init__(
            [widgets.HBox([self.evaluate_button, self.auto_update]), self.status, self.table, self.generation]
        )
        self.evaluate_button.on_click(lambda _: self._evaluate_and_show())
        self.chooser: BlockChooser | None = None
        if chooser is not None:
            self.attach(chooser)

    def attach(self, chooser: BlockChooser) -> None:
        """Evaluate ``chooser``'s selection from now on (the Evaluate button; ``auto_update`` on its changes).

        Raises:
            ValueError: if ``chooser`` covers another number of blocks than the model has.
        """
        if chooser.n_blocks != self._n_blocks:
            raise ValueError(
                f"the chooser covers {chooser.n_blocks} blocks but the model has {self._n_blocks}: its block "
                "numbers would name other blocks. Build it from scores of this model, one per block."
            )
        self.chooser = chooser
        chooser.observe(self._on_selection, names="selected")

    @classmethod
    def for_course(
        cls,
        model: PreTrainedModel,
        tokenizer: Any,
        eval_texts: list[str],
        sms_frame: pd.DataFrame,
        *,
        seq_len: int = 128,
        max_windows: int | None = 16,
        sms_examples: int | None = 64,
        shots: int = 0,
        examples: pd.DataFrame | None = None,
        decision: Decision = "argmax",
        prompt: str = "The capital of France is",
        max_new_tokens: int = 16,
        first_look_windows: int | None = 8,
        first_look_sms: int | None = 16,
        **kwargs: Any,
    ) -> LivePanel:
        """A panel with the course's measurements: WikiText perplexity and SMS accuracy (with intervals), parameters
        removed, ideal speedup, and a greedy continuation of ``prompt``. Sizes are kept small so that one evaluation
        takes seconds; the same fixed texts are used every time, so numbers differ only because the blocks differ.

        Zero-shot "argmax" (the default) has no signal on SmolLM2-135M; the course passes ``shots=4,
        examples=load_sms("calibration"), decision="prior"``.

        Args:
            model: the full model.
            tokenizer: its tokenizer.
            eval_texts: the texts of the perplexity (``perplexity``).
            sms_frame: the labelled messages of the SMS accuracy (``sms_accuracy``).
            seq_len: perplexity window length.
            max_windows: perplexity windows (None: all).
            sms_examples: how many messages of ``sms_frame`` are scored (None: all).
            shots: solved messages in front of each SMS prompt (``sms_accuracy``).
            examples: the frame the shots (and the spam share of "prior") are drawn from.
            decision: "argmax" or "prior" (``sms_accuracy``).
            prompt: the prompt of the greedy continuation.
            max_new_tokens: the continuation's length in tokens at most.
            first_look_windows: perplexity windows of a click's first look, when fewer than ``max_windows`` (8:
                one batch, the first windows of the full measurement); None: no first look on fewer windows.
            first_look_sms: SMS messages of a click's first look, when fewer than ``sms_examples``; None: none.
            **kwargs: the options of ``LivePanel`` (``chooser``, ``auto_update``, ``debounce_s``; ``resume`` is True
                unless given: both measures read only the model's outputs).

        Returns:
            The panel; the measures' arguments are checked when it first evaluates.

        Raises:
            ValueError: as ``LivePanel`` (a negative ``debounce_s``).
        """
        # Lazy: the chooser and a panel with custom measures need none of these modules.
        from .classification import sms_accuracy
        from .perplexity import perplexity

        def wiki_perplexity(windows: int | None) -> Measure:
            return lambda m: perplexity(m, tokenizer, eval_texts, seq_len=seq_len, max_windows=windows, progress=False)

        def accuracy(messages: int | None) -> Measure:
            return lambda m: sms_accuracy(
                m,
                tokenizer,
                sms_frame,
                shots=shots,
                examples=examples,
                max_examples=messages,
                decision=decision,
                progress=False,
            )

        measures = {"perplexity": wiki_perplexity(max_windows), "SMS accuracy": accuracy(sms_examples)}
        first_look, covered = dict(measures), []
        for metric, argument, few, full, units, measure in (
            ("perplexity", "first_look_windows", first_look_windows, max_windows, "windows", wiki_perplexity),
            ("SMS accuracy", "first_look_sms", first_look_sms, sms_examples, "messages", accuracy),
        ):
            check_int(argument, few, none_means="no first look")
            if few is not None and (full is None or few < full):
                first_look[metric] = measure(few)
                covered.append(f"{few} of {full if full is not None else 'all'} {units}")
        return cls(
            model,
            measures,
            generate=lambda m: greedy_continuation(m, tokenizer, prompt, max_new_tokens),
            first_look=first_look if covered else None,
            first_look_label=" and ".join(covered),
            **{"resume": True, **kwargs},
        )

    def evaluate(self, blocks: Iterable[int] | None = None, *, first_look: bool = False) -> dict[str, Any]:
        """Measure the model with ``blocks`` skipped; show and return the numbers.

        The full model is measured at the first call and kept while its weights stay the same. What a measure or
        ``generate`` raises propagates; the model is restored either way (``skip_blocks``).

        Args:
            blocks: the blocks to skip; None: the chooser's selection, else none. Empty: the full model against
                itself (no change).
            first_look: measure with the ``first_look`` measures instead (fewer units), without the continuation;
                the table says so. Ignored by a panel without them.

        Returns:
            ``{name: value}`` for the chosen blocks: ``removed``, ``blocks_left``, ``parameters``,
            ``parameters_removed``, ``params_removed_pct``, ``ideal_speedup``, each metric's point value and, with
            ``generate``, ``generation``.

        Raises:
            ValueError: for invalid ``blocks`` (``check_block_indices``; empty is allowed).
            TypeError: for ``blocks`` that are not integers or a string (``check_block_indices``); if a measure
                returns something that is not a result, a number or a mapping of numbers.
        """
        if blocks is None:
            blocks = self.chooser.selected if self.chooser is not None else []
        removed = check_block_indices(blocks, num_blocks(self.model), allow_empty=True)
        first_look = first_look and self.first_look is not None
        self.evaluation = self._measure({self.CHOSEN: removed}, first_look)
        self.baseline, self.results = self._numbers(FULL), self._numbers(self.CHOSEN)
        if first_look:
            self.generation.value = ""  # the last continuation is another choice's
        elif self._generate is not None:
            self.baseline["generation"] = self._full_continuation()
            with skip_blocks(self.model, removed) as model:
                self.results["generation"] = self._generate(model)
        self._show(first_look)
        return self.results

    def prepare(self) -> None:
        """Measure the full model now (its numbers, block inputs and continuation, for the first look and the full
        settings), with a progress bar, so that a click then measures only its choice.

        Call it in the cell that shows the panel (``block_explorer`` does): the wait is then the cell's, not the
        first click's. Nothing is measured again while the model's weights stay the same.
        """
        stages = [True, False] if self.first_look is not None else [False]
        for first_look in progress_bar(stages, "measuring the full model (first look, then full settings)"):
            self._measure({}, first_look)
        if self._generate is not None:
            self._full_continuation()
        self.status.value = "<small>Full model measured. Choose blocks, then press Evaluate.</small>"

    def _measure(self, variants: Mapping[str, list[int]], first_look: bool) -> VariantResults:
        """``variants`` (at most one: the choice) beside the full model, on the first look or the full settings;
        what was measured for the full model and for the current choice is reused while the weights stay."""
        removed = next(iter(variants.values()), [])
        state = _model_state(self.model)
        kept = {(), tuple(removed)} if state == self._state else set()
        self._measured = {key: result for key, result in self._measured.items() if key[1] in kept}
        self._state, self._removed = state, removed
        measures = self.first_look if first_look else self.measures
        self._evaluations[first_look] = evaluate_variants(
            self.model,
            variants,
            {name: self._resumable(measure) for name, measure in measures.items()},
            reuse=self._evaluations[first_look],
            progress=False,
        )
        return self._evaluations[first_look]

    def _full_continuation(self) -> str:
        """The full model's continuation, generated again only when its weights changed."""
        state = _model_state(self.model)
        if self._full_generation is None or self._full_generation[0] != state:
            self._full_generation = state, self._generate(self.model)
        return self._full_generation[1]

    def _resumable(self, measure: Measure) -> Measure:
        """``measure`` as the panel runs it: on the full model it records the block inputs (``BlockInputs``), on a
        choice it resumes from them; a measure shared by the first look and the full settings runs once per choice.
        """

        def run(model: PreTrainedModel) -> Any:
            key = (id(measure), tuple(self._removed) if num_blocks(model) < self._n_blocks else ())
            if key in self._measured:
                return self._measured[key]
            if self.resume and not key[1]:  # the full model
                recording = self._recordings[id(measure)] = BlockInputs(model)
                with recording.record(model):
                    result = measure(model)
            elif self.resume and id(measure) in self._recordings:
                try:
                    with self._recordings[id(measure)].resume(model, self._removed[0]) as shallow:
                        result = measure(shallow)
                except MissingRecording:  # the measure ran other inputs than on the full model: run every block
                    result = measure(model)
            else:
                result = measure(model)
            self._measured[key] = result
            return result

        return run

    def _numbers(self, variant: str) -> dict[str, Any]:
        """The point values of ``variant``: its info row and each metric's estimate."""
        info = self.evaluation.info.loc[variant]
        numbers: dict[str, Any] = {
            "removed": list(info["removed"]),
            "blocks_left": int(info["blocks_left"]),
            "parameters": int(info["parameters"]),
            "parameters_removed": int(self.evaluation.info.loc[FULL, "parameters"]) - int(info["parameters"]),
            "params_removed_pct": float(info["params_removed_pct"]),
            "ideal_speedup": float(info["ideal_speedup"]),
        }
        return numbers | {
            metric: self.evaluation.interval(variant, metric).estimate for metric in self.evaluation.metrics
        }

    def _evaluate_and_show(self) -> None:
        """Button and auto-update handler: a first look if the panel has one, then the full settings; shows that it
        is working meanwhile, and any error in the panel instead of losing it."""
        self.evaluate_button.disabled = True
        try:
            if self.first_look is not None:
                self.status.value = _working_html(f"first look on {self.first_look_label}")
                self.evaluate(first_look=True)
                self.status.value = _working_html(
                    f"first look on {self.first_look_label} shown; refining on the full settings"
                )
            else:
                self.status.value = _working_html("evaluating")
            self.evaluate()
        except Exception as error:  # noqa: BLE001 - a callback's exception would otherwise only reach the log
            self.error = error
            self.results = {"error": f"{type(error).__name__}: {error}"}
            self.status.value = _error_html(error)
            self.table.value = self.generation.value = ""  # old numbers must not pass for the new blocks'
        else:
            self.error = None
            self.status.value = ""
        finally:
            self.evaluate_button.disabled = False

    def _on_selection(self, _: dict[str, Any]) -> None:
        if not self.auto_update.value:
            return
        if self._pending is not None:
            self._pending.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # plain Python or a test: no loop to wait on, so evaluate now
            self._evaluate_and_show()
            return
        self._pending = loop.call_later(self.debounce_s, self._evaluate_and_show)

    def _rows(self) -> list[tuple[str, str, str, str]]:
        """(label, full model, blocks skipped, change vs the full model) for each shown number."""
        evaluation, chosen = self.evaluation, self.results
        rows = [
            ("blocks removed", "0", f"{len(chosen['removed'])} {chosen['removed']}", ""),
            ("blocks left", f"{self.baseline['blocks_left']}", f"{chosen['blocks_left']}", ""),
        ]
        rows += [
            (
                metric,
                evaluation.formatted(FULL, metric),
                evaluation.formatted(self.CHOSEN, metric),
                evaluation.formatted_difference(FULL, self.CHOSEN, metric),
            )
            for metric in evaluation.metrics
        ]
        rows += [
            (
                "parameters",
                f"{self.baseline['parameters']:,}",
                f"{chosen['parameters']:,}",
                f"-{chosen['parameters_removed']:,} ({fmt(chosen['params_removed_pct'], decimals=1)}%)",
            ),
            ("ideal speedup", "1x", f"{fmt(chosen['ideal_speedup'])}x", ""),
        ]
        return rows

    def _show(self, first_look: bool) -> None:
        header = "<th></th><th>full model</th><th>blocks skipped</th><th>change (95% CI)</th>"
        stage = "first look" if first_look else "final"
        note = (
            f"<b>First look on {html.escape(self.first_look_label)}</b>, then refined to the full settings. "
            if first_look
            else ""
        )
        units = {metric: self.evaluation.interval(self.CHOSEN, metric).units for metric in self.evaluation.metrics}
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}"
            + (f" <small>(n={units[label]})</small>" if units.get(label) else "")
            + f"</th><td>{html.escape(full)}</td>"
            f"<td data-name='{html.escape(label)}'>{html.escape(value)}</td><td>{html.escape(change)}</td>"
            "</tr>"
            for label, full, value, change in self._rows()
        )
        self.table.value = (
            f"<table class='live-panel-results' data-stage='{stage}'><tr>{header}</tr>{body}</table>"
            f"<small>{note}n: the windows or messages each number rests on. Intervals: 95% bootstrap over them; the "
            f"change is paired, and a verdict is only given beyond noise, on at least {MIN_UNITS} windows or "
            "messages.</small>"
        )
        if "generation" in self.results:
            self.generation.value = (
                f"<b>greedy continuation</b> (full model / blocks skipped):<pre>"
                f"{html.escape(self.baseline['generation'])}\n"
                f"{html.escape(self.results['generation'])}</pre>"
            )


def block_explorer(
    model: PreTrainedModel,
    tokenizer: Any,
    scores: Scores,
    eval_texts: list[str] | None = None,
    sms_frame: pd.DataFrame | None = None,
    *,
    panel: LivePanel | None = None,
    higher_is_important: bool | Mapping[str, bool] = True,
    protect_first: int = 0,
    protect_last: int = 0,
    k: int = 1,
    auto_update: bool = False,
    **panel_kwargs: Any,
) -> widgets.VBox:
    """A ``BlockChooser`` over ``scores`` wired to a live panel: ``VBox([chooser, panel])``.

    The panel measures the full model here, with a progress bar (``LivePanel.prepare``), so that the first click
    measures only its choice.

    Args:
        model: the full model.
        tokenizer: its tokenizer.
        scores: the chooser's scores (see ``BlockChooser``).
        eval_texts: the texts of the perplexity (``LivePanel.for_course``); not with ``panel``.
        sms_frame: the labelled messages of the SMS accuracy; not with ``panel``.
        panel: a panel built before (``LivePanel.for_course``) without a chooser: what it measured is reused; None
            builds one from ``eval_texts``, ``sms_frame`` and ``panel_kwargs``.
        higher_is_important: as for ``BlockChooser``.
        protect_first: the chooser's initial "keep first".
        protect_last: the chooser's initial "keep last".
        k: the chooser's initial k.
        auto_update: re-evaluate whenever the selection changes.
        **panel_kwargs: options of ``LivePanel.for_course``, e.g. the SMS options ``shots``, ``examples``,
            ``decision``; not with ``panel``.

    Returns:
        ``VBox([chooser, panel])``.

    Raises:
        ValueError: as ``BlockChooser`` (malformed ``scores``) or ``LivePanel`` (a negative ``debounce_s``, or
            ``scores`` of another number of blocks than ``model`` has); if ``panel`` comes with texts or options,
            belongs to another model or has a chooser already, or neither ``panel`` nor both texts are given.
        TypeError: as ``BlockChooser`` (``higher_is_important`` not a bool).
    """
    chooser = BlockChooser(
        scores, higher_is_important=higher_is_important, protect_first=protect_first, protect_last=protect_last, k=k
    )
    if panel is None:
        if eval_texts is None or sms_frame is None:
            raise ValueError("give the perplexity's texts and the SMS frame (eval_texts, sms_frame), or a panel")
        panel = LivePanel.for_course(
            model, tokenizer, eval_texts, sms_frame, chooser=chooser, auto_update=auto_update, **panel_kwargs
        )
    else:
        if eval_texts is not None or sms_frame is not None or panel_kwargs:
            raise ValueError(
                "a panel comes with its own texts and options: give either panel or eval_texts, "
                f"sms_frame and the panel's options, not both (got {sorted(panel_kwargs)} too)"
            )
        if panel.model is not model or panel.chooser is not None:
            raise ValueError("the panel must be one built for this model without a chooser (LivePanel.for_course)")
        panel.attach(chooser)
        panel.auto_update.value = auto_update
    panel.prepare()
    return widgets.VBox([chooser, panel])
