"""Training throughput of fer_lottery's Lightning stage against a plain PyTorch loop.

Both train the same ResNet-18 on the same in-memory synthetic batches with the same augmentation,
in one process, one after the other; the figure that matters is the ratio (Lightning overhead,
mask re-application included). Prints JSON lines: ``python benchmarks/bench_training.py``.
Options: ``--image-size``, ``--epochs``, ``--per-class``, ``--masked`` (90% magnitude mask kept by
the KeepMasked callback, against a plain loop that re-applies the mask after each step).
"""

from __future__ import annotations

import argparse
import json
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from fer_lottery.config import CONF_DIR, register_configs
from fer_lottery.data.sfew import SFEWDataModule
from fer_lottery.models import build_model, prunable_weights
from fer_lottery.module import FERClassifier
from fer_lottery.pruning.callbacks import KeepMasked
from fer_lottery.pruning.magnitude import magnitude_mask


def plain_loop(model, datamodule, cfg, epochs: int, mask=None) -> float:
    """The baseline: a hand-written loop over the same loaders and transforms."""
    device = next(model.parameters()).device
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    bound = mask.bind(model) if mask is not None else []
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in datamodule.train_dataloader():
            x = datamodule.transform(x.to(device), train=True)
            loss = F.cross_entropy(model(x), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for tensor, keep in bound:
                    tensor.mul_(keep)
        model.eval()
        with torch.no_grad():
            for x, _ in datamodule.val_dataloader():
                model(datamodule.transform(x.to(device), train=False))
    return time.perf_counter() - start


def lightning_stage(model, datamodule, cfg, epochs: int, mask=None) -> float:
    callbacks = [KeepMasked(mask)] if mask is not None else []
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    module = FERClassifier(model, cfg.optim, datamodule.class_names)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--masked", action="store_true")
    args = parser.parse_args()
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            [
                "data=synthetic",
                f"data.image_size={args.image_size}",
                f"data.synthetic.per_class={args.per_class}",
            ],
        )
    datamodule = SFEWDataModule(cfg.data, None, seed=0)
    datamodule.setup()
    n_train = len(datamodule.labels["train"])
    times = {}
    for name, run in (("plain", plain_loop), ("lightning", lightning_stage)):
        torch.manual_seed(0)
        model = build_model("resnet18", None)
        mask = None
        if args.masked:
            mask = magnitude_mask(model, prunable_weights(model), 0.9, "global")
            mask.apply(model)
        run(model, datamodule, cfg, 1, mask)  # warm-up epoch
        times[name] = run(model, datamodule, cfg, args.epochs, mask)
    print(
        json.dumps(
            {
                "bench": "training_stage",
                "model": "resnet18",
                "image_size": args.image_size,
                "masked": args.masked,
                "epochs": args.epochs,
                "train_images": n_train,
                "plain_s": round(times["plain"], 3),
                "lightning_s": round(times["lightning"], 3),
                "plain_img_per_s": round(args.epochs * n_train / times["plain"], 1),
                "ratio_lightning_to_plain": round(times["lightning"] / times["plain"], 3),
                "threads": torch.get_num_threads(),
                "device": "cuda" if torch.cuda.is_available() else "cpu",
            }
        )
    )


if __name__ == "__main__":
    main()
