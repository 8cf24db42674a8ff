"""Failed sweep jobs: recorded in ``failed.json``, summed up when the sweep ends.

Hydra's basic launcher stops a whole sweep at the first job that raises. One bad setting (a
ratio that empties a layer, a NaN loss) should not cost the other 24 jobs of a preset, so in a
multirun a failing job writes ``failed.json`` (the error, its traceback and the job's overrides)
and returns NaN. ``FailedJobs``, a Hydra callback, then lists the failed jobs and exits non-zero
after the sweep, and the report lists them beside the table.

One error shared by many jobs (no dataset, say) is printed in full once: a later job of the same
launch that fails the same way prints one line naming the first, and the closing summary gives
each distinct error once, with the count of jobs it stopped. A launch is one run of the sweep
command; ``FailedJobs`` stamps it in the sweep folder, so errors from earlier launches count
only in the summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback

from fer_lottery.core import paths
from fer_lottery.core.errors import DiskFullError
from fer_lottery.store.atomic import write_json_atomic

log = logging.getLogger("fer_lottery")

SHOWN_JOBS = 5  # job names the summary lists per error


def launch_id(sweep_dir: Path) -> str | None:
    """This launch's stamp (``FailedJobs`` writes it at the sweep's start), or None."""
    try:
        return (Path(sweep_dir) / paths.LAUNCH).read_text().strip() or None
    except OSError:
        return None


def record_failure(
    run_dir: Path,
    exc: BaseException,
    overrides: list[str],
    reason: str = "error",
    launch: str | None = None,
    error: str | None = None,
    traceback_text: str | None = None,
) -> None:
    """Write ``run_dir/failed.json``: why (``reason``: "error", or "terminated (pre-empted)"),
    the error's type and message (or ``error``, as it is), its traceback (or
    ``traceback_text``), overrides and launch. On a full disk nothing is written: the job's own
    error already says so."""
    if error is None:
        error = f"{type(exc).__name__}: {exc}"
        error = error if reason == "error" else f"{reason}: {error}"
    record = {
        "reason": reason,
        "error": error,
        "traceback": traceback_text or "".join(traceback.format_exception(exc)),
        "overrides": overrides,
        "launch": launch,
    }
    with contextlib.suppress(DiskFullError):
        write_json_atomic(Path(run_dir) / paths.FAILED, record)


def recorded_traceback(job: Path) -> str | None:
    """The traceback a job's ``failed.json`` holds already, or None."""
    try:
        return str(json.loads((job / paths.FAILED).read_text())["traceback"]) or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_error(job: Path) -> tuple[str, str | None]:
    """A failed job's error and launch (or why its ``failed.json`` cannot be read)."""
    try:
        record = json.loads((job / paths.FAILED).read_text())
        return str(record["error"]), record.get("launch")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{paths.FAILED} is unreadable ({type(exc).__name__}: {exc})", None


def failed_jobs(sweep_dir: Path) -> list[Path]:
    """Job folders under ``sweep_dir`` whose last attempt failed (a later success clears it)."""
    found = Path(sweep_dir).rglob(paths.FAILED)
    return sorted(p.parent for p in found if not (p.parent / paths.RESULTS).is_file())


def earlier_same_error(
    sweep_dir: Path, run_dir: Path, error: str, launch: str | None
) -> Path | None:
    """Another job of this launch that failed with ``error`` already, or None."""
    if launch is None:
        return None
    for job in failed_jobs(sweep_dir):
        if job.resolve() != Path(run_dir).resolve() and _read_error(job) == (error, launch):
            return job
    return None


def _jobs(sweep_dir: Path) -> list[Path]:
    """Every job folder of the sweep (each has Hydra's ``.hydra`` folder)."""
    return sorted(p.parent for p in Path(sweep_dir).rglob(".hydra") if p.is_dir())


def _asked(sweep_dir: Path) -> set[Path] | None:
    """The job folders this launch of a basic sweep was asked for (a folder of an earlier
    launch with other values is no job of this one), or None where the sweep does not say."""
    from fer_lottery.config.sweeps import expected_jobs

    try:
        names = expected_jobs(Path(sweep_dir))
    except (OSError, ValueError):
        return None
    return {Path(sweep_dir) / name for name in names} or None


def _finished(job: Path) -> bool:
    return (job / paths.RESULTS).is_file() or (job / paths.FOLDS).is_file()


def summary(sweep_dir: Path, shown_above: str | None = None) -> str | None:
    """The closing lines: each distinct error once with the jobs it stopped, then what finished.
    None when no job failed.

    ``shown_above``: the launch whose jobs printed their errors on this terminal (the basic and
    joblib launchers; submitit's jobs print into their own log files). Those errors were printed
    in full once already, so the summary points at them instead of repeating them.
    """
    asked = _asked(sweep_dir)
    failed = [j for j in failed_jobs(sweep_dir) if asked is None or j in asked]
    if not failed:
        return None
    by_error: dict[str, list[Path]] = {}
    launches: dict[str, str | None] = {}
    for job in failed:
        error, launch = _read_error(job)
        by_error.setdefault(error, []).append(job)
        launches.setdefault(error, launch)
    lines = [f"{len(failed)} job(s) of the sweep in {sweep_dir} failed:"]
    for error, jobs in by_error.items():
        names = [j.relative_to(sweep_dir).as_posix() for j in jobs]
        listed = ", ".join(names[:SHOWN_JOBS])
        if len(names) > SHOWN_JOBS:
            listed += f" and {len(names) - SHOWN_JOBS} more"
        kind = error.split(":", 1)[0]
        if shown_above is not None and launches[error] == shown_above:
            what = f"the {kind} printed above for {names[0]}"
        else:
            what = error.splitlines()[0] if error else "?"
        lines.append(
            f"  {listed}: {what}" if len(jobs) == 1 else f"  {len(jobs)} jobs ({listed}): {what}"
        )
    jobs = [j for j in _jobs(sweep_dir) if asked is None or j in asked]
    done = sum(_finished(j) for j in jobs)
    if done == 0:
        lines.append("No job of the sweep finished.")
    else:
        lines.append(f"{done} of the sweep's {len(jobs)} jobs finished.")
    lines.append(
        "Fix the error(s) and rerun the same command to run only the jobs that did not finish "
        "(finished jobs are skipped); each job's failed.json has the traceback."
    )
    return "\n".join(lines)


class FailedJobs(Callback):
    """Around a multirun: stamp the launch and write ``multirun.yaml`` if the sweeper does not;
    afterwards give each distinct error once, with the jobs it stopped, then exit non-zero."""

    def on_multirun_start(self, config, **kwargs) -> None:
        # The basic sweeper writes multirun.yaml itself; Optuna's does not. Job folder names
        # (fer_lottery.config.sweeps) read the swept keys from it, so write it when it is missing.
        from omegaconf import OmegaConf

        sweep_dir = Path(config.hydra.sweep.dir)
        path = sweep_dir / paths.MULTIRUN
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, path)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / paths.LAUNCH).write_text(stamp + "\n")

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        on_terminal = "BasicLauncher" in launcher or "Joblib" in launcher
        text = summary(sweep_dir, launch_id(sweep_dir) if on_terminal else None)
        if text is None:
            return
        log.error(text)
        # Hydra turns a callback's exception into a warning; the exit status must say it.
        raise SystemExit(1)
