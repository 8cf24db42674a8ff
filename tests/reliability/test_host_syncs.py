"""No per-step host syncs (#16 point 4): a training step copies one tensor to the device (the
augmentation draws) and reads nothing back from it. Counted on the CPU through patched Tensor
methods, on the real data module and the real FERClassifier; on a GPU each of these calls
would block the host until the device catches up."""

from __future__ import annotations

import torch

from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.models import build_model
from fer_lottery.training.classifier import FERClassifier
from tests.helpers import TINY_SYNTHETIC

READS = ("item", "tolist", "__bool__", "__int__", "__float__")


def _counting(monkeypatch) -> dict[str, int]:
    counts = {"to_device": 0, **{name: 0 for name in READS}}

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            if name == "to":
                device = kwargs.get("device")
                device = (
                    device
                    if device is not None
                    else next((a for a in args if isinstance(a, (torch.device, str))), None)
                )
                counts["to_device"] += device is not None
            else:
                counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    for name in ("to", *READS):
        monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    return counts


def test_a_training_step_copies_once_and_reads_nothing_back(compose_cfg, monkeypatch):
    cfg = compose_cfg(*TINY_SYNTHETIC)
    dm = FaceDataModule(cfg.data, None, seed=0)
    dm.setup()
    module = FERClassifier(build_model("resnet18", None, 7), cfg.optim, dm.class_names)
    batches = list(dm.train_dataloader())
    module.training_step((dm.transform(batches[0][0], train=True), batches[0][1]), 0)  # warm up
    counts = _counting(monkeypatch)
    steps = len(batches)
    for i, (images, labels) in enumerate(batches):
        x = dm.transform(images, train=True)
        module.training_step((x, labels), i)
    monkeypatch.undo()
    assert counts["to_device"] == steps, counts  # the augmentation draws, once per batch
    assert all(counts[name] == 0 for name in READS), counts
