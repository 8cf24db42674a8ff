"""The cost of the pruning criteria and schedules of #18, against plain PyTorch in one process.

``gradient_scores``: the gradient-magnitude scoring pass (``pruning.gradient.gradient_scores``:
one forward and backward pass over the whole training split in eval mode, no augmentation)
against one plain PyTorch training epoch of the same model over the same split (augmented, SGD
steps): an SFEW-sized split by default (96 synthetic faces per class, 224 px). Target <= 1.5x.

``gradual_overhead``: a gradual magnitude pruning stage (Lightning fit with ``GradualPruning``:
the mask recomputed at each epoch start and kept applied after each step) against the same
Lightning fit without it, of the same length. Target <= 1.05x.

``python -m benchmarks.bench_pruning [--per-class 96 --image-size 224 --repeats 1]``
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.bench_training import lightning_fit
from benchmarks.common import alternate, bench_device, compose, emit, quiet_lightning
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.models import build_model, prunable_weights
from fer_lottery.pruning.gradient import gradient_scores
from fer_lottery.pruning.mask_callbacks import GradualPruning


def _data(per_class: int, image_size: int, batch_size: int = 64):
    cfg = compose(
        "data=synthetic",
        f"data.image_size={image_size}",
        f"data.synthetic.per_class={per_class}",
        f"data.batch_size={batch_size}",
    )
    datamodule = FaceDataModule(cfg.data, None, seed=0)
    datamodule.setup()
    return cfg, datamodule


def plain_epoch(model, datamodule, cfg) -> None:
    """One hand-written training epoch over the training split (augmented, SGD)."""
    device = bench_device()
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    for x, y in datamodule.train_dataloader():
        logits = model(datamodule.transform(x.to(device), train=True))
        loss = F.cross_entropy(logits, y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()


def scoring_pass(model, datamodule) -> None:
    device = bench_device()

    def examples(dev):
        for x, y in datamodule.eval_loader("train"):
            yield datamodule.transform(x.to(dev), train=False), y.to(dev)

    gradient_scores(model, prunable_weights(model), examples, device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=96)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--gmp-per-class", type=int, default=8)
    parser.add_argument("--gmp-image-size", type=int, default=224)
    parser.add_argument("--gmp-epochs", type=int, default=3)
    args = parser.parse_args()
    quiet_lightning()

    cfg, datamodule = _data(args.per_class, args.image_size)
    n_train = len(datamodule.labels["train"])
    torch.manual_seed(0)
    scored, trained = build_model("resnet18", None), build_model("resnet18", None)
    s = alternate(
        {
            "scores": lambda: scoring_pass(scored, datamodule),
            "epoch": lambda: plain_epoch(trained, datamodule, cfg),
        },
        args.repeats,
        warmup=0,
    )
    emit(
        "gradient_scores",
        s["scores"],
        s["epoch"],
        "s/pass",
        baseline_is="one plain PyTorch training epoch of the same split",
        model="resnet18",
        image_size=args.image_size,
        train_images=n_train,
        repeats=args.repeats,
        target="<= 1.5",
    )

    cfg, datamodule = _data(args.gmp_per_class, args.gmp_image_size)
    n_train = len(datamodule.labels["train"])
    torch.manual_seed(0)
    gradual, dense = build_model("resnet18", None), build_model("resnet18", None)
    names = prunable_weights(gradual)
    e = args.gmp_epochs

    def gmp_fit():
        callback = GradualPruning(names, 0.9, "global", 0, max(e - 2, 0))
        lightning_fit(gradual, datamodule, cfg, e, [callback])

    s = alternate(
        {"gradual": gmp_fit, "dense": lambda: lightning_fit(dense, datamodule, cfg, e)},
        args.repeats,
    )
    emit(
        "gradual_overhead",
        s["gradual"],
        s["dense"],
        "s/fit",
        baseline_is="the same Lightning fit without gradual pruning",
        model="resnet18",
        image_size=args.gmp_image_size,
        train_images=n_train,
        epochs_per_fit=e,
        sparsity=0.9,
        repeats=args.repeats,
        target="<= 1.05",
    )


if __name__ == "__main__":
    main()
