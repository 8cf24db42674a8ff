"""Per-class precision, recall and specificity of the best condition, and its confusion matrix."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from fer_lottery.core.classes import CLASSES
from fer_lottery.plotting import charts
from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import Row, condition_label, repeat_means, repeats
from fer_lottery.report.tables import markdown_table


def per_class(block: dict | None, rows: list[Row], dense: list[Row]) -> tuple[str, dict, dict, Row]:
    """Per-class precision/recall/specificity of the best condition, mean and std over repeats.

    The best condition has the highest mean validation accuracy: the test split never takes
    part in selection. A preset can ask for another stage's scores (paper B's Table 2 is the
    dense model's: ``published.per_class.prefix: dense/test``); dense rows hold that stage's
    validation accuracy under ``val/acc_best``.
    """
    prefix = (block or {}).get("per_class", {}).get("prefix", "test")
    pool = dense if prefix.startswith("dense/") and dense else rows
    metric = "val/acc_best"
    best = max(pool, key=lambda r: r.stats[metric].mean if metric in r.stats else -1)
    mean: dict[str, list[float]] = {}
    std: dict[str, list[float]] = {}
    for score in ("precision", "recall", "specificity"):
        mean[score], std[score] = [], []
        for cls in CLASSES:
            vals = repeat_means(best.jobs, f"{prefix}/{score}/{cls}")
            mean[score].append(statistics.fmean(vals) if vals else float("nan"))
            std[score].append(statistics.stdev(vals) if len(vals) > 1 else float("nan"))
    return prefix, mean, std, best


def _confusion_sum(jobs: list[Job], prefix: str) -> list[list[int]] | None:
    mats = [j.results.get(f"{prefix}/confusion") for j in jobs]
    mats = [m for m in mats if m]
    if not mats:
        return None
    k = len(mats[0])
    return [[sum(m[i][j] for m in mats) for j in range(k)] for i in range(k)]


def per_class_section(
    blocks: list[dict], rows: list[Row], dense: list[Row], keys: list[str], out: Path, figures
) -> list[str]:
    """Per-class table of the best condition (beside paper B's Table 2), and its confusion."""
    block = next((b for b in blocks if b.get("per_class")), None)
    prefix, mean, std, best = per_class(block, rows, dense)
    paper = {k: block["per_class"][k] for k in mean} if block else None
    best_label = condition_label(
        best, [k for k in keys if not best.dense or not k.startswith("prune.")]
    )
    best_label = best_label or "all runs"
    n = len(repeats(best.jobs))
    md = [f"## Per-class scores ({prefix}, best condition: {best_label}, n={n})\n"]
    lines = [[s, *(f"{v:.2f}" if not math.isnan(v) else "" for v in mean[s])] for s in mean]
    if paper:
        lines += [[f"{s} (paper)", *(f"{v:.2f}" for v in paper[s])] for s in paper]
    md += [markdown_table(["score", *CLASSES], lines), ""]
    charts.per_class_table(
        mean,
        list(CLASSES),
        out / "per_class.png",
        paper=paper,
        title=f"Per-class scores ({prefix}), {best_label}, n={n}",
        std=std,
    )
    figures.append(("Per-class precision, recall, specificity", "per_class.png"))
    matrix = _confusion_sum(best.jobs, prefix)
    if matrix:
        charts.confusion(
            matrix,
            list(CLASSES),
            out / "confusion.png",
            title=f"Confusion ({prefix}), {best_label}, summed over {len(best.jobs)} run(s)",
        )
        figures.append(("Confusion matrix", "confusion.png"))
    charts.plt.close("all")
    return md
