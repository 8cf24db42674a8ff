"""The report's tables: markdown (all conditions, one per paper table) and ``report.csv``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from fer_lottery.report.conditions import Row
from fer_lottery.report.stats import FRACTION_KEYS, METRICS

HEADERS = {
    "test/acc": "test acc %",
    "val/acc_best": "best val acc %",
    "prune/sparsity": "sparsity %",
    "prune/units_removed_frac": "units removed %",
    "prune/units_removed": "units removed",
    "prune/acc_before_retrain": "acc before retrain %",
    "dense/test/acc": "dense test acc %",
}


def _scale(metric: str) -> float:
    return 100.0 if metric in FRACTION_KEYS else 1.0


def _num(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return ""
    digits = 2 if metric in FRACTION_KEYS else 1
    return f"{value * _scale(metric):.{digits}f}"


def _mean_std(row: Row, metric: str) -> str:
    stat = row.stats.get(metric)
    if stat is None:
        return ""
    if math.isnan(stat.std):
        return _num(stat.mean, metric)
    return f"{_num(stat.mean, metric)} ± {_num(stat.std, metric)}"


def _ci(row: Row, metric: str) -> str:
    stat = row.stats.get(metric)
    if stat is None or math.isnan(stat.ci_low):
        return ""
    return f"[{_num(stat.ci_low, metric)}, {_num(stat.ci_high, metric)}]"


def _paper_in_ci(row: Row, metric: str) -> str:
    """Whether the paper's number lies inside our 95% CI: "yes", or by how much it misses."""
    stat, paper = row.stats.get(metric), row.paper.get(metric)
    if stat is None or paper is None or math.isnan(stat.ci_low):
        return ""
    ours_lo, ours_hi = stat.ci_low * _scale(metric), stat.ci_high * _scale(metric)
    if ours_lo <= paper <= ours_hi:
        return "yes"
    return f"no (paper {paper - stat.mean * _scale(metric):+.1f} pts)"


def markdown_table(head: list[str], lines: list[list[str]]) -> str:
    """A markdown table from a header and rows of cell strings."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def _value(value) -> str:
    return "" if value is None else str(value)


def main_table(rows: list[Row], keys: list[str]) -> str:
    """Every condition: keys, test accuracy (mean ± std, n, CI), paper, sparsity and more."""
    metrics = [m for m in METRICS if m != "test/acc" and any(m in r.stats for r in rows)]
    has_paper = any("test/acc" in r.paper for r in rows)
    head = [*keys, "test acc % (mean ± std)", "n", "95% CI"]
    head += ["paper test acc %", "paper in CI"] if has_paper else []
    head += [HEADERS[m] for m in metrics]
    lines = []
    for row in rows:
        cells = [_value(row.values.get(k)) for k in keys]
        n = row.stats["test/acc"].n if "test/acc" in row.stats else 0
        cells += [_mean_std(row, "test/acc"), str(n), _ci(row, "test/acc")]
        if has_paper:
            paper = row.paper.get("test/acc")
            cells += ["" if paper is None else f"{paper:.2f}", _paper_in_ci(row, "test/acc")]
        cells += [_mean_std(row, m) for m in metrics]
        lines.append(cells)
    return markdown_table(head, lines)


def comparison_table(block: dict, rows: list[Row], keys: list[str] | None = None) -> str:
    """One paper table: its keys (``keys``, default its ``match``), then ours beside the
    paper's for each metric it reports."""
    match = list(keys if keys is not None else block.get("match") or [])
    metrics = sorted(
        {k for row in block.get("rows") or [] for k in row if k not in ("at", "runs")},
        key=lambda m: METRICS.index(m) if m in METRICS else len(METRICS),
    )
    head = list(match)
    for m in metrics:
        head += [f"ours: {HEADERS.get(m, m)}", "n", "95% CI", f"paper: {HEADERS.get(m, m)}"]
        head += ["paper in CI"] if m in FRACTION_KEYS else []
    lines = []
    for row in rows:
        cells = [_value(row.values.get(k)) for k in match]
        for m in metrics:
            stat = row.stats.get(m)
            paper = row.paper.get(m)
            cells += [_mean_std(row, m), str(stat.n) if stat else "0", _ci(row, m)]
            cells += ["" if paper is None else f"{paper:g}"]
            cells += [_paper_in_ci(row, m)] if m in FRACTION_KEYS else []
        lines.append(cells)
    return markdown_table(head, lines)


def write_csv(path: Path, rows: list[Row], keys: list[str]) -> None:
    """One line per condition: keys, then mean/std/n/CI of each metric, then the paper's."""
    metrics = [m for m in METRICS if any(m in r.stats for r in rows)]
    papers = sorted({m for r in rows for m in r.paper})
    head = ["row", *keys]
    for m in metrics:
        head += [f"{m}/mean", f"{m}/std", f"{m}/n", f"{m}/ci95_low", f"{m}/ci95_high"]
    head += [f"paper/{m}" for m in papers]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        for row in rows:
            line: list[object] = ["dense" if row.dense else "pruned" if _pruned(row) else "run"]
            line += [_value(row.values.get(k)) for k in keys]
            for m in metrics:
                s = row.stats.get(m)
                line += [s.mean, s.std, s.n, s.ci_low, s.ci_high] if s else [""] * 5
            line += [row.paper.get(m, "") for m in papers]
            writer.writerow(line)


def _pruned(row: Row) -> bool:
    return not row.dense and all(j.pruned for j in row.jobs)
