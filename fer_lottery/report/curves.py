"""Convergence curves: validation accuracy per epoch of a job's stages, from Lightning's CSV log."""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

from fer_lottery.core import paths
from fer_lottery.report.collect import Job


def val_curve(job_dir: Path, stage: str) -> dict[int, float]:
    """Validation accuracy per epoch of one stage, from Lightning's CSV log."""
    path = paths.stage_csv(job_dir, stage) / paths.METRICS_CSV
    if not path.is_file():
        return {}
    out: dict[int, float] = {}
    with path.open() as f:
        for rec in csv.DictReader(f):
            if rec.get("val/acc"):
                out[int(rec["epoch"])] = float(rec["val/acc"])
    return out


def mean_curve(curves: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and std per epoch over the runs that reached that epoch."""
    epochs = sorted({e for c in curves for e in c})
    means, stds = [], []
    for e in epochs:
        vals = [c[e] for c in curves if e in c]
        means.append(statistics.fmean(vals))
        stds.append(statistics.stdev(vals) if len(vals) > 1 else float("nan"))
    return epochs, means, stds


def natural_key(name: str) -> list:
    """Sort key that compares digit runs as numbers, so ``retrain10`` comes after ``retrain9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def final_stage(job: Job) -> str | None:
    """The job's last retraining stage; None when it was tested without retraining."""
    names = [p.parent.name for p in (job.dir / paths.CSV).glob(f"retrain*/{paths.METRICS_CSV}")]
    stages = sorted(names, key=natural_key)
    return stages[-1] if stages else None
