"""The charts of the report and the analysis, drawn: accuracy vs sparsity / setting,
convergence, accuracy along a path, mask overlap, per-class table, confusion, layer profile.

Every function takes plain Python data (lists, dicts, tuples), builds a matplotlib
``Figure``, saves it as a PNG at ``out_path`` (parent folders are created) and returns the
figure without closing it; the caller closes it (``plt.close(fig)``). ``confusion_figure``,
``render`` and ``save`` live in ``fer_lottery.plotting``, which training uses too.

Accuracies are in percent, remaining weights are fractions in (0, 1], per-class scores are
fractions in [0, 1]. A spread that cannot be estimated (one run, ``std`` NaN or None) is
simply not drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from fer_lottery.plotting import DPI, confusion_figure, plt, save

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
METRICS = ("precision", "recall", "specificity")


# --------------------------------------------------------------------------- helpers


def _finite(value) -> bool:
    """True for a finite real number (Python or NumPy scalar), False for None/NaN/inf."""
    if value is None or isinstance(value, (str, bytes)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _floats(values, what: str) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float("nan") if v is None else float(v))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what}: {v!r} is not a number") from err
    return out


def _colors(k: int) -> list:
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def _percent(fraction: float) -> str:
    """0.5 -> '50%', 0.1 -> '10%', 0.001 -> '0.1%', 0.512 -> '51.2%'."""
    return f"{fraction * 100:.3g}%"


def _n_suffix(n) -> str:
    """'(n=3)' or '(n=2–5)' from an int or a list of ints; '' when unknown."""
    if n is None:
        return ""
    counts = list(n) if hasattr(n, "__len__") else [n]
    counts = sorted({int(c) for c in counts if _finite(c)})
    if not counts:
        return ""
    if len(counts) == 1:
        return f" (n={counts[0]})"
    return f" (n={counts[0]}–{counts[-1]})"


def _checked_series(series, xkey: str, func: str) -> list[dict]:
    """Validate and normalise series dicts: x, mean, std as float lists of equal length."""
    if not series:
        raise ValueError(f"{func}: no series to plot (got an empty list)")
    out = []
    for i, item in enumerate(series):
        label = str(item.get("label", f"series {i}"))
        where = f"{func}: series {label!r}"
        if xkey not in item or "mean" not in item:
            raise ValueError(f"{where} needs keys {xkey!r} and 'mean'")
        x = _floats(item[xkey], f"{where} {xkey}")
        mean = _floats(item["mean"], f"{where} mean")
        std = item.get("std")
        std = [float("nan")] * len(x) if std is None else _floats(std, f"{where} std")
        if not x:
            raise ValueError(f"{where} has no points")
        if not (len(x) == len(mean) == len(std)):
            raise ValueError(
                f"{where}: {xkey}, mean and std differ in length "
                f"({len(x)}, {len(mean)}, {len(std)})"
            )
        n = item.get("n")
        if n is not None and hasattr(n, "__len__") and len(n) != len(x):
            raise ValueError(f"{where}: n has {len(n)} entries for {len(x)} points")
        paper = item.get("paper") or []
        try:
            paper = [(float(px), float(py)) for px, py in paper]
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: paper must be a list of (x, percent) pairs") from err
        out.append(
            {
                "label": label,
                "x": x,
                "mean": mean,
                "std": std,
                "n": n,
                "paper": paper,
                "paper_label": item.get("paper_label") or f"{label} (paper)",
            }
        )
    return out


def _draw_series(ax, series: list[dict]) -> list[tuple]:
    """Our points as markers + error bars; the paper's as hollow markers on a dashed line.

    Returns (handle, label) pairs in legend order: each series followed by its paper line.
    """
    entries = []
    colors = _colors(len(series))
    for i, s in enumerate(series):
        color, marker = colors[i], MARKERS[i % len(MARKERS)]
        order = sorted(range(len(s["x"])), key=lambda j: s["x"][j])
        x = [s["x"][j] for j in order]
        mean = [s["mean"][j] for j in order]
        std = [s["std"][j] for j in order]
        yerr = std if any(_finite(v) for v in std) else None
        label = s["label"] + _n_suffix(s["n"])
        handle = ax.errorbar(
            x,
            mean,
            yerr=yerr,
            color=color,
            marker=marker,
            markersize=6,
            linewidth=1.8,
            capsize=4,
            elinewidth=1.2,
            label=label,
            zorder=3,
        )
        entries.append((handle, label))
        if s["paper"]:
            px, py = zip(*sorted(s["paper"]), strict=True)
            (paper_line,) = ax.plot(
                px,
                py,
                linestyle="--",
                marker=marker,
                markersize=7,
                markerfacecolor="none",
                markeredgewidth=1.5,
                color=color,
                alpha=0.9,
                label=s["paper_label"],
                zorder=2,
            )
            entries.append((paper_line, s["paper_label"]))
    return entries


def _legend_outside(ax, entries: list[tuple]) -> None:
    handles, labels = zip(*entries, strict=True)
    ax.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=9,
        frameon=False,
    )


def _dense_pair(value) -> tuple[float, float]:
    if not hasattr(value, "__len__"):
        return float(value), float("nan")
    values = list(value)
    if len(values) == 1:
        return float(values[0]), float("nan")
    if len(values) != 2:
        raise ValueError(f"dense accuracy must be a percent or (mean, std), got {value!r}")
    mean, std = values
    return float(mean), float("nan") if std is None else float(std)


# --------------------------------------------------------------------------- figures


def accuracy_vs_remaining(
    series: Sequence[Mapping],
    out_path,
    dense=None,
    paper_dense=None,
    title: str = "Test accuracy vs fraction of prunable weights remaining",
    invert_x: bool = True,
):
    """Test accuracy (%) against the fraction of prunable weights remaining (log x axis).

    ``series`` items: ``{"label", "remaining": [fractions in (0, 1]], "mean": [%],
    "std": [%, NaN when n=1], "n": int or [ints], "paper": [(remaining, %)] or None,
    "paper_label": str or None}``. ``dense`` is our dense network's ``(mean, std)`` in %,
    ``paper_dense`` the paper's dense accuracy (% or ``(mean, std)``). With ``invert_x``
    (default) 100% is on the left, so sparsity grows to the right.
    """
    checked = _checked_series(series, "remaining", "accuracy_vs_remaining")
    for s in checked:
        xs = s["x"] + [px for px, _ in s["paper"]]
        bad = [x for x in xs if not (0.0 < x <= 1.0)]
        if bad:
            raise ValueError(
                f"accuracy_vs_remaining: series {s['label']!r} has remaining fractions "
                f"outside (0, 1]: {bad} (pass fractions, not percentages)"
            )

    fig, ax = plt.subplots(figsize=(9.5, 5.2), dpi=DPI)
    entries = _draw_series(ax, checked)

    if dense is not None:
        mean, std = _dense_pair(dense)
        line = ax.axhline(mean, color="black", linewidth=1.4, label="dense (ours)", zorder=1)
        handle = line
        if _finite(std) and std > 0:
            band = ax.axhspan(
                mean - std, mean + std, color="grey", alpha=0.2, linewidth=0, zorder=0
            )
            handle = (band, line)
        entries.append((handle, "dense (ours)"))
    if paper_dense is not None:
        mean, std = _dense_pair(paper_dense)
        line = ax.axhline(
            mean, color="dimgray", linestyle=":", linewidth=1.8, label="dense (paper)", zorder=1
        )
        handle = line
        if _finite(std) and std > 0:
            band = ax.axhspan(
                mean - std,
                mean + std,
                facecolor="none",
                edgecolor="silver",
                hatch="//",
                linewidth=0,
                zorder=0,
            )
            handle = (band, line)
        entries.append((handle, "dense (paper)"))

    ax.set_xscale("log")
    xs = sorted({x for s in checked for x in s["x"] + [px for px, _ in s["paper"]]})
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 1.5, min(hi * 1.5, 1.6))
    # Label the measured fractions when there are few and they are well apart, else decades.
    spaced = all(b / a >= 1.6 for a, b in zip(xs, xs[1:], strict=False))
    if len(xs) <= 10 and spaced:
        ax.xaxis.set_major_locator(FixedLocator(xs))
    elif hi / lo <= 10**2.5:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _percent(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if invert_x:
        ax.invert_xaxis()

    ax.set_xlabel("fraction of prunable weights remaining (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _legend_outside(ax, entries)
    fig.tight_layout()
    save(fig, out_path)
    return fig


def accuracy_vs_setting(
    series: Sequence[Mapping],
    out_path,
    xlabel: str,
    title: str = "Test accuracy vs setting",
    ylabel: str = "test accuracy (%)",
):
    """Test accuracy (%) against a numeric setting (linear x), e.g. number of frozen layers.

    ``series`` items: ``{"label", "x": [numbers], "mean": [%], "std": [%, NaN when n=1],
    "n": int or [ints], "paper": [(x, %)] or None, "paper_label": str or None}``.
    """
    checked = _checked_series(series, "x", "accuracy_vs_setting")
    fig, ax = plt.subplots(figsize=(9.5, 5.2), dpi=DPI)
    entries = _draw_series(ax, checked)
    xs = sorted({x for s in checked for x in s["x"] + [px for px, _ in s["paper"]]})
    if len(xs) <= 12:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend_outside(ax, entries)
    fig.tight_layout()
    save(fig, out_path)
    return fig


def _band(ax, x, mean, std, n, color, alpha: float) -> None:
    """A ±std band around a mean line, when there is more than one repeat."""
    if _finite(n) and n > 1 and any(_finite(v) for v in std):
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(x, low, high, color=color, alpha=alpha, linewidth=0)


def convergence_curves(
    curves: Sequence[Mapping],
    out_path,
    title: str = "Validation accuracy per epoch",
):
    """Validation accuracy (%) per epoch, one line per curve with a ±std band when n > 1.

    ``curves`` items: ``{"label", "epochs": [ints], "mean": [%], "std": [%] or None,
    "n": int}``.
    """
    if not curves:
        raise ValueError("convergence_curves: no curves to plot (got an empty list)")
    checked = _checked_series(curves, "epochs", "convergence_curves")
    fig, ax = plt.subplots(figsize=(9.5, 5.2), dpi=DPI)
    colors = _colors(len(checked))
    for i, curve in enumerate(checked):
        epochs, mean, std, n = curve["x"], curve["mean"], curve["std"], curve["n"]
        label = curve["label"]
        color = colors[i]
        ax.plot(epochs, mean, color=color, linewidth=1.8, label=label + _n_suffix(n))
        _band(ax, epochs, mean, std, n, color, 0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    save(fig, out_path)
    return fig


def accuracy_along_path(curves: Sequence[Mapping], out_path, title: str | None = None):
    """Test accuracy (%) against alpha on the line between two trained models, one line per
    curve with a ±std band when n > 1 (linear mode connectivity).

    ``curves`` items: ``{"label", "alpha": [floats], "mean": [%], "std": [%] or None, "n"}``.
    """
    if not curves:
        raise ValueError("accuracy_along_path: no curves to plot (got an empty list)")
    checked = _checked_series(curves, "alpha", "accuracy_along_path")
    fig, ax = plt.subplots(figsize=(9.5, 5.2), dpi=DPI)
    colors = _colors(len(checked))
    entries = []
    for i, curve in enumerate(checked):
        alpha, mean, std, n = curve["x"], curve["mean"], curve["std"], curve["n"]
        color, marker = colors[i], MARKERS[i % len(MARKERS)]
        label = textwrap_label(curve["label"]) + _n_suffix(n)
        (line,) = ax.plot(alpha, mean, color=color, marker=marker, linewidth=1.8, label=label)
        entries.append((line, label))
        _band(ax, alpha, mean, std, n, color, 0.15)
    ax.set_xlabel("α (0: first retraining, 1: second retraining)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Linear mode connectivity: BatchNorm statistics recomputed at each α")
    ax.set_xlim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    _legend_outside(ax, entries)
    fig.tight_layout()
    save(fig, out_path)
    return fig


def overlap_heatmap(results: Mapping[str, Mapping[str, Mapping[str, float]]], out_path, title=""):
    """Layers × compared pairs, coloured by the overlap of kept weights in × chance on a log
    scale (1 = chance; a sparse layer can reach thousands), the value written in each cell
    ("n/a" where a mask keeps nothing of the layer). ``results``: pair label -> layer ->
    {"x_chance": ...}."""
    from matplotlib.colors import LogNorm

    pairs = list(results)
    layers = list(dict.fromkeys(layer for r in results.values() for layer in r))
    grid = [
        [results[p].get(layer, {}).get("x_chance", math.nan) for p in pairs] for layer in layers
    ]
    values = [v for line in grid for v in line if _finite(v) and v > 0]
    low, high = (min(values), max(values)) if values else (0.5, 2.0)
    low, high = min(low, 1.0), max(high, low * 1.01, 1.01)
    masked = [[v if _finite(v) and v > 0 else math.nan for v in line] for line in grid]
    fig, ax = plt.subplots(figsize=(4.5 + 1.4 * len(pairs), 1.8 + 0.3 * len(layers)), dpi=DPI)
    norm = LogNorm(low, high)
    image = ax.imshow(masked, aspect="auto", cmap="viridis", norm=norm)
    ax.set_xticks(range(len(pairs)), [textwrap_label(p, 24) for p in pairs], fontsize=8)
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            text = f"{v:.2f}" if _finite(v) else "n/a"
            bright = _finite(v) and v > 0 and norm(v) > 0.7  # viridis turns yellow
            color = "black" if bright else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    ax.set_facecolor("0.6")
    fig.colorbar(image, ax=ax, label="overlap of kept weights, × chance (log scale)")
    ax.set_title(
        textwrap_label(title or "Mask overlap against random masks of the same densities", 60),
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, out_path)
    return fig


def _cell(value, spread=None) -> str:
    if not _finite(value):
        return "–"
    if _finite(spread):
        return f"{value:.2f} ± {spread:.2f}"
    return f"{value:.2f}"


def per_class_table(
    scores: Mapping[str, Sequence[float]],
    class_names: Sequence[str],
    out_path,
    paper: Mapping[str, Sequence[float]] | None = None,
    title: str = "Per-class test scores",
    std: Mapping[str, Sequence[float]] | None = None,
):
    """A table: columns are classes, rows are our precision/recall/specificity (± std).

    ``scores``, ``std`` and ``paper`` map ``"precision"``, ``"recall"``, ``"specificity"``
    (any subset; other keys follow) to one fraction per class. Each of our rows is followed
    by the paper's row of the same metric, "<Metric> (paper)", shaded grey.
    """
    names = [str(c) for c in class_names]
    if not names:
        raise ValueError("per_class_table: no class names")
    if not scores:
        raise ValueError("per_class_table: no scores to tabulate (got an empty dict)")
    keys = [k for k in METRICS if k in scores] + [k for k in scores if k not in METRICS]
    sources = {"scores": scores, "std": std or {}, "paper": paper or {}}
    for what, table in sources.items():
        for key, values in table.items():
            if values is not None and len(values) != len(names):
                raise ValueError(
                    f"per_class_table: {what}[{key!r}] has {len(values)} values "
                    f"for {len(names)} classes"
                )

    rows, cells, paper_rows = [], [], []
    for key in keys:
        spread = (std or {}).get(key) or [None] * len(names)
        rows.append(key.capitalize())
        cells.append([_cell(v, s) for v, s in zip(scores[key], spread, strict=True)])
        if paper and paper.get(key) is not None:
            paper_rows.append(len(rows))
            rows.append(f"{key.capitalize()} (paper)")
            cells.append([_cell(v) for v in paper[key]])

    # Row names are the table's first column (cell (r, 0)), classes are columns 1..k, and
    # row 0 is the header, so the whole table sits inside the axes under a centred title.
    label_w, class_w = 1.7, (1.15 if std else 0.95)
    width = label_w + class_w * len(names)
    height = 0.35 * (len(rows) + 1)
    fig = plt.figure(figsize=(width + 0.3, height + 0.75), dpi=DPI)
    ax = fig.add_axes(
        (
            0.15 / (width + 0.3),
            0.1 / (height + 0.75),
            width / (width + 0.3),
            height / (height + 0.75),
        )
    )
    ax.axis("off")
    table = ax.table(
        cellText=[[row, *line] for row, line in zip(rows, cells, strict=True)],
        colLabels=["", *names],
        colWidths=[label_w / width] + [class_w / width] * len(names),
        cellLoc="center",
        bbox=(0.0, 0.0, 1.0, 1.0),
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (r, c), cell in table.get_celld().items():
        if c == 0:
            cell.set_text_props(ha="left")
            cell.PAD = 0.04
        if r == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("#dde6f0")
        elif r - 1 in paper_rows:
            cell.set_facecolor("#f0f0f0")
            cell.set_text_props(color="dimgray", fontstyle="italic" if c > 0 else "normal")
        elif c == 0:
            cell.set_text_props(fontweight="bold")
    ax.set_title(title, pad=8)
    save(fig, out_path)
    return fig


def confusion(matrix, class_names, out_path, title: str = ""):
    """The labelled confusion-matrix heat map of ``confusion_figure``, saved as a PNG."""
    if not matrix or not class_names:
        raise ValueError("confusion: empty matrix or class names")
    if len(matrix) != len(class_names) or any(len(row) != len(class_names) for row in matrix):
        raise ValueError(
            f"confusion: matrix must be {len(class_names)}x{len(class_names)} for the classes"
        )
    fig = confusion_figure(matrix, list(class_names), title)
    save(fig, out_path)
    return fig


def layer_profile(series: Sequence[Mapping], layers: Sequence[str], out_path, floor=None):
    """The fraction of each layer's weights remaining (log y), one line per condition.

    ``series`` items: ``{"label", "remaining": [fraction per layer, in (0, 1] or 0]}``, in the
    order of ``layers`` (forward order). A layer pruned away entirely is drawn at the bottom
    edge with an x marker. ``floor``: ``prune.min_layer_density``, drawn as a dashed line.
    """
    if not series or not layers:
        raise ValueError("layer_profile: no series or no layers to draw")
    for s in series:
        if len(s["remaining"]) != len(layers):
            raise ValueError(
                f"layer_profile: series {s['label']!r} has {len(s['remaining'])} values for "
                f"{len(layers)} layers"
            )
    positive = [v for s in series for v in s["remaining"] if _finite(v) and v > 0]
    bottom = min(positive + [floor or 1.0]) / 2 if positive else 1e-4
    fig, ax = plt.subplots(figsize=(max(9.5, 0.42 * len(layers) + 4), 5.2), dpi=DPI)
    xs = list(range(len(layers)))
    entries = []
    for (s, color), marker in zip(
        zip(series, _colors(len(series)), strict=True),
        (MARKERS * (len(series) // len(MARKERS) + 1))[: len(series)],
        strict=True,
    ):
        ys = [v if _finite(v) and v > 0 else bottom for v in s["remaining"]]
        (line,) = ax.plot(xs, ys, marker=marker, color=color, linewidth=1.4, markersize=5)
        dead = [(x, bottom) for x, v in zip(xs, s["remaining"], strict=True) if not v > 0]
        if dead:
            ax.scatter(*zip(*dead, strict=True), marker="x", color=color, s=60, zorder=3)
        entries.append((line, textwrap_label(s["label"])))
    if floor:
        line = ax.axhline(floor, color="grey", linestyle="--", linewidth=1)
        entries.append((line, f"min_layer_density ({_percent(floor)})"))
    ax.set_yscale("log")
    ax.set_ylim(bottom / 1.2, 1.5)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _percent(v)))
    ax.set_xticks(xs)
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("fraction of the layer's weights remaining (log scale)")
    ax.set_title("Where each condition's pruning went: weights remaining per layer")
    ax.grid(True, which="major", alpha=0.3)
    _legend_outside(ax, entries)
    fig.tight_layout()
    save(fig, out_path)
    return fig


def textwrap_label(label: str, width: int = 44) -> str:
    import textwrap

    return textwrap.fill(label, width=width)
