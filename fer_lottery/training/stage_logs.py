"""Per-stage logs and checkpoints that survive a kill: a resumed stage appends, a fresh one
starts clean.

- A **resumed** stage (``checkpoints/<stage>/last.ckpt`` exists and loads) keeps the CSV rows of
  the epochs its checkpoint holds, drops any row logged after it (those epochs run again), and
  appends; TensorBoard hides the events after the checkpoint's step (``purge_step``).
- A **fresh** stage (no usable checkpoint) removes what an earlier attempt left of that stage:
  its CSV, events and checkpoints, so no row is counted twice.
- A ``last.ckpt`` that does not load (a kill while Lightning wrote it) is moved aside with one
  warning and the stage starts from its beginning, which gives the same numbers, only later.
"""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from fer_lottery.core import paths
from fer_lottery.store.atomic import move_aside

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but it keeps an existing ``metrics.csv`` and appends to it."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


class AppendingCSVLogger(CSVLogger):
    """A CSVLogger whose writer appends to the rows an earlier attempt of the stage wrote."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


@dataclass
class Resume:
    """Where a stage starts: a checkpoint to resume from (None: the beginning)."""

    ckpt: Path | None = None
    epoch: int = -1  # the last finished epoch the checkpoint holds
    global_step: int = 0


def _read_checkpoint(path: Path) -> Resume | None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return Resume(path, int(ckpt["epoch"]), int(ckpt["global_step"]))
    except Exception as exc:  # truncated or foreign: not a checkpoint we can resume from
        # Out of the stage's folder, which a fresh start removes, into <run dir>/quarantine/.
        what = move_aside(path, "corrupt", folder=path.parents[2] / paths.QUARANTINE)
        log.warning(
            "%s cannot be loaded (%s: %s); %s and restarting the stage from its beginning (same "
            "numbers, since every epoch is seeded)",
            path,
            type(exc).__name__,
            exc,
            what,
        )
        return None


def _keep_rows_through(csv_path: Path, epoch: int, global_step: int) -> None:
    """Drop the rows logged after ``epoch`` (they belong to an epoch that runs again).

    A row with no epoch (``LearningRateMonitor``'s ``lr-*``, logged as an epoch starts, at the
    steps before it) is kept when it was logged before the checkpoint's ``global_step``.
    """
    if not csv_path.is_file():
        return
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if _before(r, epoch, global_step)]
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def _before(row: dict, epoch: int, global_step: int) -> bool:
    if row.get("epoch") not in (None, ""):
        return int(row["epoch"]) <= epoch
    return row.get("step") not in (None, "") and int(row["step"]) < global_step


def prepare(out_dir: Path, stage: str) -> tuple[Resume, TensorBoardLogger, CSVLogger]:
    """Decide whether ``stage`` resumes, tidy its logs to match, and make its loggers."""
    ckpt_dir = paths.stage_checkpoints(out_dir, stage)
    last = ckpt_dir / paths.LAST_CKPT
    resume = _read_checkpoint(last) if last.is_file() else None
    csv_dir, tb_dir = paths.stage_csv(out_dir, stage), paths.stage_tensorboard(out_dir, stage)
    if resume is None:
        resume = Resume()
        for folder in (csv_dir, tb_dir, ckpt_dir):
            shutil.rmtree(folder, ignore_errors=True)
        purge = None
    else:
        _keep_rows_through(csv_dir / paths.METRICS_CSV, resume.epoch, resume.global_step)
        # An epoch's metrics are logged at its last step (global_step - 1); the next epoch's
        # learning rate at global_step, and that epoch runs again.
        purge = resume.global_step
    tb = TensorBoardLogger(
        save_dir=out_dir,
        name=paths.TENSORBOARD,
        version=stage,
        default_hp_metric=False,
        purge_step=purge,
    )
    return resume, tb, AppendingCSVLogger(save_dir=out_dir, name=paths.CSV, version=stage)
