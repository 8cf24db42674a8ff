"""How far a sweep has come: one line after each job.

``sweep <folder>: 3 of 6 jobs done, 1 failed; 2 min 10 s elapsed; about 4 min left (a dense
training ~45 s, a dense-cache hit ~20 s, 2 at a time)``

Everything is read from the sweep folder, so the line is the same whichever process prints it:
the job's own (``SweepProgress``, a Hydra callback, under the basic and joblib launchers) or the
sweep command as it collects SLURM's tasks (``hydra_plugins/fer_lottery_slurm``). The estimate
comes from the finished jobs' own times (``time/total_s``), taken apart for the jobs that trained
their dense model and the ones that found it in the cache, which cost much less.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback

from fer_lottery.core import paths
from fer_lottery.job.failures import launch_id

TRAINED = ("miss", "resumed", "off")  # dense/cache of a job that trained its dense model


@dataclass
class Progress:
    """The state of a sweep, read from its folder."""

    total: int
    done: int = 0
    failed: int = 0
    trained_s: list[float] = field(default_factory=list)  # jobs that trained a dense model
    hit_s: list[float] = field(default_factory=list)  # jobs that found it in the cache
    started: float | None = None  # when the sweep was launched (its multirun.yaml)
    busy_s: float = 0.0  # the finished jobs' own times since then

    @property
    def left(self) -> int:
        return max(self.total - self.done - self.failed, 0)


def read_progress(sweep_dir: Path, total: int | None = None) -> Progress:
    """The jobs of ``sweep_dir`` done and failed, out of ``total`` (default: the jobs its
    ``multirun.yaml`` asks for, else the job folders there)."""
    from fer_lottery.config.sweeps import expected_jobs

    multirun, stamp = sweep_dir / paths.MULTIRUN, sweep_dir / paths.LAUNCH
    names = expected_jobs(sweep_dir) if multirun.is_file() else []
    folders = {p.parent for p in sweep_dir.glob(f"*/{paths.RESULTS}")}
    folders |= {p.parent for p in sweep_dir.glob(f"*/{paths.FOLDS}")}
    folders |= {p.parent for p in sweep_dir.glob(f"*/{paths.FAILED}")}
    if names:  # a folder left by an earlier launch with other values is no job of this one
        folders &= {sweep_dir / name for name in names}
    total = total or len(names) or len(folders)
    # This launch began when FailedJobs stamped it (else when Hydra wrote multirun.yaml).
    begun = stamp if stamp.is_file() else multirun
    started = begun.stat().st_mtime if begun.is_file() else None
    out = Progress(total=total, started=started)
    launch = launch_id(sweep_dir)
    for job in sorted(folders):
        if not _reached(job, started):
            continue  # a relaunch has not come to it yet: what it holds may be stale
        finished = _finished(job)
        if finished is None:
            # A failure of an earlier launch of this sweep is a job that runs again now.
            recorded = (_read(job / paths.FAILED) or {}).get("launch")
            out.failed += recorded in (None, launch)
            continue
        out.done += 1
        seconds, cache, written = finished
        if seconds is None:
            continue
        (out.trained_s if cache in TRAINED else out.hit_s).append(seconds)
        if started is not None and written >= started:
            out.busy_s += seconds
    return out


def _reached(job: Path, started: float | None) -> bool:
    """Whether this launch has started ``job`` (Hydra writes its ``.hydra/config.yaml`` as the
    job starts, also for a job that then finds itself finished)."""
    config = job / ".hydra" / "config.yaml"
    if started is None or not config.is_file():
        return started is None
    return config.stat().st_mtime >= started - 1.0


def _finished(job: Path) -> tuple[float | None, object, float] | None:
    """A finished job's own time, its dense cache state and when it ended; None if it has not
    finished. A k-fold job's time is its folds' added up."""
    results = _read(job / paths.RESULTS)
    if results is not None:
        seconds = results.get("time/total_s")
        seconds = float(seconds) if isinstance(seconds, int | float) else None
        return seconds, results.get("dense/cache"), (job / paths.RESULTS).stat().st_mtime
    if _read(job / paths.FOLDS) is None:
        return None
    folds = [_read(p) or {} for p in sorted(job.glob(f"{paths.FOLD_GLOB}/{paths.RESULTS}"))]
    times = [f.get("time/total_s") for f in folds if isinstance(f.get("time/total_s"), int | float)]
    cache = folds[0].get("dense/cache") if folds else None
    return (float(sum(times)) if times else None), cache, (job / paths.FOLDS).stat().st_mtime


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def duration(seconds: float) -> str:
    """``45 s``, ``2 min 10 s``, ``3 h 05 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(sweep_dir: Path, total: int | None = None, now: float | None = None) -> str:
    """The sweep's progress as one line (see the module doc)."""
    p = read_progress(Path(sweep_dir), total)
    now = time.time() if now is None else now
    line = f"sweep {Path(sweep_dir).name}: {p.done} of {p.total} jobs done"
    line += f", {p.failed} failed" if p.failed else ""
    if p.started is None:
        return line
    elapsed = max(now - p.started, 0.0)
    line += f"; {duration(elapsed)} elapsed"
    if not p.left:
        return line + "; nothing left"
    known = p.trained_s + p.hit_s
    if not known:
        return line + f"; {p.left} left (no finished job to estimate from yet)"
    # The jobs left train their dense model as often as the finished ones did.
    share = len(p.trained_s) / len(known)
    each = {k: statistics.fmean(v) for k, v in (("t", p.trained_s), ("h", p.hit_s)) if v}
    per_job = share * each.get("t", each.get("h", 0.0)) + (1 - share) * each.get("h", 0.0)
    parallel = max(1, round(p.busy_s / elapsed)) if elapsed > 0 else 1
    left_s = p.left * per_job / parallel
    parts = [f"a dense training ~{duration(each['t'])}"] if "t" in each else []
    parts += [f"a dense-cache hit ~{duration(each['h'])}"] if "h" in each else []
    parts += [f"{parallel} at a time"] if parallel > 1 else []
    return line + f"; about {duration(left_s)} left ({', '.join(parts)})"


class SweepProgress(Callback):
    """After each job of a sweep, its progress line on stdout (under the basic and joblib
    launchers; SLURM's tasks run elsewhere, and the sweep command prints it as it collects
    them)."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
        launcher = str(hydra.launcher.get("_target_", "")).lower()
        if hydra.mode != RunMode.MULTIRUN or "slurm" in launcher or "submitit" in launcher:
            return
        total = hydra.sweeper.get("n_trials")  # Optuna: the trials it was asked for
        try:
            line = progress_line(Path(hydra.sweep.dir), total)
        except Exception as exc:  # a progress line never fails a job
            line = f"sweep progress unavailable ({type(exc).__name__}: {exc})"
        print(line, flush=True)
