"""Finding the jobs of runs and sweeps: finished ones with their results, and those without.

A finished job is a folder with a ``results.json`` that the report can use (it parses and fits
``fer_lottery.store.results``). A job without usable results failed (its ``failed.json`` or its
log says why), was killed, never started (a job its sweep's ``multirun.yaml`` asked for that has
no folder), or has a ``results.json`` that does not parse or breaks the schema. The report lists
those with the reason, never drops them. For a job that ran as a SLURM task, the reason is the
scheduler's where it has one (cancelled, time limit, pre-empted, node failure, requeued n times),
read from what submitit and SLURM left in the sweep's ``.submitit/`` (``job.slurm_logs``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fer_lottery.config import flatten, schema_defaults
from fer_lottery.config.renamed import upgrade
from fer_lottery.config.sweeps import expected_jobs, swept_keys
from fer_lottery.core import paths
from fer_lottery.job.slurm_logs import FOLDER as SUBMITIT
from fer_lottery.job.slurm_logs import TaskLog, task_logs
from fer_lottery.store.results import ResultsError, read_results

# Repeats of one condition: averaged over, never grouped by.
REPEAT_KEYS = {"seed", "prune.seed", "data.fold"}
# One independent repeat: jobs with the same seed and fold share a dense model and a test split.
REPEAT_UNIT = ("seed", "data.fold")


@dataclass
class Job:
    """One finished job: its results, its flat config, and its condition (blanked keys)."""

    dir: Path
    results: dict
    config: dict
    condition: dict = field(default_factory=dict)
    swept: frozenset[str] = frozenset()  # the keys its sweep sweeps (none for a single run)

    @property
    def repeat(self) -> tuple:
        """The independent repeat the job belongs to: its seed and fold (not ``prune.seed``)."""
        return tuple(self.config.get(k) for k in REPEAT_UNIT)

    @property
    def pruned(self) -> bool:
        return "prune/sparsity" in self.results


@dataclass
class Problem:
    """A job without usable results: failed, killed, still running, never started, or with a
    results.json that does not parse or breaks the schema."""

    name: str
    reason: str
    bad_results: bool = False  # its results.json does not parse or breaks the schema


def _job_config(results: dict) -> dict:
    """The flat config, plus the device kind the job trained on (``device.accelerator``), so that
    CPU and GPU jobs are never one condition (files from before it was recorded: None).

    A key the recorded config lacks (written before the key existed) takes its schema default,
    which is what that version did, as for a relaunch (``config.config_changes``): old and new
    files of one condition stay one condition. A key that has moved since
    (``config.renamed``) is read at its new place."""
    flat = flatten(upgrade(results["config"]))
    defaults = {k: v for k, v in schema_defaults().items() if k not in flat}
    return {**defaults, **flat, "device.accelerator": results.get("device/accelerator")}


def _log_error(job: Path) -> str | None:
    """Why a job without results stopped, from its Hydra log: the last ERROR record, and when a
    traceback follows it (``log.exception``), the exception's own last line after it."""
    for log in job.glob("*.log"):
        lines = log.read_text(errors="replace").splitlines()
        errors = [i for i, ln in enumerate(lines) if "[ERROR]" in ln]
        if errors:
            message = lines[errors[-1]].split("[ERROR] - ", 1)[-1]
            after = lines[errors[-1] + 1 :]
            if after and after[0].startswith("Traceback"):
                end = next((i for i, ln in enumerate(after) if ln.startswith("[")), len(after))
                exception = next((ln for ln in reversed(after[:end]) if ln.strip()), "")
                message = f"{message}: {exception.strip()}"
            return message
    return None


def _failure(job: Path) -> str:
    """The error a job's ``failed.json`` records (or why that file cannot be read)."""
    try:
        return str(json.loads((job / paths.FAILED).read_text())["error"])
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        return f"{paths.FAILED} is unreadable ({type(exc).__name__}: {exc})"


def _sweep_keys(job: Path, top: Path, known: dict[Path, frozenset[str]]) -> frozenset[str]:
    """The keys swept by the sweep that holds ``job`` (the nearest ``multirun.yaml`` above it,
    up to ``top``); none for a job outside a sweep."""
    for folder in [job, *job.parents]:
        if folder in known:
            return known[folder]
        if (folder / paths.MULTIRUN).is_file():
            known[folder] = frozenset(swept_keys(folder / paths.MULTIRUN) or ())
            return known[folder]
        if folder == top:
            break
    return frozenset()


def _scheduler_log(job: Path, top: Path, known: dict[Path, dict[str, TaskLog]]) -> TaskLog | None:
    """What SLURM and submitit said of ``job``'s last task, when its sweep ran on SLURM."""
    for folder in [job.parent, *job.parent.parents]:
        if folder not in known and (folder / SUBMITIT).is_dir():
            known[folder] = task_logs(folder)
        if folder in known:
            return known[folder].get(job.relative_to(folder).as_posix())
        if folder == top:
            break
    return None


def _recorded_launch(job: Path) -> str | None:
    try:
        return json.loads((job / paths.FAILED).read_text()).get("launch")
    except (OSError, ValueError, AttributeError):
        return None


def _reason(job: Path, scheduler: TaskLog | None) -> str:
    """Why a job has no results: the scheduler's word first (unless a later launch, on another
    launcher, recorded the job since), then failed.json, then its log."""
    if scheduler is not None and _recorded_launch(job) not in (None, scheduler.launch):
        scheduler = None
    if scheduler is not None and scheduler.ended is not None:
        return scheduler.reason() or scheduler.ended
    if (job / paths.FAILED).is_file():
        reason = "failed: " + _failure(job)
    else:
        error = _log_error(job)
        reason = f"failed: {error}" if error else "no results.json (killed or unfinished)"
    reason = reason.splitlines()[0] if reason else reason
    if scheduler is not None and scheduler.requeues:
        reason += f" ({scheduler.reason()})"
    return reason


def distinct(dirs: list[Path]) -> list[Path]:
    """The folders to read, each once: one given twice, or inside another one given, is read
    with that one (a job reached twice is one job)."""
    kept: list[Path] = []
    for d in sorted({Path(d).resolve() for d in dirs}, key=lambda p: len(p.parts)):
        if not any(d.is_relative_to(k) for k in kept):
            kept.append(d)
    order = [Path(d).resolve() for d in dirs]
    return sorted(kept, key=order.index)


def collect(dirs: list[Path]) -> tuple[list[Job], list[Problem]]:
    """Every finished job under ``dirs``, and every job of their sweeps without usable results."""
    jobs: list[Job] = []
    problems: list[Problem] = []
    swept_by_sweep: dict[Path, frozenset[str]] = {}
    logs_by_sweep: dict[Path, dict[str, TaskLog]] = {}
    for d in distinct(dirs):
        for path in sorted(d.rglob(paths.RESULTS)):
            try:
                results = read_results(path)
            except ResultsError as exc:
                reason = f"{path.name}: {'; '.join(exc.reasons)}"
                problems.append(Problem(str(path.parent), reason, bad_results=True))
                continue
            swept = _sweep_keys(path.parent, d, swept_by_sweep)
            jobs.append(Job(path.parent, results, _job_config(results), swept=swept))
        seen: set[str] = set()
        # Job folders: Hydra's .hydra, or a failed.json alone (a SLURM task that never started,
        # recorded by the launcher).
        candidates = {p.parent for p in d.rglob(".hydra")} | {
            p.parent
            for p in d.rglob(paths.FAILED)
            if not p.parent.match(paths.FOLD_GLOB) and SUBMITIT not in p.parts
        }
        for job in sorted(candidates):
            seen.add(job.name)
            if (job / paths.RESULTS).is_file() or (job / paths.FOLDS).is_file():
                continue  # listed above, as a finished job or as one without usable results
            if list(job.glob(f"{paths.FOLD_GLOB}/{paths.RESULTS}")):
                continue  # a k-fold job still running: its finished folds are counted
            reason = _reason(job, _scheduler_log(job, d, logs_by_sweep))
            problems.append(Problem(str(job), reason))
        for sweep in sorted(p.parent for p in d.rglob(paths.MULTIRUN)):
            for name in expected_jobs(sweep):
                if name not in seen and not (sweep / name).exists():
                    problems.append(Problem(str(sweep / name), "never started"))
    return jobs, problems
