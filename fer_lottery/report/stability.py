"""The report's linear mode connectivity section (``stability.enabled=true`` jobs): per
condition, the error barrier between the two retrainings (mean ± std over seeds), accuracy at
the ends and the midpoint, and ``stability.png``, test accuracy along the path, one line per
condition."""

from __future__ import annotations

import statistics
from pathlib import Path

from fer_lottery.plotting import charts
from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import Row, repeats
from fer_lottery.report.tables import markdown_table

INTRO = (
    "Each job retrained its pruned network twice from the same start weights and mask, with "
    "different SGD noise (batch order, augmentation, dropout), and evaluated the straight line "
    "between the two results at each α, the BatchNorm statistics recomputed on the training "
    "split at every point. Error barrier: the highest test error on the path minus the mean of "
    "the two ends, in points; near 0, the two retrainings found one linearly connected minimum "
    "(the ticket is stable to SGD noise; Frankle et al. 2020). Mean ± std over seeds (the jobs "
    "of one seed averaged first). Midpoint without recomputing: the ends' statistics averaged, "
    "for contrast."
)
HEAD = [
    "n",
    "test error barrier (pp)",
    "val error barrier (pp)",
    "test acc α=0 %",
    "test acc α=0.5 %",
    "test acc α=1 %",
    "min test acc on path %",
    "α=0.5, BN not recomputed %",
]


def _jobs_with_path(row: Row) -> list[Job]:
    return [j for j in row.jobs if isinstance(j.results.get("stability/test/acc"), list)]


def _per_repeat(jobs: list[Job], value) -> list[float]:
    """One value per repeat (seed, fold): the mean over its jobs of ``value(job)``."""
    return [statistics.fmean(value(j) for j in group) for group in repeats(jobs)]


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def _path_curve(jobs: list[Job]) -> tuple[list[float], list[float], list[float], int] | None:
    """α, mean and std (in %) of test accuracy along the path over repeats; None when the jobs'
    paths have different α."""
    alphas = {tuple(j.results["stability/alphas"]) for j in jobs}
    if len(alphas) != 1:
        return None
    (alpha,) = alphas
    per_repeat = [
        [
            statistics.fmean(100 * j.results["stability/test/acc"][i] for j in group)
            for i in range(len(alpha))
        ]
        for group in repeats(jobs)
    ]
    mean = [statistics.fmean(col) for col in zip(*per_repeat, strict=True)]
    std = [
        statistics.stdev(col) if len(col) > 1 else float("nan")
        for col in zip(*per_repeat, strict=True)
    ]
    return list(alpha), mean, std, len(per_repeat)


def stability_section(rows: list[Row], keys: list[str], out: Path, figures: list) -> list[str]:
    """The section, and ``stability.png`` added to ``figures``; nothing without such jobs."""
    with_path = [(row, _jobs_with_path(row)) for row in rows]
    with_path = [(row, jobs) for row, jobs in with_path if jobs]
    if not with_path:
        return []
    lines, curves = [], []
    for row, jobs in with_path:

        def at(alpha: float, j: Job) -> float:
            alphas = j.results["stability/alphas"]
            i = min(range(len(alphas)), key=lambda k: abs(alphas[k] - alpha))
            return 100 * j.results["stability/test/acc"][i]

        n = len(repeats(jobs))
        cells = [row.label(keys), str(n)]
        cells.append(_cell(_per_repeat(jobs, lambda j: 100 * j.results["stability/test/barrier"])))
        cells.append(_cell(_per_repeat(jobs, lambda j: 100 * j.results["stability/val/barrier"])))
        for alpha in (0.0, 0.5, 1.0):
            cells.append(_cell(_per_repeat(jobs, lambda j, a=alpha: at(a, j))))
        cells.append(_cell(_per_repeat(jobs, lambda j: 100 * min(j.results["stability/test/acc"]))))
        plain = [j for j in jobs if "stability/test/acc_mid_bn_interpolated" in j.results]
        cells.append(
            _cell(
                _per_repeat(
                    plain, lambda j: 100 * j.results["stability/test/acc_mid_bn_interpolated"]
                )
            )
        )
        lines.append(cells)
        curve = _path_curve(jobs)
        if curve is not None:
            alpha, mean, std, count = curve
            curves.append(
                {"label": row.label(keys), "alpha": alpha, "mean": mean, "std": std, "n": count}
            )
    md = ["## Linear mode connectivity (stability.enabled)\n", INTRO + "\n"]
    md += [markdown_table(["condition", *HEAD], lines), ""]
    if curves and charts.accuracy_along_path(curves, out / "stability.png"):
        figures.append(("Test accuracy along the line between two retrainings", "stability.png"))
        charts.plt.close("all")
    return md
