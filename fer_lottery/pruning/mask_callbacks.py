"""Lightning callbacks: keep a mask applied while training, snapshot weights for rewinding.

They decide only *when* something happens; what happens lives in plain functions.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask import Mask
from fer_lottery.store.atomic import save_torch

# Per-parameter optimizer state that would otherwise push pruned weights back (SGD momentum,
# Adam's moments).
_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class KeepMasked(pl.Callback):
    """Re-apply ``mask`` after every optimizer step and zero the optimizer state of pruned entries.

    The mask is part of the checkpoint (``state_dict``), so a resumed run restores it.
    """

    def __init__(self, mask: Mask):
        self.mask = mask
        self._bound: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def state_key(self) -> str:
        return "KeepMasked"

    def _apply(self, pl_module: pl.LightningModule) -> None:
        # Bind once per fit: (tensor, keep as the tensor's dtype), so each step is one mul_ each.
        if not self._bound:
            self._bound = self.mask.bind(pl_module.model)
        with torch.no_grad():
            for tensor, keep in self._bound:
                tensor.mul_(keep)

    @torch.no_grad()
    def _zero_state(self, trainer: pl.Trainer) -> None:
        # The bound keep-masks (in each parameter's dtype, on its device) serve here too, so a
        # step converts no mask: optimizer state is keyed by the same Parameter objects.
        for optimizer in trainer.optimizers:
            for tensor, keep in self._bound:
                state = optimizer.state.get(tensor)
                if not state:
                    continue
                for key in _STATE_KEYS:
                    value = state.get(key)
                    if torch.is_tensor(value) and value.shape == keep.shape:
                        value.mul_(keep if value.dtype == keep.dtype else keep.to(value.dtype))

    def on_train_start(self, trainer, pl_module) -> None:
        # After the model is on its device and any checkpoint (mask included) is restored.
        self._bound = []
        self._apply(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._apply(pl_module)
        self._zero_state(trainer)

    def state_dict(self) -> dict:
        return {"mask": self.mask.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.mask = Mask(state_dict["mask"])
        self._bound = []


class GradualPruning(KeepMasked):
    """Gradual magnitude pruning (Zhu & Gupta 2017) during one training stage.

    At the start of each epoch e, the mask is recomputed by ``magnitude_mask`` at the sparsity
    ``cubic_sparsity(e)`` (0 at ``start``, ``ratio`` from ``end`` on), keeping what earlier
    steps pruned; between steps it is kept applied as ``KeepMasked`` does (optimizer state of
    pruned entries zeroed). Each epoch's sparsity is logged as ``prune/sparsity``. The mask is
    in the checkpoint, so a resumed stage recomputes the same masks.
    """

    def __init__(self, names: list[str], ratio: float, scope: str, start: int, end: int):
        super().__init__(Mask({}))
        self.names, self.ratio, self.scope = names, ratio, scope
        self.start, self.end = start, end
        self.target = 0.0  # the sparsity of the current mask's step
        self.seconds = 0.0  # spent computing masks

    @property
    def state_key(self) -> str:
        return "GradualPruning"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        target = cubic_sparsity(trainer.current_epoch, self.ratio, self.start, self.end)
        if target == 0.0 or (self.mask.tensors and target == self.target):
            return  # not a pruning step: the mask stays as it is (KeepMasked keeps it applied)
        began = time.perf_counter()
        self.target = target
        previous = self.mask if self.mask.tensors else None
        self.mask = magnitude_mask(pl_module.model, self.names, target, self.scope, previous)
        self._bound = []
        self._apply(pl_module)
        self._zero_state(trainer)
        self.seconds += time.perf_counter() - began

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # A restored mask of the final step is recomputed once, to itself (what it pruned
        # scores lowest and is exactly the target count), so a resume keeps the same masks.
        self.target = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("prune/sparsity", self.mask.sparsity() if self.mask.tensors else 0.0)


def cubic_sparsity(epoch: int, ratio: float, start: int, end: int) -> float:
    """Zhu & Gupta's schedule: s = ratio * (1 - (1 - (epoch - start) / (end - start))^3) between
    ``start`` and ``end``, 0 before, exactly ``ratio`` from ``end`` on."""
    if epoch >= end:
        return ratio
    if epoch <= start:
        return 0.0
    return ratio * (1 - (1 - (epoch - start) / (end - start)) ** 3)


class FreshOptimizer(pl.Callback):
    """Check, when a retraining starts, that its optimizer carries no state from before.

    A retraining that does not resume a checkpoint of its own must start with empty optimizer
    state (no momentum or Adam moments of the dense stage); else ``RewindError``.
    """

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.ckpt_path is not None:  # resumed: its own state, restored from its checkpoint
            return
        for optimizer in trainer.optimizers:
            stale = [s for s in optimizer.state.values() if s]
            if stale:
                from fer_lottery.pruning.rewind import RewindError

                raise RewindError(
                    f"the retraining's optimizer starts with the state of {len(stale)} "
                    "parameter(s) from an earlier stage: this is a bug in fer_lottery; the job "
                    "stops here rather than retrain with a stale momentum"
                )


class SnapshotAtEpoch(pl.Callback):
    """Write the model's full state (parameters and buffers) after epoch ``k`` to ``path``.

    This is theta_k for ``retrain.rewind=epoch`` (k >= 1; theta_0 is the state before training).
    The snapshot lives in its own file, never in the callback's checkpoint state, so restoring a
    checkpoint (a resume, or ``trainer.test(ckpt_path=best)`` with a best epoch before k) can
    neither lose it nor replace it. It is taken when epoch k's validation starts (before that
    epoch's checkpoint is saved, so a job killed right after the checkpoint still has it) and
    again at the epoch's end when no validation ran; both see the same weights.
    """

    def __init__(self, epoch: int, path: str | Path):
        if epoch < 1:
            raise ValueError(f"SnapshotAtEpoch needs epoch >= 1, got {epoch}")
        self.epoch = epoch
        self.path = Path(path)
        self._taken_at: int | None = None

    def _take(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 != self.epoch or self._taken_at == trainer.current_epoch:
            return
        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        save_torch(self.path, state)
        self._taken_at = trainer.current_epoch

    def on_validation_start(self, trainer, pl_module) -> None:
        # Only the validation that closes the epoch (val_check_interval < 1 adds others).
        at_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if not trainer.sanity_checking and at_end:
            self._take(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._take(trainer, pl_module)
