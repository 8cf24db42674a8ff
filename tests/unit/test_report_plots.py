"""The report's figures: saved as valid PNGs, labelled, with legends, error bars and bands."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from PIL import Image

from fer_lottery.core.classes import CLASSES
from fer_lottery.plotting import charts as rp

NAN = float("nan")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png_ok(path, min_w=300, min_h=150):
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        w, h = image.size
        pixels = np.asarray(image.convert("L"))
    assert w >= min_w and h >= min_h, (w, h)
    assert pixels.std() > 5, "the PNG is blank"


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None, "no legend"
    return [t.get_text() for t in legend.get_texts()]


def _errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _bar_segments(container: ErrorbarContainer) -> list:
    """Non-empty vertical error-bar segments of one errorbar call."""
    _line, _caps, barcols = container.lines
    if not barcols:
        return []
    return [s for s in barcols[0].get_segments() if len(s)]


def _pruning_series():
    return [
        {
            "label": "magnitude, rewind=pretrained",
            "remaining": [0.5, 0.1, 0.05, 0.01, 0.001],
            "mean": [46.0, 44.0, 42.0, 35.0, 20.0],
            "std": [1.0, NAN, 2.0, 2.5, 4.0],
            "n": [5, 1, 5, 5, 5],
            "paper": [(0.5, 47.0), (0.1, 45.0), (0.001, 25.0)],
            "paper_label": None,
        },
        {
            "label": "random pruning",
            "remaining": [0.5, 0.1, 0.01],
            "mean": [44.0, 35.0, 20.0],
            "std": [NAN, NAN, NAN],
            "n": 1,
            "paper": None,
        },
    ]


def test_accuracy_vs_remaining(tmp_path):
    out = tmp_path / "sub" / "remaining.png"
    fig = rp.accuracy_vs_remaining(
        _pruning_series(), out, dense=(46.5, 1.0), paper_dense=48.2, title="Pruning"
    )
    _png_ok(out)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "fraction of prunable weights remaining (log scale)"
    assert ax.get_ylabel() == "test accuracy (%)"
    assert ax.get_title() == "Pruning"

    labels = _legend_texts(ax)
    assert "magnitude, rewind=pretrained (n=1–5)" in labels
    assert "random pruning (n=1)" in labels
    assert "magnitude, rewind=pretrained (paper)" in labels
    assert "dense (ours)" in labels and "dense (paper)" in labels
    # ours first, its paper line right after, dense lines last
    assert labels.index("magnitude, rewind=pretrained (paper)") == 1
    assert labels[-2:] == ["dense (ours)", "dense (paper)"]
    # the legend sits outside the axes, so it hides no data
    ax_box = ax.get_window_extent()
    leg_box = ax.get_legend().get_window_extent()
    assert leg_box.x0 >= ax_box.x1

    bars = _errorbars(ax)
    assert len(bars) == 2
    first, second = bars
    assert len(first.lines[0].get_xdata()) == 5
    assert len(_bar_segments(first)) == 4  # the NaN std draws no bar
    assert _bar_segments(second) == []  # all-NaN std: no bars at all, no crash
    # an error bar spans mean ± std
    spans = {round(seg[0, 0], 6): sorted(seg[:, 1].tolist()) for seg in _bar_segments(first)}
    assert spans[0.5] == pytest.approx([45.0, 47.0])
    assert spans[0.001] == pytest.approx([16.0, 24.0])
    assert 0.1 not in spans

    # paper points: hollow markers, dashed, same colour as the series
    paper_line = next(
        line
        for line in ax.get_lines()
        if line.get_label() == "magnitude, rewind=pretrained (paper)"
    )
    assert paper_line.get_linestyle() == "--"
    assert paper_line.get_markerfacecolor() == "none"
    assert paper_line.get_color() == first.lines[0].get_color()
    assert list(paper_line.get_xdata()) == [0.001, 0.1, 0.5]

    # dense lines: our mean with a ±std band, the paper's dotted
    dense = next(line for line in ax.get_lines() if line.get_label() == "dense (ours)")
    assert list(dense.get_ydata()) == [46.5, 46.5]
    bands = [p for p in ax.patches if p.get_label() != "dense (paper)"]
    ys = [p.get_path().transformed(p.get_patch_transform()).vertices[:, 1] for p in bands]
    assert any(min(y) == pytest.approx(45.5) and max(y) == pytest.approx(47.5) for y in ys), (
        "no ±std band for the dense line"
    )
    paper_dense = next(line for line in ax.get_lines() if line.get_label() == "dense (paper)")
    assert paper_dense.get_linestyle() == ":"

    # percent tick labels
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert {"50%", "10%", "1%", "0.1%"} <= set(ticks), ticks


def test_accuracy_vs_remaining_many_points_uses_percent_decades(tmp_path):
    remaining = [0.8**k for k in range(25)]
    fig = rp.accuracy_vs_remaining(
        [{"label": "IMP", "remaining": remaining, "mean": list(range(25)), "std": [1.0] * 25}],
        tmp_path / "many.png",
        paper_dense=(47.0, 1.5),
    )
    _png_ok(tmp_path / "many.png")
    (ax,) = fig.axes
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "100%" in ticks and "10%" in ticks and "1%" in ticks
    assert len(ticks) <= 12
    assert "IMP" in _legend_texts(ax)  # no n given: no "(n=...)" suffix
    assert "dense (ours)" not in _legend_texts(ax)


def test_accuracy_vs_remaining_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no series"):
        rp.accuracy_vs_remaining([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
    with pytest.raises(ValueError, match="outside"):
        rp.accuracy_vs_remaining(
            [{"label": "pct", "remaining": [50, 10], "mean": [1, 2], "std": [0, 0]}],
            tmp_path / "pct.png",
        )
    with pytest.raises(ValueError, match="length"):
        rp.accuracy_vs_remaining(
            [{"label": "short", "remaining": [0.5, 0.1], "mean": [1.0], "std": [0.0]}],
            tmp_path / "short.png",
        )


def test_accuracy_vs_setting(tmp_path):
    series = [
        {
            "label": "VGG-Face",
            "x": [0, 2, 4, 6],
            "mean": [40.0, 42.0, 44.0, 45.0],
            "std": [1.0, 1.0, 2.0, NAN],
            "n": 5,
            "paper": [(0, 41.0), (4, 46.0)],
        },
        {"label": "ResNet-50", "x": [0, 2, 4, 6], "mean": [38, 40, 41, 40], "std": None, "n": 1},
    ]
    out = tmp_path / "setting.png"
    fig = rp.accuracy_vs_setting(series, out, xlabel="number of frozen layers", title="Frozen")
    _png_ok(out)
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "number of frozen layers"
    assert ax.get_ylabel() == "test accuracy (%)"
    assert ax.get_title() == "Frozen"
    assert _legend_texts(ax) == ["VGG-Face (n=5)", "VGG-Face (paper)", "ResNet-50 (n=1)"]
    bars = _errorbars(ax)
    assert len(bars) == 2
    assert len(bars[0].lines[0].get_xdata()) == 4
    assert len(_bar_segments(bars[0])) == 3
    assert _bar_segments(bars[1]) == []
    assert [t for t in ax.get_xticks()] == [0, 2, 4, 6]

    with pytest.raises(ValueError, match="no series"):
        rp.accuracy_vs_setting([], tmp_path / "empty.png", xlabel="x")


def test_convergence_curves(tmp_path):
    epochs = list(range(10))
    curves = [
        {
            "label": "dense",
            "epochs": epochs,
            "mean": [20 + e for e in epochs],
            "std": [2] * 10,
            "n": 5,
        },
        {
            "label": "50% pruned",
            "epochs": epochs,
            "mean": [22 + e for e in epochs],
            "std": [1] * 10,
            "n": 3,
        },
        {
            "label": "90% pruned",
            "epochs": epochs,
            "mean": [18 + e for e in epochs],
            "std": [NAN] * 10,
            "n": 1,
        },
    ]
    out = tmp_path / "convergence.png"
    fig = rp.convergence_curves(curves, out, title="Paper A, Figure 1")
    _png_ok(out)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "validation accuracy (%)"
    assert ax.get_title() == "Paper A, Figure 1"
    assert len(ax.get_lines()) == 3
    assert _legend_texts(ax) == ["dense (n=5)", "50% pruned (n=3)", "90% pruned (n=1)"]
    fills = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(fills) == 2  # n=1 gets no band
    # the dense band spans mean ± std
    ys = fills[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(18.0) and max(ys) == pytest.approx(31.0)


def test_convergence_single_run_has_no_band(tmp_path):
    fig = rp.convergence_curves(
        [{"label": "dense", "epochs": [0, 1, 2], "mean": [10, 20, 30], "std": [1, 1, 1], "n": 1}],
        tmp_path / "one.png",
    )
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 1
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert _legend_texts(ax) == ["dense (n=1)"]
    with pytest.raises(ValueError, match="no curves"):
        rp.convergence_curves([], tmp_path / "none.png")


def _table_cells(fig) -> dict[tuple[int, int], str]:
    (ax,) = fig.axes
    (table,) = ax.tables
    return {rc: cell.get_text().get_text() for rc, cell in table.get_celld().items()}


SCORES = {
    "precision": [0.46, 0.2, 0.3, 0.7, 0.4, 0.35, 0.5],
    "recall": [0.5, 0.1, 0.25, 0.75, 0.45, 0.3, 0.55],
    "specificity": [0.9, 0.98, 0.92, 0.88, 0.85, 0.9, 0.93],
}
PAPER = {
    "precision": [0.5, 0.25, 0.3, 0.58, 0.4, 0.3, 0.6],
    "recall": [0.55, 0.15, 0.2, 0.8, 0.5, 0.3, 0.5],
    "specificity": [0.9, 0.97, 0.93, 0.89, 0.86, 0.9, 0.94],
}


def test_per_class_table_with_paper_and_std(tmp_path):
    std = {k: [0.03] * 7 for k in SCORES}
    std["recall"][1] = NAN
    out = tmp_path / "table.png"
    fig = rp.per_class_table(SCORES, CLASSES, out, paper=PAPER, title="Table 2", std=std)
    _png_ok(out)
    cells = _table_cells(fig)
    header = [cells[(0, c)] for c in range(1, 8)]
    assert header == list(CLASSES)
    rows = [cells[(r, 0)] for r in range(1, 7)]
    assert rows == [
        "Precision",
        "Precision (paper)",
        "Recall",
        "Recall (paper)",
        "Specificity",
        "Specificity (paper)",
    ]
    happy = 1 + CLASSES.index("Happy")
    assert cells[(1, happy)] == "0.70 ± 0.03"
    assert cells[(2, happy)] == "0.58"
    assert cells[(1, 1)] == "0.46 ± 0.03"
    assert cells[(3, 2)] == "0.10"  # NaN std: the value alone
    assert fig.axes[0].get_title() == "Table 2"
    assert fig.get_size_inches()[0] >= 8  # wide enough for 7 classes


def test_per_class_table_ours_only(tmp_path):
    scores = dict(SCORES)
    scores["precision"] = list(scores["precision"])
    scores["precision"][0] = NAN
    fig = rp.per_class_table(scores, CLASSES, tmp_path / "ours.png")
    _png_ok(tmp_path / "ours.png")
    cells = _table_cells(fig)
    assert [cells[(r, 0)] for r in range(1, 4)] == ["Precision", "Recall", "Specificity"]
    assert max(r for r, _ in cells) == 3
    assert cells[(1, 1)] == "–"
    assert cells[(3, 7)] == "0.93"
    with pytest.raises(ValueError, match="7 classes"):
        rp.per_class_table({"precision": [0.1] * 6}, CLASSES, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no scores"):
        rp.per_class_table({}, CLASSES, tmp_path / "bad.png")


def test_confusion(tmp_path):
    matrix = (np.eye(7, dtype=int) * 20 + 1).tolist()
    out = tmp_path / "confusion.png"
    fig = rp.confusion(matrix, CLASSES, out, "Confusion (test)")
    _png_ok(out)
    ax = fig.axes[0]
    assert ax.get_title() == "Confusion (test)"
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASSES)
    with pytest.raises(ValueError, match="7x7"):
        rp.confusion([[1, 2], [3, 4]], CLASSES, tmp_path / "bad.png", "bad")


def test_save_creates_parent(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = rp.save(fig, tmp_path / "a" / "b" / "c.png")
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_numpy_inputs(tmp_path):
    fig = rp.accuracy_vs_remaining(
        [
            {
                "label": "np",
                "remaining": np.array([0.5, 0.1]),
                "mean": np.array([40.0, 30.0]),
                "std": np.array([np.nan, 1.0]),
                "n": np.array([1, 3]),
            }
        ],
        tmp_path / "np.png",
        dense=(np.float64(41.0), np.float64(math.nan)),
    )
    (ax,) = fig.axes
    assert "np (n=1–3)" in _legend_texts(ax)
    assert len(_bar_segments(_errorbars(ax)[0])) == 1
