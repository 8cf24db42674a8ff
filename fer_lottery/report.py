"""``python -m fer_lottery.report DIR...``: tables, CSV and plots of runs and sweeps.

Reads every ``results.json`` under the given folders and groups the jobs by the keys that vary
between them, except the seed and the fold (those are repeats). Each row gives mean +- std, n
and a 95% confidence interval (t over repeats; a single run gets the binomial interval of its
test split). Where a preset stores a paper's published numbers (``published:`` in
``conf/experiment/*.yaml``), they stand beside ours, with whether the paper's number lies in our
interval. Jobs that failed, were killed or never started are listed, never dropped.

Writes ``report.md``, ``report.csv`` and PNG plots into ``--out`` (default: the first folder).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import statistics
import sys
import textwrap
from pathlib import Path

from fer_lottery import report_plots
from fer_lottery.data import CLASSES
from fer_lottery.report_data import (
    FRACTION_KEYS,
    METRICS,
    Job,
    Problem,
    Row,
    Stat,
    collect,
    comparison_rows,
    condition_keys,
    dense_rows,
    mean_curve,
    paper_values,
    published_blocks,
    rows_of,
    val_curve,
)

log = logging.getLogger(__name__)

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


def _table(head: list[str], lines: list[list[str]]) -> str:
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
    return _table(head, lines)


def comparison_table(block: dict, rows: list[Row]) -> str:
    """One paper table: its keys, then ours beside the paper's for each metric it reports."""
    match = list(block.get("match") or [])
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
    return _table(head, lines)


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


# -- plots ---------------------------------------------------------------------------------------

SWEEP_AXES = ("prune.ratio", "prune.angle", "prune.norm_std")
AXIS_LABELS = {
    "prune.angle": "distinctiveness angle threshold (degrees)",
    "prune.norm_std": "norm pre-filter (standard deviations)",
    "model.frozen_layers": "frozen layers",
    "prune.ratio": "fraction of weights pruned",
}


def _series_label(row: Row, keys: list[str]) -> str:
    """``magnitude, rewind=none`` plus any other swept prune key that is not the x axis."""
    config = row.jobs[0].config
    parts = [str(config.get("prune.method")), f"rewind={config.get('prune.rewind')}"]
    for k in keys:
        value = row.values.get(k)
        if k.startswith("prune.") and k not in (*SWEEP_AXES, "prune.method", "prune.rewind"):
            if value is not None:
                parts.append(f"{k.split('.')[-1]}={value}")
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
    return report_plots.accuracy_vs_remaining(data, out, dense=dense_ref, paper_dense=paper_dense)


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
    return report_plots.accuracy_vs_setting(series, out, xlabel=xlabel, title=title)


def plot_convergence(rows: list[Row], dense: list[Row], keys: list[str], out: Path, limit: int):
    """Validation accuracy per epoch: the dense fine-tune(s) and each condition's retraining."""
    curves = []
    for row in dense:
        runs = [c for c in (val_curve(j.dir, "dense") for j in row.jobs) if c]
        if runs:
            epochs, mean, std = mean_curve(runs)
            label = "dense " + _label(row, [k for k in keys if not k.startswith("prune.")])
            curves.append(_curve(label.strip(), epochs, mean, std, len(runs)))
    for row in rows[:limit]:
        stages = [(j, _final_stage(j)) for j in row.jobs]
        runs = [c for c in (val_curve(j.dir, st) for j, st in stages if st) if c]
        if runs:
            epochs, mean, std = mean_curve(runs)
            curves.append(_curve(_label(row, keys), epochs, mean, std, len(runs)))
    if not curves:
        return None
    return report_plots.convergence_curves(curves, out)


def _curve(label, epochs, mean, std, n) -> dict:
    return {
        "label": label,
        "epochs": epochs,
        "mean": [m * 100 for m in mean],
        "std": [s * 100 for s in std],
        "n": n,
    }


def _label(row: Row, keys: list[str]) -> str:
    parts = [f"{k.split('.')[-1]}={row.values[k]}" for k in keys if row.values.get(k) is not None]
    return ", ".join(parts)


def _final_stage(job: Job) -> str | None:
    """The job's last retraining stage; None when it was tested without retraining."""
    stages = sorted(p.parent.name for p in (job.dir / "csv").glob("retrain*/metrics.csv"))
    return stages[-1] if stages else None


def per_class(block: dict | None, rows: list[Row], dense: list[Row]) -> tuple[str, dict, dict, Row]:
    """Per-class precision/recall/specificity of the best condition, mean and std over runs.

    A preset can ask for another stage's scores (paper B's Table 2 is the dense model's:
    ``published.per_class.prefix: dense/test``).
    """
    prefix = (block or {}).get("per_class", {}).get("prefix", "test")
    pool = dense if prefix.startswith("dense/") and dense else rows
    metric = "test/acc"
    best = max(pool, key=lambda r: r.stats[metric].mean if metric in r.stats else -1)
    mean: dict[str, list[float]] = {}
    std: dict[str, list[float]] = {}
    for score in ("precision", "recall", "specificity"):
        mean[score], std[score] = [], []
        for cls in CLASSES:
            vals = [j.results.get(f"{prefix}/{score}/{cls}") for j in best.jobs]
            vals = [float(v) for v in vals if v is not None]
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


# -- the report ----------------------------------------------------------------------------------


def _paper_sections(blocks: list[dict], jobs: list[Job], out: Path, figures: list) -> list[str]:
    """One section per paper table: ours beside the published numbers, and its plot."""
    md: list[str] = []
    for block in blocks:
        comp = comparison_rows(block, jobs)
        title = f"Paper {block.get('paper', '')}, {block.get('table', '')}"
        md += [f"## {title}: ours beside the paper\n", f"{block.get('caption', '')}\n"]
        if block.get("rows"):
            md += [comparison_table(block, comp), ""]
        else:
            md += ["The paper gives this as a figure only: no numbers to compare.\n"]
        if block.get("dense"):
            d = block["dense"]
            md += [f"Paper's dense model: {d.get('test/acc')} ± {d.get('std', '?')} % test.\n"]
        name = f"paper_{block.get('paper', '')}_{block.get('table', '')}".lower()
        name = "".join(c if c.isalnum() else "_" for c in name).strip("_") + ".png"
        if block.get("rows") and plot_setting(block, comp, out / name) is not None:
            figures.append((f"{title}, ours and the paper's", name))
            report_plots.plt.close("all")
    return md


def _per_class_section(
    blocks: list[dict], rows: list[Row], dense: list[Row], keys: list[str], out: Path, figures
) -> list[str]:
    """Per-class table of the best condition (beside paper B's Table 2), and its confusion."""
    block = next((b for b in blocks if b.get("per_class")), None)
    prefix, mean, std, best = per_class(block, rows, dense)
    paper = {k: block["per_class"][k] for k in mean} if block else None
    best_label = _label(best, [k for k in keys if not best.dense or not k.startswith("prune.")])
    best_label = best_label or "all runs"
    md = [f"## Per-class scores ({prefix}, best condition: {best_label}, n={len(best.jobs)})\n"]
    lines = [[s, *(f"{v:.2f}" if not math.isnan(v) else "" for v in mean[s])] for s in mean]
    if paper:
        lines += [[f"{s} (paper)", *(f"{v:.2f}" for v in paper[s])] for s in paper]
    md += [_table(["score", *CLASSES], lines), ""]
    report_plots.per_class_table(
        mean,
        list(CLASSES),
        out / "per_class.png",
        paper=paper,
        title=f"Per-class scores ({prefix}), {best_label}, n={len(best.jobs)}",
        std=std,
    )
    figures.append(("Per-class precision, recall, specificity", "per_class.png"))
    matrix = _confusion_sum(best.jobs, prefix)
    if matrix:
        report_plots.confusion(
            matrix,
            list(CLASSES),
            out / "confusion.png",
            title=f"Confusion ({prefix}), {best_label}, summed over {len(best.jobs)} run(s)",
        )
        figures.append(("Confusion matrix", "confusion.png"))
    report_plots.plt.close("all")
    return md


def build(dirs: list[Path], out: Path, curves: list[str] | None = None, limit: int = 8) -> str:
    """Collect, aggregate, write report.md, report.csv and the PNGs into ``out``; return the md."""
    jobs, problems = collect(dirs)
    if not jobs:
        raise FileNotFoundError(f"no results.json under {', '.join(map(str, dirs))}")
    out.mkdir(parents=True, exist_ok=True)
    keys = condition_keys(jobs)
    pruned = [j for j in jobs if j.pruned]
    dense = dense_rows(pruned, keys) if pruned else []
    rows = rows_of(pruned, keys) if pruned else rows_of(jobs, keys)
    blocks = published_blocks(jobs)
    for block in blocks:
        match = block.get("match") or []
        for row in rows:
            if any(j.results.get("config", {}).get("published") == block for j in row.jobs):
                row.paper = paper_values(block, {k: row.jobs[0].config.get(k) for k in match})

    md = [f"# fer_lottery report\n\nRuns under: {', '.join(f'`{d}`' for d in dirs)}  "]
    md.append(
        f"{len(jobs)} finished job(s), {len(problems)} failed or missing; "
        f"grouped by {', '.join(f'`{k}`' for k in keys) or 'nothing (one condition)'}; "
        "repeats (seeds, folds) pooled. Accuracies are on the held-out test split, in %. "
        "95% CI: Student t over repeats; a single run (or repeats that agree exactly) gets the "
        "binomial (Wilson) interval of its test predictions.\n"
    )
    figures: list[tuple[str, str]] = []
    md += _paper_sections(blocks, jobs, out, figures)
    md += ["## All conditions\n", main_table(dense + rows, keys), ""]
    paper_dense = next(
        (
            (float(b["dense"]["test/acc"]), float(b["dense"].get("std", 0)))
            for b in blocks
            if b.get("dense")
        ),
        None,
    )
    if pruned and plot_remaining(rows, dense, keys, out / "accuracy_vs_remaining.png", paper_dense):
        figures.append(("Test accuracy vs weights remaining", "accuracy_vs_remaining.png"))
        report_plots.plt.close("all")
    chosen = _choose(rows, curves) if curves else rows
    if len(chosen) > limit:
        md.append(
            f"Convergence plot: the first {limit} of {len(chosen)} conditions "
            "(choose with --curves KEY=VALUE).\n"
        )
    if plot_convergence(chosen, dense, keys, out / "convergence.png", limit):
        figures.append(("Validation accuracy per epoch", "convergence.png"))
        report_plots.plt.close("all")
    md += _per_class_section(blocks, rows, dense, keys, out, figures)
    if figures:
        md += ["## Figures\n"] + [f"- {text}: ![{text}]({name})" for text, name in figures] + [""]
    md += _problems_md(problems)
    write_csv(out / "report.csv", dense + rows, keys)
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    return text


def _choose(rows: list[Row], filters: list[str]) -> list[Row]:
    """The rows that match any of the ``KEY=VALUE`` filters."""
    wanted = [f.split("=", 1) for f in filters]
    return [r for r in rows if any(str(r.values.get(k)) == v for k, v in wanted)]


def _problems_md(problems: list[Problem]) -> list[str]:
    if not problems:
        return ["All jobs finished.\n"]
    lines = [f"## {len(problems)} job(s) without results\n"]
    lines += [f"- `{p.name}`: {p.reason}" for p in problems]
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lottery.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    parser.add_argument(
        "--curves",
        nargs="*",
        metavar="KEY=VALUE",
        help="conditions to draw in convergence.png, e.g. prune.ratio=0.5 prune.ratio=0.9",
    )
    parser.add_argument("--max-curves", type=int, default=8, help="at most this many curves")
    args = parser.parse_args(argv)
    absent = [d for d in args.dirs if not d.is_dir()]
    if absent:
        print(f"error: no such folder: {', '.join(map(str, absent))}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    try:
        text = build(args.dirs, out, args.curves, args.max_curves)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nWritten: {out / 'report.md'}, {out / 'report.csv'} and the PNGs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
