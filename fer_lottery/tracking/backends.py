"""MLflow and W&B, each through its own client and Lightning's logger for it.

A backend opens (or continues) one tracker run per job, gives each stage a Lightning logger that
writes into that run with the stage in the metric names (``dense/val/acc``, ``retrain/val/acc``),
records the final numbers and tags, and ends the run. Every call may raise: ``trackers`` turns
the first failure into one warning and drops the backend.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fer_lottery.config.schema import enum_value
from fer_lottery.core import paths


class Unavailable(Exception):
    """A tracker that cannot be used here: its package is missing, or its server does not
    answer. The message is the problem; ``fix`` is what the user can do."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.fix = fix


@dataclass(frozen=True)
class Where:
    """Where a job's tracker run belongs: its run folder, the folder its sweep's runs share
    (the sweep's, or the run's own), the group's name and the run's."""

    run_dir: Path
    group_dir: Path
    group: str
    name: str


MISSING_FIX = "pip install -e '.[trackers]' (make install installs it)"


def _guarded(base: type) -> type:
    """``base`` (a Lightning logger) with metric names ``<stage>/<key>``, no hyperparameters of
    its own (the job's are logged once, when its run opens), a run that a stage's end does not
    end, and every write passed through ``guard`` (which turns a failure into one warning)."""

    class Stage(base):
        LOGGER_JOIN_CHAR = "/"

        def __init__(self, *args, guard: Callable, stage: str, **kwargs):
            super().__init__(*args, **kwargs)
            self._guard, self._stage = guard, stage

        # Lightning reads these for its progress bar and log folder; the tracker's own would
        # ask its server, outside any guard.
        @property
        def name(self) -> str:
            return "fer_lottery"

        @property
        def version(self) -> str:
            return self._stage

        def log_metrics(self, metrics, step=None):
            self._guard(super().log_metrics, metrics, step)

        def log_hyperparams(self, *args, **kwargs):
            pass

        def finalize(self, status: str = "success") -> None:
            pass

        def after_save_checkpoint(self, checkpoint_callback) -> None:
            pass

    Stage.__name__ = f"Stage{base.__name__}"
    return Stage


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


class MLflowBackend:
    """One MLflow run per job in the experiment of its sweep (Lightning's ``MLFlowLogger`` per
    stage; ``MlflowClient`` for the run itself)."""

    name = "mlflow"

    def __init__(self, options: Any, where: Where):
        try:
            import mlflow  # noqa: F401
            from pytorch_lightning.loggers import MLFlowLogger
        except ImportError:
            raise Unavailable("the mlflow package is not installed", MISSING_FIX) from None
        self.uri = (
            options.get("tracking_uri") or (where.group_dir / paths.MLRUNS).resolve().as_uri()
        )
        self.experiment_name = options.get("experiment_name") or where.group
        self.where = where
        self._logger_class = _guarded(MLFlowLogger)
        self.run_id: str | None = None
        _check_answers(self.uri)
        # A server that stops answering costs one short try, not MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # MLflow 3 asks for an explicit yes to a file store: one folder of plain files per run,
        # which jobs on several nodes can share (a database file cannot be, on NFS).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)

    def open(self, state: dict | None, params: dict[str, Any], tags: dict[str, str]) -> dict:
        """Continue the run ``state`` names (a resumed job), or start one; its state."""
        from mlflow.entities import Param, RunStatus

        if state and state.get("run_id") and state.get("tracking_uri") == self.uri:
            # A killed job continues its run; a finished one (its results.json was unusable,
            # so the job runs again) gets a new run.
            previous = self.client.get_run(state["run_id"])
            if previous.info.status != "FINISHED":
                self.run_id = state["run_id"]
                self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                return state
        with self._experiment_lock():
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                try:
                    experiment_id = self.client.create_experiment(self.experiment_name)
                except Exception:  # another job of the sweep made it first (a server)
                    experiment_id = self.client.get_experiment_by_name(
                        self.experiment_name
                    ).experiment_id
            else:
                experiment_id = experiment.experiment_id
        run = self.client.create_run(experiment_id, run_name=self.where.name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, _text(v)[:500]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def _experiment_lock(self):
        """Jobs of a sweep that start at once make the sweep's experiment once: a file store
        checks names by listing them, so two could both make it (a server's database refuses
        the second)."""
        import contextlib

        if not self.uri.startswith("file:"):
            return contextlib.nullcontext()
        from filelock import FileLock

        folder = Path(urlparse(self.uri).path)
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / ".experiments.lock"), timeout=120)

    def stage_logger(self, stage: str, guard: Callable):
        return self._logger_class(
            experiment_name=self.experiment_name,
            tracking_uri=self.uri,
            run_id=self.run_id,
            prefix=stage,
            guard=guard,
            stage=stage,
        )

    def finish(self, results: dict[str, Any], tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        scalars = _scalars(results)
        metrics = [Metric(_file_key(k, scalars), v, now, 0) for k, v in scalars.items()]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 500])
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(
            self.run_id, {"ok": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED")
        )

    @staticmethod
    def retire(state: dict, reason: str) -> None:
        """Mark the run of an earlier config of this job folder as stale."""
        _check_answers(state["tracking_uri"])
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=state["tracking_uri"])
        client.set_tag(state["run_id"], "fer_lottery.stale", reason[:5000])
        if client.get_run(state["run_id"]).info.status == "RUNNING":  # a killed job's
            client.set_terminated(state["run_id"], "KILLED")


class WandbBackend:
    """One W&B run per job, grouped by sweep, offline unless ``logger.wandb.mode`` says
    otherwise (Lightning's ``WandbLogger`` per stage, on the job's run)."""

    name = "wandb"

    def __init__(self, options: Any, where: Where):
        try:
            import wandb  # noqa: F401
            from pytorch_lightning.loggers import WandbLogger
        except ImportError:
            raise Unavailable("the wandb package is not installed", MISSING_FIX) from None
        self.options, self.where = options, where
        self._logger_class = _guarded(WandbLogger)
        self.run = None

    def open(self, state: dict | None, params: dict[str, Any], tags: dict[str, str]) -> dict:
        import wandb

        group = self.options.get("group") or "/".join(Path(self.where.group).parts[-3:])
        mode = enum_value(self.options.get("mode") or "offline")
        self.run = wandb.init(
            project=self.options.get("project") or "fer_lottery",
            entity=self.options.get("entity"),
            group=group[:128],
            name=self.where.name,
            id=(state or {}).get("id"),  # a resumed job writes on under its run's id
            resume=None if mode == "offline" else "allow",
            mode=mode,
            dir=str(self.where.run_dir),
            config=params,
            tags=[f"{k}={v}"[:64] for k, v in tags.items()],
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        return {"id": self.run.id, "dir": str(Path(self.run.dir).parent)}

    def stage_logger(self, stage: str, guard: Callable):
        return self._logger_class(experiment=self.run, prefix=stage, guard=guard, stage=stage)

    def finish(self, results: dict[str, Any], tags: dict[str, str]) -> None:
        self.run.summary.update(_scalars(results))
        self.run.tags = tuple(
            dict.fromkeys([*self.run.tags, *(f"{k}={v}"[:64] for k, v in tags.items())])
        )

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "ok" else 1)

    @staticmethod
    def retire(state: dict, reason: str) -> None:
        """An offline W&B run cannot be changed once written: the new run names it
        (``config.replaces_stale_run``), and its folder moves to the run folder's
        ``quarantine/``, out of ``wandb sync <run dir>/wandb/offline-run-*``."""
        from fer_lottery.store.atomic import move_aside

        folder = Path(state.get("dir") or "")
        if folder.name.startswith("offline-run-") and folder.is_dir():
            move_aside(folder, "stale", folder=folder.parents[1] / paths.QUARANTINE)


def _file_key(key: str, keys: dict) -> str:
    """``key`` as a file store can hold it beside the others: a metric is a file named by its
    key, so ``prune/sparsity/conv1`` cannot sit under ``prune/sparsity``; it becomes
    ``prune/sparsity.conv1``."""
    parts = key.split("/")
    for i in range(len(parts) - 1, 0, -1):
        if "/".join(parts[:i]) in keys:
            return "/".join(parts[:i]) + "." + ".".join(parts[i:])
    return key


def _check_answers(uri: str) -> None:
    """A tracking server that does not accept a connection within 2 s is unavailable."""
    url = urlparse(uri)
    if url.scheme not in ("http", "https"):
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=2).close()
    except OSError as exc:
        raise Unavailable(
            f"the tracking server {uri} does not answer ({exc.strerror or exc})",
            "start it, or set logger.mlflow.tracking_uri=null for a local store beside the sweep",
        ) from None


BACKENDS = {"mlflow": MLflowBackend, "wandb": WandbBackend}
