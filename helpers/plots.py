"""Figures for the course: per-block profiles and heatmaps, depth similarity, angular distance, before/after bars.

Every function takes data (pandas objects indexed by block, as the toolkit returns them), draws on a new figure of
fixed size or on the ``ax`` given, and returns the Figure. Titles and axis labels are always set. Colours come from
colour-blind-friendly choices (seaborn's "colorblind" palette, the viridis colormap), and the few style settings are
applied inside ``plt.rc_context`` so that importing or calling this module never changes a learner's global style.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal, get_args

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator, MultipleLocator

from .checks import check_choice
from .ties import tied_ranks

if TYPE_CHECKING:  # for the hints only: the evaluation core draws with this module, never the reverse
    from .evaluation import VariantResults

PALETTE: list[str] = sns.color_palette("colorblind").as_hex()
"""Line and bar colours, distinguishable with the common colour-vision deficiencies."""
CMAP = "viridis"
"""Sequential colormap for heatmaps: perceptually uniform, readable in greyscale and by colour-blind readers."""
Normalisation = Literal["rank", "minmax"]
NORMALISATIONS: tuple[Normalisation, ...] = get_args(Normalisation)
"""Per-column rescalings offered to put criteria of different scales on one axis."""

_STYLE = {"axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "bold"}
_HIGHLIGHT_COLOUR = "#949494"  # the palette's grey (PALETTE[7])
_PROTECTED_ALPHA = 0.15  # protected blocks are shaded more lightly than the highlighted ones (0.3)
_REMOVED_COLOUR = PALETTE[3]  # vermillion: frames removed cells, visible on every viridis colour
SELECTION_COLOURS = {"kept": "#e8e8e8", "removed": "#303030"}
"""The two colours of ``plot_removed_blocks``: kept blocks light, removed blocks dark."""
# Annotating cells is readable up to about this many blocks x rows at the default figure sizes.
_ANNOTATE_MAX = (16, 10)
_TICK_EVERY_BLOCK = 40


def _styled(function: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw inside a local rc context: the course style applies to this figure only."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with plt.rc_context(_STYLE):
            return function(*args, **kwargs)

    return wrapper


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        return plt.subplots(figsize=figsize)
    if not isinstance(ax, Axes):
        raise ValueError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.figure, ax


def _numeric_frame(data: pd.DataFrame | pd.Series, name: str) -> pd.DataFrame:
    """``data`` as a float DataFrame (a Series becomes one column), or ValueError when empty or not numeric."""
    if isinstance(data, pd.Series):
        data = data.to_frame(name=data.name if data.name is not None else "value")
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame or Series, got {type(data).__name__}")
    if data.empty:
        raise ValueError(f"{name} is empty; it needs at least one row and one column")
    try:
        data = data.astype(float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must hold numbers only (NaN allowed for missing values): {error}") from None
    if data.isna().all().all():
        raise ValueError(f"{name} holds only NaN; there is nothing to draw")
    return data


def _check_block_index(index: pd.Index, name: str) -> None:
    if not pd.api.types.is_integer_dtype(index):
        raise ValueError(f"{name} must be indexed by integer block indices, got an index of dtype {index.dtype}")


def _known_blocks(blocks: Iterable[int], index: pd.Index, name: str) -> list[int]:
    """``blocks`` sorted and deduplicated, or ValueError naming those that are not in the plotted ``index``."""
    blocks = sorted(set(blocks))
    unknown = [b for b in blocks if b not in index]
    if unknown:
        raise ValueError(f"{name} blocks {unknown} are not in the plotted blocks {list(index)}")
    return blocks


def normalise(frame: pd.DataFrame, how: Normalisation | None) -> pd.DataFrame:
    """Rescale each column so that criteria with different units can share an axis (NaN stays NaN).

    Args:
        frame: numeric columns to rescale, each on its own.
        how: ``"rank"``: 1 = lowest value of the column (near-ties, ``ties.tied_ranks``, share the average rank);
            ``"minmax"``: 0 = lowest, 1 = highest, a constant column becomes 0.5; None: no rescaling.

    Returns:
        A frame with ``frame``'s index and columns (``frame`` itself when ``how`` is None).

    Raises:
        TypeError: if ``how`` is neither a string nor None.
        ValueError: if ``how`` is not one of ``NORMALISATIONS``.
    """
    check_choice("normalise", how, NORMALISATIONS, none_means="no rescaling")
    if how is None:
        return frame
    if how == "rank":
        return frame.apply(lambda column: tied_ranks(column.dropna()).reindex(column.index))
    span = frame.max() - frame.min()  # "minmax"
    scaled = (frame - frame.min()) / span.where(span != 0)
    for column in frame.columns[span == 0]:
        scaled[column] = frame[column].where(frame[column].isna(), 0.5)
    return scaled


_NORMALISED_LABEL = {None: "{}", "rank": "{} (rank, 1 = lowest)", "minmax": "{} (min-max scaled)"}


@_styled
def plot_block_profiles(
    profiles: pd.DataFrame | pd.Series,
    *,
    title: str,
    ylabel: str,
    ax: Axes | None = None,
    highlight: Iterable[int] | None = None,
    highlight_label: str = "selected blocks",
    normalise_by: Normalisation | None = None,
    logy: bool = False,
    protected: Iterable[int] | None = None,
    xlabel: str = "block",
    figsize: tuple[float, float] = (9.0, 4.0),
) -> Figure:
    """One line per column (criterion or dataset) over the block index, optionally shading ``highlight`` blocks.

    ``profiles`` is indexed by block; ``normalise_by`` ("rank" or "minmax", per column) makes criteria of different
    scales comparable, and says so in the y label. NaN values are drawn as gaps, never as zeros.

    Args:
        profiles: scores indexed by block, one column per line (a Series draws one line).
        title: the axes' title.
        ylabel: what the scores are; the y label adds the normalisation and the log scale when used.
        ax: the Axes to draw on; None draws on a new figure of ``figsize``.
        highlight: blocks to shade (e.g. the selected ones), with the legend entry ``highlight_label``.
        highlight_label: the legend entry of the highlighted blocks.
        normalise_by: None, "rank" or "minmax" (see ``normalise``).
        logy: a logarithmic y axis, for scores spanning orders of magnitude (a perplexity without block 0).
        protected: blocks no selection may remove (e.g. the "+" heuristic's edges), shaded more lightly than
            ``highlight``, with the legend entry "protected blocks".
        xlabel: the x label.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for profiles that are not a DataFrame or Series, empty, not numeric, all NaN or not indexed by
            integer blocks; an unknown ``normalise_by``; ``highlight`` or ``protected`` blocks that are not in the
            index; ``logy`` with a value at or below 0; an ``ax`` that is not an Axes.
        TypeError: if ``normalise_by`` is neither a string nor None.
    """
    frame = _numeric_frame(profiles, "profiles")
    _check_block_index(frame.index, "profiles")
    frame = normalise(frame.sort_index(), normalise_by)
    highlight = _known_blocks(highlight, frame.index, "highlight") if highlight is not None else []
    protected = _known_blocks(protected, frame.index, "protected") if protected is not None else []
    if logy and (frame <= 0).any().any():
        lowest = frame.min().idxmin()
        raise ValueError(
            f"logy needs positive values (a log axis cannot show 0 or below); column {lowest!r} goes "
            f"down to {frame[lowest].min()}"
        )

    fig, ax = _figure_and_axes(ax, figsize)
    for i, block in enumerate(protected):
        ax.axvspan(
            block - 0.5,
            block + 0.5,
            color=_HIGHLIGHT_COLOUR,
            alpha=_PROTECTED_ALPHA,
            lw=0,
            label="protected blocks" if i == 0 else None,
        )
    for i, block in enumerate(highlight):
        ax.axvspan(
            block - 0.5,
            block + 0.5,
            color=_HIGHLIGHT_COLOUR,
            alpha=0.3,
            lw=0,
            label=highlight_label if i == 0 else None,
        )
    for i, column in enumerate(frame.columns):
        ax.plot(
            frame.index, frame[column], marker="o", markersize=4, color=PALETTE[i % len(PALETTE)], label=str(column)
        )
    # A tick per block while they fit, so that a learner can read off which block a point belongs to.
    ax.xaxis.set_major_locator(MultipleLocator(1) if len(frame) <= _TICK_EVERY_BLOCK else MaxNLocator(integer=True))
    ax.tick_params(axis="x", labelsize="small")
    ax.set_xlim(frame.index.min() - 0.5, frame.index.max() + 0.5)
    if logy:
        ax.set_yscale("log")
    ylabel = _NORMALISED_LABEL[normalise_by].format(ylabel) + (" (log scale)" if logy else "")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(frame.columns) > 1 or highlight or protected:
        ax.legend(fontsize="small")
    return fig


def _heatmap(
    ax: Axes,
    data: pd.DataFrame,
    *,
    cmap: str,
    cbar_label: str,
    annotate: bool = False,
    fmt: str = ".2g",
    square: bool = False,
    **kwargs: Any,
) -> None:
    """Seaborn heatmap with NaN cells masked (left blank) and a labelled colorbar."""
    sns.heatmap(
        data,
        ax=ax,
        cmap=cmap,
        mask=data.isna(),
        annot=annotate,
        fmt=fmt,
        square=square,
        annot_kws={"fontsize": "x-small"},
        cbar_kws={"label": cbar_label},
        **kwargs,
    )


@_styled
def plot_block_heatmap(
    frame: pd.DataFrame,
    *,
    title: str,
    cbar_label: str,
    ax: Axes | None = None,
    normalise_by: Normalisation | None = None,
    annotate: bool | None = None,
    fmt: str = ".2g",
    xlabel: str = "block",
    ylabel: str = "",
    cmap: str = CMAP,
    protected: Iterable[int] | None = None,
    removed: Mapping[Hashable, Iterable[int]] | None = None,
    figsize: tuple[float, float] = (10.0, 3.5),
) -> Figure:
    """Blocks (the frame's index) along x against datasets or criteria (its columns) along y.

    ``normalise_by`` rescales each column (see ``normalise``) so that one colour scale fits all rows; cells are
    annotated with their value when the table is small (``annotate=None``) or when asked. NaN cells stay blank.

    Args:
        frame: scores indexed by block, one column per row of the heatmap.
        title: the axes' title.
        cbar_label: what the colour shows; the colorbar label adds the normalisation when used.
        ax: the Axes to draw on; None draws on a new figure of ``figsize``.
        normalise_by: None, "rank" or "minmax" (see ``normalise``).
        annotate: write each cell's value; None does so when the table is small.
        fmt: the format of the annotations.
        xlabel: the x label.
        ylabel: the y label; empty takes the name of the frame's columns.
        cmap: the colormap.
        protected: blocks no selection may remove (e.g. the "+" heuristic's edges); a dashed white line separates
            them from the other blocks.
        removed: ``{column of frame: blocks}``, the blocks each row's selection removes, framed, with the legend
            entry "removed" (above the heatmap, on the right).
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for a frame that is not a DataFrame or Series, empty, not numeric, all NaN or not indexed by
            integer blocks; an unknown ``normalise_by``; ``protected`` or ``removed`` blocks that are not in the
            index; ``removed`` rows that are not columns of the frame; an ``ax`` that is not an Axes.
        TypeError: if ``normalise_by`` is neither a string nor None.
    """
    data = _numeric_frame(frame, "frame")
    _check_block_index(data.index, "frame")
    data = normalise(data.sort_index(), normalise_by)
    if annotate is None:
        annotate = data.shape[0] <= _ANNOTATE_MAX[0] and data.shape[1] <= _ANNOTATE_MAX[1]
    protected = set(_known_blocks(protected, data.index, "protected")) if protected is not None else set()
    removed = dict(removed) if removed is not None else {}
    unknown_rows = [row for row in removed if row not in data.columns]
    if unknown_rows:
        raise ValueError(f"removed names rows {unknown_rows} that are not columns of the frame {list(data.columns)}")
    removed = {row: _known_blocks(blocks, data.index, f"removed[{row!r}]") for row, blocks in removed.items()}

    fig, ax = _figure_and_axes(ax, figsize)
    _heatmap(
        ax,
        data.T,
        cmap=cmap,
        cbar_label=_NORMALISED_LABEL[normalise_by].format(cbar_label),
        annotate=annotate,
        fmt=fmt,
        yticklabels=True,
    )
    # Seaborn draws the cell of (row r, block position j) over [j, j + 1] x [r, r + 1].
    blocks = list(data.index)
    for j in range(1, len(blocks)):
        if (blocks[j - 1] in protected) != (blocks[j] in protected):
            ax.axvline(j, color="white", ls="--", lw=1.2)
    framed = [(row, block) for row, row_blocks in removed.items() for block in row_blocks]
    for i, (row, block) in enumerate(framed):
        ax.add_patch(
            Rectangle(
                (data.index.get_loc(block), data.columns.get_loc(row)),
                1,
                1,
                fill=False,
                edgecolor=_REMOVED_COLOUR,
                lw=1.5,
                label="removed" if i == 0 else None,
            )
        )
    if framed:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel or data.columns.name or "")
    return fig


@_styled
def plot_removed_blocks(
    selections: Mapping[str, Iterable[int]],
    n_blocks: int,
    *,
    title: str,
    ax: Axes | None = None,
    xlabel: str = "block",
    ylabel: str = "variant",
    figsize: tuple[float, float] = (10.0, 3.5),
) -> Figure:
    """Which blocks each selection removes: one row per selection, removed blocks dark, kept blocks light.

    A binary map, so two colours with a two-entry legend (``SELECTION_COLOURS``) instead of a colour bar.

    Args:
        selections: ``{name: blocks removed}``, one row each, in order.
        n_blocks: the model's depth; blocks 0..n_blocks-1 run along x.
        title: the axes' title.
        ax: the Axes to draw on; None draws on a new figure of ``figsize``.
        xlabel: the x label.
        ylabel: the y label.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for no selections, ``n_blocks`` below 1, blocks outside 0..n_blocks-1, or an ``ax`` that is not
            an Axes.
    """
    if not selections:
        raise ValueError("selections is empty; give at least one {name: blocks removed}")
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1, got {n_blocks}")
    index = pd.RangeIndex(n_blocks, name="block")
    removed = {name: _known_blocks(blocks, index, f"selections[{name!r}]") for name, blocks in selections.items()}
    data = pd.DataFrame({name: index.isin(blocks).astype(float) for name, blocks in removed.items()}, index=index)
    fig, ax = _figure_and_axes(ax, figsize)
    colours = ListedColormap([SELECTION_COLOURS["kept"], SELECTION_COLOURS["removed"]])
    sns.heatmap(data.T, ax=ax, cmap=colours, vmin=0, vmax=1, cbar=False, linewidths=0.5, linecolor="white")
    handles = [
        Patch(facecolor=SELECTION_COLOURS[state], edgecolor="#888888", label=state) for state in ("removed", "kept")
    ]
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize="small", frameon=False)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


@_styled
def plot_depth_similarity(
    matrix: pd.DataFrame,
    *,
    title: str = "Similarity of hidden states across depth",
    cbar_label: str = "cosine similarity",
    ax: Axes | None = None,
    label: str = "hidden state after block (0 = embeddings)",
    cmap: str = CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    figsize: tuple[float, float] = (7.0, 6.0),
) -> Figure:
    """The square (L+1)x(L+1) matrix of similarities between the hidden states at every pair of depths.

    Args:
        matrix: the similarities, one row and one column per depth (``SimilarityReport.depth_similarity``).
        title: the axes' title.
        cbar_label: what the colour shows.
        ax: the Axes to draw on; None draws on a new figure of ``figsize``.
        label: the label of both axes.
        cmap: the colormap.
        vmin: the value at the bottom of the colour scale; None: the lowest value.
        vmax: the value at the top of the colour scale; None: the highest value.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for a matrix that is not a DataFrame (or Series), is empty, not numeric, all NaN or not square;
            an ``ax`` that is not an Axes.
    """
    data = _numeric_frame(matrix, "matrix")
    if data.shape[0] != data.shape[1]:
        raise ValueError(f"matrix must be square (one row and one column per depth), got shape {data.shape}")
    fig, ax = _figure_and_axes(ax, figsize)
    _heatmap(ax, data, cmap=cmap, cbar_label=cbar_label, square=True, vmin=vmin, vmax=vmax)
    ax.set(title=title, xlabel=label, ylabel=label)
    return fig


@_styled
def plot_angular_distance(
    distance: pd.DataFrame,
    best_start: pd.Series | None = None,
    *,
    title: str = "Angular distance between layer ℓ and layer ℓ + n",
    cbar_label: str = "angular distance (0 = same direction)",
    ax: Axes | None = None,
    xlabel: str = "n (blocks removed)",
    ylabel: str = "ℓ (first block removed)",
    cmap: str = CMAP,
    figsize: tuple[float, float] = (8.0, 6.5),
) -> Figure:
    """Heatmap of d(x^ℓ, x^(ℓ+n)), ℓ as rows and n as columns; ``best_start`` (ℓ per n) is marked with a dot.

    Cells where ℓ + n exceeds the depth are NaN in the data and left blank here.

    Args:
        distance: the angular distances, indexed by ℓ with one column per n (``SimilarityReport.angular_distance``).
        best_start: ℓ for each n (``SimilarityReport.best_start``), marked with a dot; None marks nothing.
        title: the axes' title.
        cbar_label: what the colour shows.
        ax: the Axes to draw on; None draws on a new figure of ``figsize``.
        xlabel: the x label.
        ylabel: the y label.
        cmap: the colormap.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for distances that are not a DataFrame (or Series), are empty, not numeric or all NaN; a
            ``best_start`` whose n is not a column of ``distance`` or whose ℓ is not in its index; an ``ax`` that is
            not an Axes.
    """
    data = _numeric_frame(distance, "distance")
    fig, ax = _figure_and_axes(ax, figsize)
    _heatmap(ax, data, cmap=cmap, cbar_label=cbar_label)
    if best_start is not None:
        best = best_start.dropna()
        missing_n = [n for n in best.index if n not in data.columns]
        missing_l = [v for v in best.to_numpy() if v not in data.index]
        if missing_n or missing_l:
            raise ValueError(
                f"best_start must map n (columns of distance) to ℓ (its index); unknown n {missing_n}, "
                f"unknown ℓ {missing_l}"
            )
        # Seaborn puts the centre of cell (row r, column c) at (c + 0.5, r + 0.5).
        x = [data.columns.get_loc(n) + 0.5 for n in best.index]
        y = [data.index.get_loc(start) + 0.5 for start in best.to_numpy()]
        ax.scatter(
            x, y, s=30, facecolors="white", edgecolors="black", linewidths=0.8, zorder=3, label="best ℓ for each n"
        )
        ax.legend(loc="upper right", fontsize="small")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


@_styled
def plot_token_heatmap(
    tokens_by_blocks: pd.DataFrame,
    *,
    title: str,
    cbar_label: str,
    ax: Axes | None = None,
    xlabel: str = "block",
    ylabel: str = "token",
    cmap: str = CMAP,
    figsize: tuple[float, float] = (9.0, 7.0),
) -> Figure:
    """Tokens of one sample (rows, the token strings label the y axis) against blocks (columns).

    Args:
        tokens_by_blocks: one row per token (the index gives the labels; unprintable characters are escaped), one
            column per block (``SimilarityReport.token_cosine``).
        title: the axes' title.
        cbar_label: what the colour shows.
        ax: the Axes to draw on; None draws on a new figure of ``figsize``.
        xlabel: the x label.
        ylabel: the y label.
        cmap: the colormap.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for a frame that is not a DataFrame (or Series), is empty, not numeric or all NaN; an ``ax``
            that is not an Axes.
    """
    data = _numeric_frame(tokens_by_blocks, "tokens_by_blocks")
    # Newlines and tabs inside a token would break the tick labels: escape unprintable characters, keep the rest.
    labels = [
        "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(t))
        for t in data.index
    ]
    fig, ax = _figure_and_axes(ax, figsize)
    _heatmap(ax, data, cmap=cmap, cbar_label=cbar_label, yticklabels=labels)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def _long_values(values: VariantResults | pd.DataFrame | Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Bring ``plot_before_after`` input to columns metric, variant, value, low, high (low/high may be NaN)."""
    if callable(getattr(type(values), "long", None)):  # a VariantResults: its tidy view
        values = values.long()
    if isinstance(values, Mapping):
        values = pd.DataFrame(values).rename_axis(index="metric", columns="variant").stack().rename("value")
        values = values.reset_index()
    if not isinstance(values, pd.DataFrame) or values.empty:
        raise ValueError(
            "values must be a non-empty DataFrame with columns metric, variant, value (and optionally "
            "low, high), or a dict {variant: {metric: value}}"
        )
    missing = {"metric", "variant", "value"} - set(values.columns)
    if missing:
        raise ValueError(
            f"values lacks the columns {sorted(missing)}; needed: metric, variant, value "
            f"(optional: low, high), got {list(values.columns)}"
        )
    if values.duplicated(["metric", "variant"]).any():
        raise ValueError("values has more than one row for some (metric, variant) pair; give each pair once")
    long = values.reindex(columns=["metric", "variant", "value", "low", "high"])
    try:
        long[["value", "low", "high"]] = long[["value", "low", "high"]].astype(float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"value, low and high must be numbers: {error}") from None
    outside = (long["low"] > long["value"]) | (long["high"] < long["value"])
    if outside.any():
        raise ValueError(f"each interval must contain its value (low <= value <= high); not so for\n{long[outside]}")
    return long


@_styled
def plot_before_after(
    values: VariantResults | pd.DataFrame | Mapping[str, Mapping[str, float]],
    *,
    title: str,
    ax: Axes | Sequence[Axes] | None = None,
    xlabel: str = "model",
    value_format: str = "{:.3g}",
    reference: Mapping[str, float] | None = None,
    reference_label: str | None = None,
    xtick_rotation: float = 0.0,
    logy: Collection[str] = (),
    panel_size: tuple[float, float] = (3.2, 3.6),
) -> Figure:
    """One small bar panel per metric (units differ: parameters, ms, tokens/s...), one bar per variant.

    ``values``: a ``VariantResults`` (its ``long`` view), a tidy frame with columns ``metric``, ``variant``, ``value``
    and optionally ``low``/``high`` (a confidence interval, drawn as error bars), or a dict
    ``{variant: {metric: value}}``. Each bar carries its value.
    ``ax``: one Axes per metric (a single Axes when there is one metric), else a new row of panels.

    Args:
        values: the bars, as above.
        title: the figure's title (on given axes: the start of each panel's title).
        ax: as above; None draws a new row of panels of ``panel_size`` each.
        xlabel: the x label of every panel.
        value_format: the format of the value written on each bar.
        reference: ``{metric: value}``, a dashed grey line across that metric's panel, for a level every bar is
            read against (e.g. the majority-class accuracy).
        reference_label: the reference lines' legend entry; None draws no legend.
        xtick_rotation: degrees to turn the variant names by, when they are long or many.
        logy: metrics drawn on a log axis (perplexities that span orders of magnitude).
        panel_size: the size of each new panel.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for malformed ``values`` (see ``_long_values``); an ``ax`` that does not hold one Axes per
            metric; a ``reference`` or ``logy`` metric that is not among the values, or a reference that is not a
            finite number; a ``reference_label`` without a ``reference``.
    """
    long = _long_values(values)
    metrics = list(dict.fromkeys(long["metric"]))
    if isinstance(logy, str) or not set(logy) <= set(metrics):
        raise ValueError(f"logy must be a collection of metrics among {metrics}; got {logy!r}")
    variants = list(dict.fromkeys(long["variant"]))
    reference = dict(reference) if reference is not None else {}
    unknown = [metric for metric in reference if metric not in metrics]
    if unknown:
        raise ValueError(f"reference names metrics {unknown} that are not among the values' metrics {metrics}")
    if not all(isinstance(level, Real) and np.isfinite(level) for level in reference.values()):
        raise ValueError(f"each reference must be a finite number; got {reference}")
    if reference_label is not None and not reference:
        raise ValueError("reference_label labels the reference lines, but no reference is given")
    if ax is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(panel_size[0] * len(metrics), panel_size[1]), squeeze=False)
        axes = list(axes[0])
        fig.suptitle(title, fontweight="bold")
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != len(metrics) or not all(isinstance(a, Axes) for a in axes):
            raise ValueError(f"ax must hold one Axes per metric ({len(metrics)}: {metrics}), got {len(axes)}")
        fig = axes[0].figure
    colours = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}
    for axis, metric in zip(axes, metrics):
        rows = long[long["metric"] == metric].set_index("variant")
        rows = rows.loc[[v for v in variants if v in rows.index]]
        error = np.vstack([rows["value"] - rows["low"], rows["high"] - rows["value"]])
        has_error = not np.isnan(error).all()
        bars = axis.bar(
            [str(v) for v in rows.index],
            rows["value"],
            color=[colours[v] for v in rows.index],
            yerr=np.nan_to_num(error) if has_error else None,
            capsize=4 if has_error else 0,
        )
        axis.bar_label(bars, labels=[value_format.format(v) for v in rows["value"]], fontsize="small", padding=2)
        if metric in reference:
            axis.axhline(reference[metric], color=_HIGHLIGHT_COLOUR, ls="--", lw=1, label=reference_label)
            if reference_label is not None:
                axis.legend(fontsize="small")
        if xtick_rotation:  # turned names end under their bar
            plt.setp(axis.get_xticklabels(), rotation=xtick_rotation, ha="right", rotation_mode="anchor")
        if metric in logy:
            axis.set_yscale("log")
        axis.margins(y=0.15)
        axis.set(title=str(metric) if ax is None else f"{title}: {metric}", xlabel=xlabel, ylabel=str(metric))
    fig.tight_layout()
    return fig


@_styled
def plot_speedup(
    measured: pd.Series,
    ideal: pd.Series,
    *,
    spread: tuple[pd.Series, pd.Series] | None = None,
    title: str = "Measured vs ideal speedup",
    ax: Axes | None = None,
    xlabel: str = "blocks removed",
    ylabel: str = "speedup (x, vs the full model)",
    figsize: tuple[float, float] = (6.5, 4.0),
) -> Figure:
    """Measured speedup beside the ideal one (from the compute removed) as more blocks are removed.

    A grey line marks 1x (no speedup); ``spread`` shades the range the timed repetitions allow around the measured
    line (e.g. ``speedup_low`` and ``speedup_high`` of ``speedup_spread``).

    Args:
        measured: the measured speedups, indexed by the number of blocks removed.
        ideal: the ideal speedups (``ideal_speedup``), indexed likewise.
        spread: (low, high) ends of the measured speedups' range, indexed likewise; None: no shading.
        title: the axes' title.
        ax: the Axes to draw on; None draws on a new figure of ``figsize``.
        xlabel: the x label.
        ylabel: the y label.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: for either series (or an end of ``spread``) that is not a Series or one-column frame, is empty,
            not numeric or all NaN; an ``ax`` that is not an Axes.
    """
    measured_frame, ideal_frame = _numeric_frame(measured, "measured"), _numeric_frame(ideal, "ideal")
    if measured_frame.shape[1] != 1 or ideal_frame.shape[1] != 1:
        raise ValueError("measured and ideal must be Series (or one-column frames) indexed by blocks removed")
    fig, ax = _figure_and_axes(ax, figsize)
    ax.axhline(1.0, color=_HIGHLIGHT_COLOUR, lw=1)
    ideal_series = ideal_frame.iloc[:, 0].sort_index()
    measured_series = measured_frame.iloc[:, 0].sort_index()
    ax.plot(
        ideal_series.index, ideal_series, ls="--", marker="o", markersize=4, color=PALETTE[0], label="ideal (MAC count)"
    )
    ax.plot(measured_series.index, measured_series, marker="s", markersize=4, color=PALETTE[1], label="measured")
    if spread is not None:
        low, high = (_numeric_frame(end, name).iloc[:, 0].sort_index() for end, name in zip(spread, ("low", "high")))
        ax.fill_between(low.index, low, high, color=PALETTE[1], alpha=0.2, lw=0, label="measured, spread of the runs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


@_styled
def plot_retained(
    shares: pd.DataFrame,
    *,
    title: str,
    highlight: Collection[str] = (),
    ax: Axes | None = None,
    figsize: tuple[float, float] = (10.0, 4.2),
) -> Figure:
    """Share of the full model's above-chance accuracy each variant keeps, one series per metric, with intervals.

    Tasks with different chance levels (LAMBADA: 0, a four-way choice: 0.25) become comparable: 1 keeps everything
    the full model knew beyond chance, 0 is chance. Highlighted metrics (e.g. LAMBADA, which predicts a word as
    generation does) are drawn solid and the others dashed.

    Args:
        shares: ``helpers.variant_benchmarks.retained_share``'s frame (columns ``variant``, ``metric``, ``share``,
            ``low``, ``high``).
        title: the figure's title.
        highlight: metrics drawn solid and thick.
        ax: the Axes to draw on; None makes a new figure of ``figsize``.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: if ``shares`` lacks those columns or is empty; for an ``ax`` that is not an Axes.
    """
    needed = ["variant", "metric", "share", "low", "high"]
    if not isinstance(shares, pd.DataFrame) or shares.empty or not set(needed) <= set(shares.columns):
        raise ValueError(
            f"shares must be a non-empty frame with columns {needed} (helpers.variant_benchmarks.retained_share)"
        )
    fig, ax = _figure_and_axes(ax, figsize)
    variants = list(dict.fromkeys(shares["variant"]))
    metrics = list(dict.fromkeys(shares["metric"]))
    width = 0.7 / len(metrics)
    for i, metric in enumerate(metrics):
        rows = shares[shares["metric"] == metric].set_index("variant").loc[variants]
        x = np.arange(len(variants)) + (i - (len(metrics) - 1) / 2) * width
        solid = metric in highlight
        ax.errorbar(
            x,
            rows["share"],
            yerr=[rows["share"] - rows["low"], rows["high"] - rows["share"]],
            fmt="o-" if solid else "s--",
            color=PALETTE[i % len(PALETTE)],
            linewidth=2.2 if solid else 1.0,
            markersize=6 if solid else 4,
            capsize=3,
            alpha=1.0 if solid else 0.8,
            label=metric,
        )
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(np.arange(len(variants)), variants, rotation=30, ha="right")
    ax.set(title=title, ylabel="share of the full model's accuracy above chance", xlabel="variant")
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


@_styled
def plot_metric_by_k(
    results: VariantResults,
    series: Mapping[str, Mapping[int, str]],
    metric: str,
    *,
    title: str,
    ylabel: str,
    logy: bool = False,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (8.0, 4.0),
) -> Figure:
    """One line per selection rule: ``metric`` with its 95% interval as more blocks are removed, the full model as
    a dashed line.

    Args:
        results: the evaluation of every variant named in ``series`` (its reference is the full model).
        series: ``{rule: {k: variant name}}``, e.g. ``{"middle": {2: "middle k=2", 4: ...}}``.
        metric: a metric of ``results`` with intervals.
        title: the figure's title.
        ylabel: the y label.
        logy: draw the y axis on a log scale.
        ax: the Axes to draw on; None makes a new figure of ``figsize``.
        figsize: the size of a new figure.

    Returns:
        The Figure drawn on.

    Raises:
        ValueError: if ``series`` is empty; for an ``ax`` that is not an Axes.
        KeyError: for a variant or metric that ``results`` lacks.
    """
    if not series:
        raise ValueError("series is empty: give {rule: {k: variant name}} for at least one rule")
    fig, ax = _figure_and_axes(ax, figsize)
    for i, (rule, by_k) in enumerate(series.items()):
        ks = sorted(by_k)
        intervals = [results.interval(by_k[k], metric) for k in ks]
        values = np.array([ci.estimate for ci in intervals])
        errors = [values - [ci.low for ci in intervals], [ci.high for ci in intervals] - values]
        ax.errorbar(ks, values, yerr=errors, fmt="o-", capsize=3, color=PALETTE[i % len(PALETTE)], label=rule)
    ax.axhline(results.interval(results.reference, metric).estimate, color="grey", linestyle="--", label="full model")
    if logy:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel="blocks removed (k)", ylabel=ylabel)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
