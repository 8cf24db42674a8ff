"""Lightning callbacks of every training stage: the best weights, the resumable checkpoint, and
the tests' fault points.

They decide only *when* something happens, as the pruning callbacks do.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from fer_lottery.job import faults, termination
from fer_lottery.store.atomic import write_atomic

log = logging.getLogger(__name__)


class BestWeights(pl.Callback):
    """Keep the weights (parameters and buffers) of the best validation epoch, in memory.

    An epoch is the best when its ``val/acc`` is strictly greater than every earlier one, the
    rule of ``ModelCheckpoint(mode="max", save_top_k=1)``, which wrote a whole checkpoint file
    for each improvement; here it is one copy on the model's device. The score, epoch and
    weights are part of the resumable checkpoint (``state_dict``), so a resumed stage ends on
    the same best epoch as an uninterrupted one.
    """

    def __init__(self, monitor: str = "val/acc", from_epoch: int = 0):
        self.monitor = monitor
        self.from_epoch = from_epoch  # epochs before it never count (gradual pruning's ramp)
        self.score: float | None = None
        self.epoch = -1
        self.weights: dict[str, torch.Tensor] | None = None

    @property
    def state_key(self) -> str:
        return "BestWeights"

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or trainer.current_epoch < self.from_epoch:
            return
        score = float(value)
        if math.isnan(score):
            score = -math.inf
        if self.score is None or score > self.score:
            self.score, self.epoch = score, trainer.current_epoch
            state = pl_module.model.state_dict()
            self.weights = {k: v.detach().clone() for k, v in state.items()}

    def restore(self, pl_module) -> None:
        """Load the best weights into ``pl_module.model`` (a no-op when no validation ran)."""
        if self.weights is not None:
            pl_module.model.load_state_dict(self.weights)

    def state_dict(self) -> dict:
        return {"score": self.score, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state_dict: dict) -> None:
        self.score, self.epoch = state_dict["score"], state_dict["epoch"]
        self.weights = state_dict["weights"]


class ResumeCheckpoint(Checkpoint):
    """Write a full Lightning checkpoint to ``path`` at the end of an epoch when one is due:
    ``every_s`` seconds after the stage started or last wrote one, or every ``every`` epochs
    (either 0: not by that rule).

    Model, optimizer, loop state and every callback's state (the best weights, the mask), so a
    killed stage resumes from it. Only epoch boundaries resume exactly (each epoch reseeds), so
    it saves at an epoch's end, where ``ModelCheckpoint`` saved, but not after the stage's last
    epoch (nothing is left to resume), and it does no work in the epochs it skips. The file is
    written beside ``path`` and renamed: a kill while writing keeps the previous checkpoint.
    A time-based interval bounds what a checkpoint costs: a stage of short epochs writes one
    every few minutes at most, not one every few epochs.

    It also carries out what a signal asked of the epoch (``termination.EpochBoundary``): a
    checkpoint now (SIGUSR2), or a checkpoint and a stop (SIGTERM, a launcher's pre-emption
    signal), which ends the fit after this epoch's logs are written; the stage then acts on the
    signal. A signal in the last epoch writes nothing: the stage finishes and keeps its result
    first. It records each epoch's duration, which decides whether a signal may wait.
    """

    def __init__(
        self,
        path: str | Path,
        every: int,
        every_s: float = 0.0,
        boundary: termination.EpochBoundary | None = None,
    ):
        self.path = Path(path)
        self.every = int(every)
        self.every_s = float(every_s)
        self.boundary = boundary or termination.EpochBoundary()
        self._since = time.monotonic()
        self._epoch_began = self._since

    def on_train_start(self, trainer, pl_module) -> None:
        self._since = self._epoch_began = time.monotonic()
        termination.own_sigterm_during_fit()

    def due(self, done: int, max_epochs: int) -> bool:
        """Whether a checkpoint is due after ``done`` epochs of ``max_epochs``."""
        if done >= max_epochs:
            return False
        by_epochs = self.every > 0 and done % self.every == 0
        by_time = self.every_s > 0 and time.monotonic() - self._since >= self.every_s
        return by_epochs or by_time

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = time.monotonic()
        b = self.boundary
        b.epoch_s, self._epoch_began = now - self._epoch_began, now
        done = trainer.current_epoch + 1
        asked = b.stop is not None or b.checkpoint_requested
        b.checkpoint_requested = False
        if self.due(done, trainer.max_epochs) or (asked and done < trainer.max_epochs):
            write_atomic(self.path, trainer.save_checkpoint)
            self._since = time.monotonic()
            if asked:
                log.warning(
                    "wrote a checkpoint after epoch %d: %s", trainer.current_epoch, self.path
                )
        if b.stop is not None and done < trainer.max_epochs:
            trainer.should_stop = True  # the stage acts on the signal once the fit has ended


class FaultPoint(pl.Callback):
    """Calls ``faults.at("<stage>/epoch<e>/batch<b>")`` after each training batch (tests only)."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        faults.at(f"{self.stage}/epoch{trainer.current_epoch}/batch{batch_idx}")
