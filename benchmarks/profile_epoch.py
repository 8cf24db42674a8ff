"""Where one CPU training epoch goes: Lightning's SimpleProfiler on a real stage, grouped.

The stage is the demo's dense stage (``experiment=demo``: MobileNetV2 with its ImageNet weights,
SGD, synthetic faces at 64 px, 490 training and 105 validation images, batch 64), trained for 2
epochs with a resumable checkpoint after the first, as
``fer_lottery.training.stage.train_stage`` runs it. Prints a markdown
table (seconds per epoch, share of the epoch) and one JSON line:
``python -m benchmarks.profile_epoch``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.profilers import SimpleProfiler

from benchmarks.common import compose, device_string, quiet_lightning
from fer_lottery.config import enum_value
from fer_lottery.core.seeding import seeded
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.models import build_model
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.stage import Stage, train_stage

# Profiler actions per part of the epoch; each action's total is summed over the epochs.
PARTS = {
    "forward + loss (train)": ["[Strategy]SingleDeviceStrategy.training_step"],
    "backward": ["[Strategy]SingleDeviceStrategy.backward"],
    "augmentation + normalisation (batched, train and val)": [
        "[LightningDataModule]FaceDataModule.on_after_batch_transfer"
    ],
    "validation forward": ["[Strategy]SingleDeviceStrategy.validation_step"],
    "resumable checkpoint (model + optimizer + best weights)": [
        "[Callback]ResumeCheckpoint.on_train_epoch_end"
    ],
    "best weights kept in memory": ["[Callback]BestWeights.on_validation_end"],
    "metrics and logging (epoch end)": [
        "[LightningModule]FERClassifier.on_train_epoch_end",
        "[LightningModule]FERClassifier.on_validation_epoch_end",
    ],
}


class GrabProfiler(pl.Callback):
    """Hands over the Trainer's profiler (``+trainer.extra.profiler=simple``) after the fit."""

    profiler: SimpleProfiler

    def on_fit_end(self, trainer, pl_module) -> None:
        self.profiler = trainer.profiler


def total(profiler: SimpleProfiler, action: str) -> float:
    return float(sum(profiler.recorded_durations.get(action, [])))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    quiet_lightning()
    cfg = compose(
        "experiment=demo",
        "trainer.checkpoint_every_n_epochs=1",
        "+trainer.extra.enable_model_summary=false",
        "+trainer.extra.profiler=simple",
    )
    datamodule = FaceDataModule(cfg.data, None, seed=cfg.seed)
    datamodule.setup()
    with seeded(cfg.seed, "model"):
        model = build_model(cfg.model.name, cfg.model.weights, cfg.model.num_classes)
    module = FERClassifier(model, cfg.optim, datamodule.class_names)
    grab = GrabProfiler()
    with tempfile.TemporaryDirectory() as tmp:
        stage = Stage("dense", callbacks=[grab], max_epochs=args.epochs)
        train_stage(cfg, datamodule, module, Path(tmp), stage)
    profiler = grab.profiler
    epochs = args.epochs
    # run_training_epoch holds the batches and the validation; the epoch-end hooks (logging,
    # the checkpoint) run after it, in the fit loop.
    epoch_end = [a for a in profiler.recorded_durations if a.endswith(".on_train_epoch_end")]
    epoch_s = sum(total(profiler, a) for a in ["run_training_epoch", *epoch_end]) / epochs
    parts = {
        name: sum(total(profiler, a) for a in actions) / epochs for name, actions in PARTS.items()
    }
    # optimizer_step wraps the closure (training_step + backward): the step itself is the rest.
    step = total(profiler, "[LightningModule]FERClassifier.optimizer_step") / epochs
    parts[f"optimizer step ({enum_value(cfg.optim.name)})"] = (
        step - parts["forward + loss (train)"] - parts["backward"]
    )
    parts["everything else (Lightning loops, hooks, data loader)"] = epoch_s - sum(parts.values())
    print("| part of one epoch | s/epoch | share |\n|---|---|---|")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.3f} | {seconds / epoch_s:.1%} |")
    print(f"| **one epoch** | **{epoch_s:.3f}** | 100% |")
    line = {
        "name": "epoch_profile",
        "epoch_s": round(epoch_s, 3),
        "parts_s": {k: round(v, 4) for k, v in parts.items()},
        "train_images": len(datamodule.labels["train"]),
        "val_images": len(datamodule.labels["val"]),
        "model": f"{cfg.model.name}, {cfg.data.image_size} px, batch {cfg.data.batch_size}",
        "optimizer": enum_value(cfg.optim.name),
        "epochs": epochs,
        "device": device_string(),
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
