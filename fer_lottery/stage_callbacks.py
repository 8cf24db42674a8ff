"""Lightning callbacks of every training stage: the tests' fault points.

They decide only *when* something happens, as the pruning callbacks do.
"""

from __future__ import annotations

import pytorch_lightning as pl

from fer_lottery import faults


class FaultPoint(pl.Callback):
    """Calls ``faults.at("<stage>/epoch<e>/batch<b>")`` after each training batch (tests only)."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        faults.at(f"{self.stage}/epoch{trainer.current_epoch}/batch{batch_idx}")
