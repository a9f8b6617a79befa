"""Plot functions: what they draw (lines, bars, masked cells, markers, labels) checked against the input data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from helpers import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def profiles():
    return pd.DataFrame(
        {"taylor": [5.0, 1.0, 3.0, np.nan, 2.0, 4.0], "magnitude": [10.0, 20, 30, 40, 50, 60]},
        index=pd.RangeIndex(6, name="block"),
    )


def mesh(ax) -> np.ma.MaskedArray:
    (quad,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    return quad.get_array()


def test_profiles_lines_highlight_labels(profiles):
    fig = plots.plot_block_profiles(profiles, title="Importance", ylabel="score", highlight=[4, 1])
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["taylor", "magnitude"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(6))
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), profiles["taylor"].to_numpy())  # NaN stays a gap
    # One shaded span per highlighted block, centred on it.
    spans = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
    assert spans == [1.0, 4.0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Importance", "block", "score")
    lo, hi = ax.get_xlim()
    assert [t for t in ax.get_xticks() if lo <= t <= hi] == list(range(6))  # one tick per block


@pytest.mark.parametrize("how", ["rank", "minmax"])
def test_profiles_normalised_by_hand(profiles, how):
    fig = plots.plot_block_profiles(profiles, title="t", ylabel="score", normalise_by=how)
    ax = fig.axes[0]
    taylor = ax.lines[0].get_ydata()
    if how == "rank":
        np.testing.assert_array_equal(taylor, [5, 1, 3, np.nan, 2, 4])  # 1.0 is the lowest of 5,1,3,2,4
        np.testing.assert_array_equal(ax.lines[1].get_ydata(), [1, 2, 3, 4, 5, 6])
        assert "rank" in ax.get_ylabel()
    else:
        np.testing.assert_allclose(taylor, [1.0, 0.0, 0.5, np.nan, 0.25, 0.75])
        np.testing.assert_allclose(ax.lines[1].get_ydata(), np.arange(6) / 5)


def test_rank_normalisation_ties_near_equal_scores():
    # 1.0 and 1.0005 are within 0.1%: they share places 1-2 (by hand: 1.5 each); NaN stays NaN
    out = plots.normalise(pd.DataFrame({"c": [1.0005, 3.0, np.nan, 1.0]}), "rank")
    np.testing.assert_array_equal(out["c"].to_numpy(), [1.5, 3.0, np.nan, 1.5])


def test_normalise_constant_column_keeps_nan():
    out = plots.normalise(pd.DataFrame({"c": [2.0, 2.0, np.nan]}), "minmax")
    np.testing.assert_array_equal(out["c"].to_numpy(), [0.5, 0.5, np.nan])
    with pytest.raises(ValueError, match="rank"):
        plots.normalise(pd.DataFrame({"c": [1.0]}), "zscore")


def test_series_profile_on_given_axes(profiles):
    fig, ax = plt.subplots()
    assert plots.plot_block_profiles(profiles["magnitude"], title="t", ylabel="y", ax=ax) is fig
    assert len(ax.lines) == 1 and len(fig.axes) == 1


def test_profiles_reject_bad_input(profiles):
    with pytest.raises(ValueError, match="highlight"):
        plots.plot_block_profiles(profiles, title="t", ylabel="y", highlight=[7])
    with pytest.raises(ValueError, match="integer block"):
        plots.plot_block_profiles(profiles.set_axis(list("abcdef")), title="t", ylabel="y")
    with pytest.raises(ValueError, match="numbers"):
        plots.plot_block_profiles(profiles.assign(name="x"), title="t", ylabel="y")


def spans(ax) -> list[tuple[float, float, str, float]]:
    """(left, right, colour, alpha) of each shaded block span, left to right."""
    return sorted(
        (p.get_x(), p.get_x() + p.get_width(), to_hex(p.get_facecolor(), keep_alpha=False), p.get_alpha())
        for p in ax.patches
    )


def test_profiles_by_default_linear_and_unshaded(profiles):
    ax = plots.plot_block_profiles(profiles, title="t", ylabel="score").axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "score" and len(ax.patches) == 0


def test_profiles_log_scale_and_lighter_protected_blocks(profiles):
    fig = plots.plot_block_profiles(profiles, title="t", ylabel="score", logy=True, protected=[5, 0, 0], highlight=[2])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "score (log scale)"
    # Protected blocks 0 and 5 in the palette's grey at alpha 0.15, the highlighted block 2 at 0.3.
    assert spans(ax) == [(-0.5, 0.5, "#949494", 0.15), (1.5, 2.5, "#949494", 0.3), (4.5, 5.5, "#949494", 0.15)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "protected blocks",
        "selected blocks",
        "taylor",
        "magnitude",
    ]


def test_profiles_log_scale_and_protected_refuse_what_they_cannot_show(profiles):
    with pytest.raises(ValueError, match="logy needs positive values.*'taylor'"):
        plots.plot_block_profiles(profiles, title="t", ylabel="y", logy=True, normalise_by="minmax")  # min -> 0
    with pytest.raises(ValueError, match=r"protected blocks \[6\]"):
        plots.plot_block_profiles(profiles, title="t", ylabel="y", protected=[1, 6])


def test_block_heatmap_blocks_along_x_nan_masked_annotated(profiles):
    fig = plots.plot_block_heatmap(profiles, title="Scores", cbar_label="importance")
    ax, cbar = fig.axes
    cells = mesh(ax)
    assert cells.shape == (2, 6)  # criteria as rows, blocks along x
    np.testing.assert_array_equal(cells.mask, profiles.T.isna().to_numpy())
    np.testing.assert_array_equal(cells.data[1], profiles["magnitude"].to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(b) for b in range(6)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["taylor", "magnitude"]
    assert len(ax.texts) == profiles.notna().to_numpy().sum()  # small table: every finite cell annotated
    assert cbar.get_ylabel() == "importance" and ax.get_title() == "Scores" and ax.get_xlabel() == "block"


def test_block_heatmap_minmax_rows():
    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) * 100})
    fig = plots.plot_block_heatmap(frame, title="t", cbar_label="score", normalise_by="minmax")
    cells = mesh(fig.axes[0])
    np.testing.assert_allclose(cells.data, np.vstack([np.arange(20) / 19] * 2))
    assert len(fig.axes[0].texts) == 0  # 20 blocks: too many to annotate
    assert "min-max" in fig.axes[1].get_ylabel()


def test_block_heatmap_by_default_has_no_frames_lines_or_legend(profiles):
    ax = plots.plot_block_heatmap(profiles, title="t", cbar_label="c").axes[0]
    assert len(ax.lines) == len(ax.patches) == 0 and ax.get_legend() is None


def test_block_heatmap_frames_removed_cells_and_separates_protected_blocks(profiles):
    # Blocks 10..15: the cells sit at positions 0..5 along x; row 0 is "taylor", row 1 "magnitude".
    frame = profiles.set_axis(range(10, 16))
    fig = plots.plot_block_heatmap(
        frame, title="t", cbar_label="c", protected=[10, 11, 15], removed={"magnitude": [13, 12], "taylor": [14]}
    )
    ax = fig.axes[0]
    # Protected 10, 11 | 12, 13, 14 | 15: lines between positions 1 and 2, and 4 and 5.
    assert [(list(line.get_xdata()), to_hex(line.get_color()), line.get_linestyle()) for line in ax.lines] == [
        ([2, 2], "#ffffff", "--"),
        ([5, 5], "#ffffff", "--"),
    ]
    frames = [
        (p.get_x(), p.get_y(), p.get_width(), p.get_height(), to_hex(p.get_edgecolor()), p.get_fill())
        for p in ax.patches
    ]
    assert frames == [(2, 1, 1, 1, "#d55e00", False), (3, 1, 1, 1, "#d55e00", False), (4, 0, 1, 1, "#d55e00", False)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["removed"]


def test_block_heatmap_refuses_unknown_rows_and_blocks(profiles):
    with pytest.raises(ValueError, match=r"rows \['ppl'\]"):
        plots.plot_block_heatmap(profiles, title="t", cbar_label="c", removed={"ppl": [1]})
    with pytest.raises(ValueError, match=r"removed\['taylor'\] blocks \[9\]"):
        plots.plot_block_heatmap(profiles, title="t", cbar_label="c", removed={"taylor": [1, 9]})
    with pytest.raises(ValueError, match=r"protected blocks \[-1\]"):
        plots.plot_block_heatmap(profiles, title="t", cbar_label="c", protected=[-1])


def test_depth_similarity_square_and_labelled():
    matrix = pd.DataFrame(np.random.default_rng(0).random((7, 7)))
    fig = plots.plot_depth_similarity(matrix)
    ax, cbar = fig.axes
    np.testing.assert_allclose(mesh(ax).data, matrix.to_numpy())
    assert cbar.get_ylabel() == "cosine similarity" and ax.get_title() and ax.get_xlabel() == ax.get_ylabel()
    with pytest.raises(ValueError, match="square"):
        plots.plot_depth_similarity(matrix.iloc[:, :6])


def test_angular_distance_masks_nan_and_marks_best_start():
    n_blocks = 5
    distance = pd.DataFrame(np.nan, index=range(n_blocks), columns=range(1, n_blocks))
    for start in range(n_blocks):
        for n in range(1, n_blocks - start):
            distance.loc[start, n] = 0.1 * start + 0.01 * n
    best = pd.Series([0, 0, 1, np.nan], index=range(1, n_blocks))
    fig = plots.plot_angular_distance(distance, best)
    ax = fig.axes[0]
    np.testing.assert_array_equal(mesh(ax).mask, distance.isna().to_numpy())
    (markers,) = [c for c in ax.collections if not isinstance(c, QuadMesh)]
    # Cell (row start, column n) has its centre at (column position + 0.5, row position + 0.5); NaN best skipped.
    np.testing.assert_array_equal(markers.get_offsets(), [[0.5, 0.5], [1.5, 0.5], [2.5, 1.5]])
    assert ax.get_xlabel().startswith("n") and ax.get_ylabel().startswith("ℓ")
    with pytest.raises(ValueError, match="unknown n"):
        plots.plot_angular_distance(distance, pd.Series([0], index=[9]))


def test_token_heatmap_token_labels():
    tokens = pd.DataFrame(np.arange(12.0).reshape(3, 4), index=["The", "\n", "Ġcat"], columns=range(4))
    fig = plots.plot_token_heatmap(tokens, title="Per-token change", cbar_label="1 - cos")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["The", "\\n", "Ġcat"]
    assert mesh(ax).shape == (3, 4) and ax.get_ylabel() == "token" and fig.axes[1].get_ylabel() == "1 - cos"


@pytest.fixture
def before_after():
    return pd.DataFrame(
        {
            "metric": ["latency (ms)", "latency (ms)", "parameters (M)", "parameters (M)"],
            "variant": ["baseline", "pruned", "baseline", "pruned"],
            "value": [10.0, 8.0, 135.0, 110.0],
            "low": [9.0, 7.5, np.nan, np.nan],
            "high": [11.0, 8.25, np.nan, np.nan],
        }
    )


def test_before_after_bars_errors_and_labels(before_after):
    fig = plots.plot_before_after(before_after, title="Benefits")
    assert fig._suptitle.get_text() == "Benefits"
    latency, params = fig.axes
    assert [p.get_height() for p in latency.patches] == [10.0, 8.0]
    assert [p.get_height() for p in params.patches] == [135.0, 110.0]
    assert [t.get_text() for t in latency.get_xticklabels()] == ["baseline", "pruned"]
    assert [t.get_text() for t in params.texts] == ["135", "110"]
    # The error bar of each bar spans exactly [low, high].
    (segments,) = [c for c in latency.collections]
    spans = sorted((s[:, 1].min(), s[:, 1].max()) for s in segments.get_segments())
    assert spans == [(7.5, 8.25), (9.0, 11.0)]
    assert not params.collections  # no interval given, no error bars
    assert latency.get_ylabel() == "latency (ms)" and latency.get_xlabel() == "model"


def test_before_after_dict_and_axes():
    fig, ax = plt.subplots()
    out = plots.plot_before_after({"baseline": {"tok/s": 50.0}, "pruned": {"tok/s": 60.0}}, title="Speed", ax=ax)
    assert out is fig and [p.get_height() for p in ax.patches] == [50.0, 60.0]
    assert "Speed" in ax.get_title()
    with pytest.raises(ValueError, match="one Axes per metric"):
        plots.plot_before_after({"a": {"x": 1.0, "y": 2.0}}, title="t", ax=ax)


def dashed(ax) -> list:
    return [line for line in ax.lines if line.get_linestyle() == "--"]  # error-bar caps are lines too, undashed


def test_before_after_by_default_no_reference_and_level_names(before_after):
    fig = plots.plot_before_after(before_after, title="t")
    for ax in fig.axes:
        assert dashed(ax) == [] and ax.get_legend() is None
        assert [t.get_rotation() for t in ax.get_xticklabels()] == [0.0, 0.0]


def test_before_after_reference_line_on_its_panel_and_turned_names(before_after):
    fig = plots.plot_before_after(
        before_after, title="t", reference={"latency (ms)": 9.5}, reference_label="target", xtick_rotation=45
    )
    latency, params = fig.axes
    (line,) = dashed(latency)
    assert list(line.get_ydata()) == [9.5, 9.5] and to_hex(line.get_color()) == "#949494"
    assert [t.get_text() for t in latency.get_legend().get_texts()] == ["target"]
    assert dashed(params) == [] and params.get_legend() is None
    for ax in fig.axes:
        assert [(t.get_rotation(), t.get_horizontalalignment()) for t in ax.get_xticklabels()] == [(45.0, "right")] * 2


def test_before_after_reference_without_label_draws_no_legend(before_after):
    fig = plots.plot_before_after(before_after, title="t", reference={"parameters (M)": 120})
    (line,) = dashed(fig.axes[1])
    assert list(line.get_ydata()) == [120, 120] and fig.axes[1].get_legend() is None


def test_before_after_refuses_a_bad_reference(before_after):
    with pytest.raises(ValueError, match=r"metrics \['accuracy'\]"):
        plots.plot_before_after(before_after, title="t", reference={"accuracy": 0.5})
    with pytest.raises(ValueError, match="finite number"):
        plots.plot_before_after(before_after, title="t", reference={"latency (ms)": float("nan")})
    with pytest.raises(ValueError, match="no reference"):
        plots.plot_before_after(before_after, title="t", reference_label="majority class")


def test_before_after_rejects_bad_tables(before_after):
    with pytest.raises(ValueError, match="lacks the columns"):
        plots.plot_before_after(before_after.drop(columns="variant"), title="t")
    with pytest.raises(ValueError, match="low <= value <= high"):
        plots.plot_before_after(before_after.assign(low=20.0), title="t")
    with pytest.raises(ValueError, match="more than one row"):
        plots.plot_before_after(pd.concat([before_after, before_after]), title="t")


def test_speedup_lines():
    measured = pd.Series([1.0, 1.1, 1.25], index=[0, 3, 6])
    ideal = pd.Series([1.0, 1.11, 1.25], index=[0, 3, 6])
    fig = plots.plot_speedup(measured, ideal)
    ax = fig.axes[0]
    one, ideal_line, measured_line = ax.lines
    assert set(one.get_ydata()) == {1.0}
    np.testing.assert_array_equal(ideal_line.get_ydata(), ideal.to_numpy())
    np.testing.assert_array_equal(measured_line.get_ydata(), measured.to_numpy())
    assert ax.get_xlabel() == "blocks removed" and ax.get_ylabel() and ax.get_title()


def test_speedup_spread_shaded_between_its_ends():
    measured = pd.Series([1.0, 1.1, 1.25], index=[0, 3, 6])
    low, high = measured - 0.05, measured + [0.0, 0.1, 0.2]
    ax = plots.plot_speedup(measured, measured, spread=(low[::-1], high)).axes[0]  # ends are sorted by index
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    shaded = {(x, y) for x, y in vertices.round(6).tolist()}
    assert {(x, y) for x, y in zip(low.index, low.round(6))} <= shaded
    assert {(x, y) for x, y in zip(high.index, high.round(6))} <= shaded
    assert "spread" in ax.get_legend().get_texts()[-1].get_text()
    assert not plots.plot_speedup(measured, measured).axes[0].collections  # no spread: no band


def test_removed_blocks_two_colours_and_a_legend():
    fig = plots.plot_removed_blocks({"first": [0, 1], "deep": [4, 2]}, 6, title="Removed")
    assert len(fig.axes) == 1  # no colour bar for a binary map
    ax = fig.axes[0]
    cells = mesh(ax)
    np.testing.assert_array_equal(cells, [[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 1, 0]])
    colours = [to_hex(c) for c in ax.collections[0].get_facecolors()]
    removed, kept = plots.SELECTION_COLOURS["removed"], plots.SELECTION_COLOURS["kept"]
    assert colours == [removed, removed, kept, kept, kept, kept, kept, kept, removed, kept, removed, kept]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["removed", "kept"]
    assert [to_hex(h.get_facecolor()) for h in legend.legend_handles] == [removed, kept]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["first", "deep"] and ax.get_title() == "Removed"
    with pytest.raises(ValueError, match=r"selections\['deep'\] blocks \[6\]"):
        plots.plot_removed_blocks({"deep": [6]}, 6, title="t")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_removed_blocks({}, 6, title="t")


@pytest.mark.parametrize(
    "draw",
    [
        lambda f: plots.plot_block_profiles(f, title="t", ylabel="y"),
        lambda f: plots.plot_block_heatmap(f, title="t", cbar_label="c"),
        lambda f: plots.plot_depth_similarity(f),
        lambda f: plots.plot_angular_distance(f),
        lambda f: plots.plot_token_heatmap(f, title="t", cbar_label="c"),
        lambda f: plots.plot_speedup(f, f),
    ],
)
def test_empty_or_all_nan_input_rejected(draw):
    with pytest.raises(ValueError, match="empty"):
        draw(pd.DataFrame())
    with pytest.raises(ValueError, match="only NaN"):
        draw(pd.DataFrame(np.nan, index=range(2), columns=range(2)))


def test_no_global_style_change(profiles):
    before = dict(plt.rcParams)
    plots.plot_block_profiles(profiles, title="t", ylabel="y")
    assert dict(plt.rcParams) == before
