"""FERClassifier: the LightningModule for one training stage.

Cross-entropy, SGD or Adam, torchmetrics for accuracy, per-class precision / recall /
specificity and the confusion matrix. ``val/acc_best`` tracks the best validation accuracy so far.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

from fer_lottery.config import enum_value
from fer_lottery.training.schedule import make_scheduler


class FERClassifier(pl.LightningModule):
    """Wrap a torchvision model for facial-expression classification."""

    def __init__(
        self,
        model: nn.Module,
        optim_cfg,
        class_names: list[str],
        frozen_modules: list[nn.Module] | None = None,
    ):
        super().__init__()
        self.model = model
        self.optim_cfg = optim_cfg
        self.class_names = list(class_names)
        # Not registered as submodules: they already live inside self.model.
        self._frozen = list(frozen_modules or [])
        n = len(class_names)
        # Accumulated per batch and logged once per epoch: each self.log call costs Lightning
        # about 1-2 ms of Python, which per batch adds up on a GPU. A batch-size-weighted mean,
        # as Lightning's on_epoch reduction, to the same float32 value.
        # No per-step host sync: torchmetrics' argument checks and its NaN filter each read a
        # value back from the device (nan_strategy="disable": a NaN loss shows as NaN).
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.val_acc = MulticlassAccuracy(n, average="micro", validate_args=False)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints: a resumed stage keeps its best
        # The first epoch whose val/acc may be the stage's best (``training.stage.Stage``: a
        # gradual stage selects among the epochs at its final sparsity): val/acc_best is logged
        # by the same rule as the weights the stage keeps.
        self.best_from_epoch = 0
        self.test_metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(n, average="micro"),
                "precision": MulticlassPrecision(n, average=None, zero_division=0),
                "recall": MulticlassRecall(n, average=None, zero_division=0),
                "specificity": MulticlassSpecificity(n, average=None, zero_division=0),
                "confusion": MulticlassConfusionMatrix(n),
            }
        )
        self.test_results: dict[str, object] = {}
        self.test_probs: torch.Tensor | None = None  # softmax of the last test, in split order
        self._test_probs: list[torch.Tensor] = []

    def train(self, mode: bool = True):
        """Switch modes, but keep frozen layers (and their BatchNorm statistics) in eval mode."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning keeps each submodule's mode through fit and never calls train() itself, so
        # set the modes here, every epoch: trainable layers train (whatever mode an earlier
        # evaluation left them in), frozen ones stay in eval mode so that their BatchNorm
        # layers neither normalise with batch statistics nor update their running statistics.
        # Validation switches to eval and restores these modes afterwards.
        self.train(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_loss.update(loss.detach(), len(y))
        self.train_acc.update(logits.detach(), y)
        return loss

    def on_train_epoch_end(self):
        self.log("train/loss", self.train_loss.compute())
        self.log("train/acc", self.train_acc.compute())
        self.train_loss.reset()
        self.train_acc.reset()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self.val_loss.update(F.cross_entropy(logits, y), len(y))

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self.log("val/loss", self.val_loss.compute())
        self.val_acc.reset()
        self.val_loss.reset()
        self.log("val/acc", acc, prog_bar=True)
        if not self.trainer.sanity_checking and self.current_epoch >= self.best_from_epoch:
            self.val_acc_best.update(acc)
            self.log("val/acc_best", self.val_acc_best.compute())

    def on_test_epoch_start(self) -> None:
        self._test_probs = []

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.test_metrics.update(logits, y)
        # Kept on the device until the epoch ends: one host copy per test, not one per batch.
        self._test_probs.append(torch.softmax(logits.float(), dim=1))

    def on_test_epoch_end(self):
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        self.test_probs = torch.cat(self._test_probs).cpu() if self._test_probs else None
        self._test_probs = []
        results: dict[str, object] = {"test/acc": float(values["acc"])}
        for kind in ("precision", "recall", "specificity"):
            for name, v in zip(self.class_names, values[kind].tolist(), strict=True):
                results[f"test/{kind}/{name}"] = float(v)
        results["test/confusion"] = values["confusion"].int().tolist()
        self.test_results = results
        self.log("test/acc", results["test/acc"])

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = self.optim_cfg
        if enum_value(cfg.name) == "adam":
            optimizer = torch.optim.Adam(
                params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
            )
        else:
            optimizer = torch.optim.SGD(
                params,
                lr=cfg.lr,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                nesterov=cfg.nesterov,
            )
        if enum_value(cfg.get("scheduler", "none")) == "none":
            return optimizer  # a constant rate (both papers): no scheduler, no Trainer needed
        scheduler = make_scheduler(optimizer, cfg, self.trainer.max_epochs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
