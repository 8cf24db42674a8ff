"""A job's tracker runs: opened when the job starts, continued when a killed job resumes, ended
with the job's final numbers, marked stale when a relaunch with another config replaces them.

``logger.mlflow`` and ``logger.wandb`` (``logger=[tensorboard,mlflow]``) name the trackers; the
run ids live in ``<run dir>/trackers.json``. A tracker that is missing, does not answer or fails
later gets one warning naming it and the fix, and the job goes on without it: its results on
disk are the record, and they are the same with or without a tracker.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fer_lottery.config import flatten, resolved
from fer_lottery.core import paths
from fer_lottery.store.atomic import move_aside, write_json_atomic
from fer_lottery.tracking.backends import BACKENDS, Unavailable, Where

log = logging.getLogger(__name__)


class JobTrackers:
    """The tracker runs of one job (none when no tracker is asked for, or none works)."""

    def __init__(self, backends: list | None = None, state_file: Path | None = None):
        self.backends = list(backends or [])
        self.tags: dict[str, str] = {}
        self.state_file = state_file

    def stage_loggers(self, stage: str) -> list:
        """The Lightning loggers of ``stage``: one per tracker, writing ``<stage>/<metric>``."""
        out = []
        for backend in list(self.backends):
            logger = self._call(backend, backend.stage_logger, stage, self._guard_for(backend))
            if logger is not None:
                out.append(logger)
        return out

    def replay(self, stage: str, metrics_csv: Path) -> None:
        """Send a stage that this job did not train (a dense model from the cache) to the
        trackers from its CSV, so that every job's run holds every stage's curves."""
        state = _read(self.state_file) if self.state_file else {}
        if not self.backends or not metrics_csv.is_file() or stage in state.get("sent", []):
            return  # a resumed job sent it in its first attempt
        loggers = self.stage_loggers(stage)
        with metrics_csv.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(float(row.get("step") or 0))
                    values = {
                        k: float(v)
                        for k, v in row.items()
                        if k not in ("step", None) and v not in ("", None)
                    }
                except (TypeError, ValueError):
                    continue  # a row the CSV writer did not finish
                for logger in loggers:
                    logger.log_metrics(values, step)
        self.sent(stage)

    def sent(self, stage: str) -> None:
        """``stage``'s curves are in the trackers (trained here, or replayed): a resumed job does
        not send them again."""
        if not self.backends or self.state_file is None:
            return
        state = _read(self.state_file)
        state["sent"] = list(dict.fromkeys([*state.get("sent", []), stage]))
        write_json_atomic(self.state_file, state)

    def finish(self, results: dict[str, Any]) -> None:
        """The job's final numbers, and the tags known only at its end (the dense cache key)."""
        tags = {**self.tags, "dense_cache_key": str(results.get("dense/cache_key"))}
        for backend in list(self.backends):
            self._call(backend, backend.finish, results, tags)

    def close(self, status: str) -> None:
        for backend in list(self.backends):
            self._call(backend, backend.close, status)
        self.backends = []

    def _guard_for(self, backend) -> Callable:
        def guard(fn: Callable, *args: Any) -> None:
            if backend in self.backends:
                self._call(backend, fn, *args)

        return guard

    def _call(self, backend, fn: Callable, *args: Any):
        try:
            return fn(*args)
        except Exception as exc:  # a tracker never fails the job
            self.backends.remove(backend)
            _warn(backend.name, str(exc) or type(exc).__name__, _fix(backend.name))
            return None


_NONE = JobTrackers()
_current: JobTrackers = _NONE


def current() -> JobTrackers:
    """The trackers of the job running in this process (none outside ``open_trackers``)."""
    return _current


def _fix(name: str) -> str:
    if name == "mlflow":
        return "check logger.mlflow.tracking_uri, or drop mlflow from logger"
    return "check logger.wandb, or drop wandb from logger"


def _warn(name: str, problem: str, fix: str) -> None:
    log.warning(
        "logger=%s: %s; the job goes on without it (its results on disk are the record): %s",
        name,
        problem.splitlines()[0] if problem else problem,
        fix,
    )


def _where(run_dir: Path) -> Where:
    """The job's sweep (its folder groups the sweep's tracker runs) and its name in it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    group_dir = run_dir
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = Path(HydraConfig.get().sweep.dir).resolve()
        if run_dir.resolve().is_relative_to(sweep):
            group_dir = sweep
    name = (
        run_dir.resolve().relative_to(group_dir).as_posix()
        if group_dir != run_dir
        else run_dir.name
    )
    return Where(run_dir, group_dir, str(group_dir.resolve()), name)


def _asked(cfg: DictConfig) -> list[str]:
    node = cfg.get("logger") or {}
    return [name for name in BACKENDS if node.get(name) is not None]


@contextlib.contextmanager
def open_trackers(cfg: DictConfig, run_dir: Path) -> Iterator[JobTrackers]:
    """The job's tracker runs for the duration of the job; ``current()`` returns them there.
    A job that raises ends its runs as failed (or stopped, when it was pre-empted)."""
    global _current
    names = _asked(cfg)
    if not names:
        yield _NONE
        return
    environment = _tracker_environment()
    where = _where(Path(run_dir))
    state_file = Path(run_dir) / paths.TRACKERS
    state = _read(state_file)
    flat = flatten(resolved(cfg))
    params: dict[str, Any] = {**flat, "run": where.name}
    if state.get("replaces"):
        params["replaces_stale_run"] = json.dumps(state["replaces"])
    tags = {"seed": str(cfg.seed), "condition": where.name}
    opened = []
    for name in names:
        try:
            backend = BACKENDS[name](cfg.logger[name], where)
            state[name] = backend.open(state.get(name), params, tags)
        except Unavailable as exc:
            _warn(name, str(exc), exc.fix)
            continue
        except Exception as exc:
            _warn(name, str(exc) or type(exc).__name__, _fix(name))
            continue
        opened.append(backend)
    write_json_atomic(state_file, state)
    trackers = JobTrackers(opened, state_file)
    trackers.tags = tags
    _current = trackers
    status = "failed"
    try:
        yield trackers
        status = "ok"
    except BaseException as exc:
        from fer_lottery.job.termination import is_termination

        status = "stopped" if is_termination(exc) else "failed"
        raise
    finally:
        trackers.close(status)
        _current = _NONE
        _restore(environment)


def _tracker_environment() -> dict[str, str]:
    """The MLFLOW_* and WANDB_* variables as they are before a job's trackers set theirs
    (MLflow's tracking URI, W&B's service), so that the next job of an in-process sweep starts
    from the same environment."""
    return {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "WANDB_"))}


def _restore(before: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "WANDB_"))]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)


def _read(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def retire(run_dir: Path, reason: str) -> str | None:
    """A relaunch with another config replaces this job folder's runs: mark the old tracker
    runs stale (MLflow's tag ``fer_lottery.stale``; an offline W&B run is named by the new
    run's ``replaces_stale_run``), and move their ids aside. What was done, or None."""
    state_file = Path(run_dir) / paths.TRACKERS
    state = _read(state_file)
    if not any(name in state for name in BACKENDS):
        return None
    for name, backend in BACKENDS.items():
        if name in state:
            try:
                backend.retire(state[name], reason)
            except Exception as exc:
                _warn(name, f"cannot mark the stale run: {exc}", _fix(name))
    moved = move_aside(state_file, "stale")
    write_json_atomic(state_file, {"replaces": {n: state[n] for n in BACKENDS if n in state}})
    return moved
