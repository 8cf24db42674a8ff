"""Training throughput and mask overhead of fer_lottery's Lightning stage.

``train_throughput``: a Lightning fit (FERClassifier + Trainer) against a plain PyTorch loop over
the same in-memory batches with the same on-device augmentation. ``mask_overhead``: a 90% global
magnitude mask kept by ``KeepMasked`` against the dense Lightning fit, and against the same fit
with the mask made by ``torch.nn.utils.prune.global_unstructured`` (L1, forward pre-hooks and
``weight_orig``). All four run in one process, alternating; each call is one fit of ``--epochs``
epochs on ResNet-18. ``python -m benchmarks.bench_training [--image-size 32 --per-class 20]``.
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.nn.utils import prune

from benchmarks.common import (
    alternate,
    bench_device,
    bench_precision,
    compose,
    emit,
    quiet_lightning,
)
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.models import build_model, prunable_weights
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask_callbacks import KeepMasked
from fer_lottery.training.classifier import FERClassifier


def plain_fit(model, datamodule, cfg, epochs: int) -> None:
    """The baseline: a hand-written loop over the same loaders and transforms (train + val), on
    the same device and in the same precision as ours (bf16 autocast and channels_last on a GPU).
    """
    device = bench_device()
    dtype = torch.bfloat16 if device.type == "cuda" else None
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)

    def batch(x):
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x

    for _ in range(epochs):
        model.train()
        for x, y in datamodule.train_dataloader():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(datamodule.transform(batch(x), train=True))
                loss = F.cross_entropy(logits, y.to(device, non_blocking=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for x, _ in datamodule.val_dataloader():
                model(datamodule.transform(batch(x), train=False))


def lightning_fit(model, datamodule, cfg, epochs: int, callbacks=()) -> None:
    """Ours: the FERClassifier under a Lightning Trainer (no logger or checkpoint: compute only),
    on ``bench_device`` in the precision fer_lottery uses there."""
    device = bench_device()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=bench_precision(),
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    trainer.fit(FERClassifier(model, cfg.optim, datamodule.class_names), datamodule=datamodule)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--model", default="resnet18", help="any backbone: alexnet, mobilenet_v2, timm/..."
    )
    parser.add_argument("--weights", default=None, help="model.weights (default: random init)")
    parser.add_argument("--throughput-only", action="store_true", help="no mask_overhead lines")
    args = parser.parse_args()
    quiet_lightning()
    cfg = compose(
        "data=synthetic",
        f"data.image_size={args.image_size}",
        f"data.synthetic.per_class={args.per_class}",
    )
    datamodule = FaceDataModule(cfg.data, None, seed=0)
    datamodule.setup()
    n_train = len(datamodule.labels["train"])

    def resnet():
        torch.manual_seed(0)
        return build_model(args.model, args.weights)

    dense, plain = resnet(), resnet()
    e = args.epochs
    fits = {
        "lightning": lambda: lightning_fit(dense, datamodule, cfg, e),
        "plain": lambda: plain_fit(plain, datamodule, cfg, e),
    }
    if not args.throughput_only:  # the pruned models, masked two ways (61M weights for AlexNet)
        masked, hooked = resnet(), resnet()
        mask = magnitude_mask(masked, prunable_weights(masked), 0.9, "global")
        mask.apply(masked)
        modules = dict(hooked.named_modules())
        targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in prunable_weights(hooked)]
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.9)
        keep = KeepMasked(mask)
        fits["keep_masked"] = lambda: lightning_fit(masked, datamodule, cfg, e, [keep])
        fits["torch_prune"] = lambda: lightning_fit(hooked, datamodule, cfg, e, [])
    s = alternate(fits, args.repeats)
    common = {
        "model": args.model,
        "weights": args.weights,
        "precision": bench_precision(),
        "image_size": args.image_size,
        "train_images": n_train,
        "epochs_per_fit": e,
        "repeats": args.repeats,
    }
    emit(
        "train_throughput",
        s["lightning"],
        s["plain"],
        "s/fit",
        ours_img_per_s=round(e * n_train / s["lightning"], 1),
        baseline_img_per_s=round(e * n_train / s["plain"], 1),
        baseline_is="plain PyTorch loop",
        **common,
    )
    if args.throughput_only:
        return
    emit(
        "mask_overhead",
        s["keep_masked"],
        s["lightning"],
        "s/fit",
        baseline_is="dense Lightning fit",
        sparsity=round(mask.sparsity(), 3),
        **common,
    )
    emit(
        "mask_overhead",
        s["keep_masked"],
        s["torch_prune"],
        "s/fit",
        baseline_is="torch.nn.utils.prune global L1 90% (pre-hooks), same Lightning fit",
        sparsity=round(mask.sparsity(), 3),
        **common,
    )


if __name__ == "__main__":
    main()
