"""The report's figures from its rows: accuracy vs weights remaining, vs a paper table's own
setting, and convergence curves. ``plotting.charts`` draws them; this module picks and shapes
the data.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from fer_lottery.config.settings import PRUNING_SECTIONS
from fer_lottery.plotting import charts
from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import Row, condition_label, repeats, short_name
from fer_lottery.report.curves import final_stage, mean_curve, val_curve
from fer_lottery.report.stats import Stat

SWEEP_AXES = ("prune.ratio", "prune.distinctiveness.angle", "prune.distinctiveness.norm_std")
# Keys every series label names already.
NAMED = ("prune.method", "retrain.rewind")
AXIS_LABELS = {
    "prune.distinctiveness.angle": "distinctiveness angle threshold (degrees)",
    "prune.distinctiveness.norm_std": "norm pre-filter (standard deviations)",
    "model.frozen_layers": "frozen layers",
    "prune.ratio": "fraction of weights pruned",
}


def _series_label(row: Row, keys: list[str]) -> str:
    """``magnitude, rewind=none`` plus any other swept prune, retrain or stability key that is not
    the x axis."""
    config = row.jobs[0].config
    parts = [str(config.get("prune.method")), f"rewind={config.get('retrain.rewind')}"]
    for k in keys:
        value = row.values.get(k)
        if k.split(".")[0] in PRUNING_SECTIONS and k not in (*SWEEP_AXES, *NAMED):
            if value is not None:
                parts.append(f"{short_name(k)}={value}")
    return textwrap.fill(", ".join(parts), width=48)


def plot_remaining(rows: list[Row], dense: list[Row], keys: list[str], out: Path, paper_dense):
    """Test accuracy against the fraction of weights remaining, one line per method x mode."""
    series: dict[str, list[Row]] = {}
    for row in rows:
        series.setdefault(_series_label(row, keys), []).append(row)
    data = []
    for label, members in series.items():
        members = [r for r in members if "prune/sparsity" in r.stats and "test/acc" in r.stats]
        points = [(1 - r.stats["prune/sparsity"].mean, r) for r in members]
        points.sort(key=lambda p: -p[0])
        points = [(x, r) for x, r in points if x > 0]
        if not points:
            continue
        paper = [(x, r.paper["test/acc"]) for x, r in points if "test/acc" in r.paper]
        data.append(
            {
                "label": label,
                "remaining": [x for x, _ in points],
                "mean": [r.stats["test/acc"].mean * 100 for _, r in points],
                "std": [r.stats["test/acc"].std * 100 for _, r in points],
                "n": [r.stats["test/acc"].n for _, r in points],
                "paper": paper or None,
            }
        )
    if not data:
        return None
    dense_ref = None
    if len(dense) == 1:  # one reference line only when all rows share one dense model
        accs = [j.results["dense/test/acc"] for r in dense for j in r.jobs]
        stat = Stat.of(accs)
        dense_ref = (stat.mean * 100, 0.0 if math.isnan(stat.std) else stat.std * 100)
    return charts.accuracy_vs_remaining(data, out, dense=dense_ref, paper_dense=paper_dense)


def plot_setting(block: dict, rows: list[Row], out: Path):
    """A paper table's own axis (angle, frozen layers, ratio): ours with error bars, the paper's."""
    match = list(block.get("match") or [])
    if len(match) != 1 or not rows or "test/acc" not in rows[0].stats:
        return None
    key = match[0]
    if key == "prune.ratio":  # accuracy_vs_remaining.png shows it, on a log axis
        return None
    xs = [row.values.get(key) for row in rows]
    if not all(isinstance(x, (int, float)) for x in xs):
        return None
    paper = [
        (x, r.paper["test/acc"]) for x, r in zip(xs, rows, strict=True) if "test/acc" in r.paper
    ]
    series = [
        {
            "label": "ours",
            "x": xs,
            "mean": [r.stats["test/acc"].mean * 100 for r in rows],
            "std": [r.stats["test/acc"].std * 100 for r in rows],
            "n": [r.stats["test/acc"].n for r in rows],
            "paper": paper or None,
            "paper_label": f"paper {block.get('paper', '')}, {block.get('table', '')}",
        }
    ]
    title = (
        f"Paper {block.get('paper', '')}, {block.get('table', '')}: test accuracy, "
        "ours (mean ± std over repeats) and the paper's"
    )
    xlabel = AXIS_LABELS.get(key, key)
    return charts.accuracy_vs_setting(series, out, xlabel=xlabel, title=title)


def _repeat_curves(jobs: list[Job], stage_of) -> list[dict[int, float]]:
    """One validation curve per repeat: the mean over its jobs' curves of ``stage_of(job)``."""
    out = []
    for group in repeats(jobs):
        stages = [(j, stage_of(j)) for j in group]
        runs = [c for c in (val_curve(j.dir, st) for j, st in stages if st) if c]
        if runs:
            epochs, mean, _ = mean_curve(runs)
            out.append(dict(zip(epochs, mean, strict=True)))
    return out


def plot_convergence(rows: list[Row], dense: list[Row], keys: list[str], out: Path, limit: int):
    """Validation accuracy per epoch: the dense fine-tune(s) and each condition's retraining.

    Mean and std over repeats (seeds, folds); the jobs of one repeat are averaged first.
    """
    curves = []
    for row in dense:
        runs = _repeat_curves(row.jobs, lambda _job: "dense")
        if runs:
            epochs, mean, std = mean_curve(runs)
            label = "dense " + condition_label(row, [k for k in keys if not k.startswith("prune.")])
            curves.append(_curve(label.strip(), epochs, mean, std, len(runs)))
    for row in rows[:limit]:
        runs = _repeat_curves(row.jobs, final_stage)
        if runs:
            epochs, mean, std = mean_curve(runs)
            curves.append(_curve(condition_label(row, keys), epochs, mean, std, len(runs)))
    if not curves:
        return None
    return charts.convergence_curves(curves, out)


def _curve(label, epochs, mean, std, n) -> dict:
    return {
        "label": label,
        "epochs": epochs,
        "mean": [m * 100 for m in mean],
        "std": [s * 100 for s in std],
        "n": n,
    }


LAYER_PREFIX = "prune/sparsity/"


def layer_remaining(row: Row) -> dict[str, float]:
    """Per layer, the mean over the row's jobs of the fraction of its weights remaining."""
    per_layer: dict[str, list[float]] = {}
    for job in row.jobs:
        for key, value in job.results.items():
            if key.startswith(LAYER_PREFIX):
                per_layer.setdefault(key[len(LAYER_PREFIX) :], []).append(1 - value)
    return {layer: sum(v) / len(v) for layer, v in per_layer.items()}


def plot_layer_sparsity(rows: list[Row], keys: list[str], out: Path, limit: int = 8):
    """``layer_sparsity.png``: weights remaining per layer, one line per pruned condition (the
    first ``limit`` that have a per-layer profile). Returns how many conditions it drew."""
    profiled = [(row, layer_remaining(row)) for row in rows]
    profiled = [(row, p) for row, p in profiled if p][:limit]
    if not profiled:
        return 0
    layers = list(profiled[0][1])
    for _, p in profiled[1:]:
        layers += [layer for layer in p if layer not in layers]
    series = [
        {
            "label": row.label(keys),
            "remaining": [p.get(layer, float("nan")) for layer in layers],
        }
        for row, p in profiled
    ]
    floors = {row.jobs[0].config.get("prune.min_layer_density") for row, _ in profiled}
    floor = floors.pop() if len(floors) == 1 else None
    charts.layer_profile(series, layers, out, floor=floor if isinstance(floor, float) else None)
    return len(profiled)
