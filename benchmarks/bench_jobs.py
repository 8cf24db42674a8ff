"""Fixed costs around the compute: per epoch, per job, and a 3-ratio sweep with the dense cache.

``epoch_overhead``: ``fer_lottery.training.stage.train_stage`` (checkpoints, CSV and TensorBoard
logs, best-val tracking, test) against a plain loop with the same bookkeeping (best weights kept
in memory, a CSV row per epoch, test with the best weights), on a tiny linear model and 28 tiny
images, so compute is negligible. The cost per epoch is the slope between a short and a long
stage, so per-stage costs (Trainer construction, test, figures) cancel out.

``job_overhead``: ``fer_lottery.experiment.runner.run_experiment`` in-process on a tiny dense
job, from job start to ``results.json``, minus data setup, training (``time/dense_s``) and the
test pass (``time/test_s``), as the job records them; against a plain job (same data, ResNet-18, one
epoch, test, a JSON file) with the same subtractions, timed in the same way.

``sweep_cost``: three prune ratios (0.5, 0.9, 0.95) run as three in-process jobs sharing a fresh
dense cache (one dense training of 5 epochs, three retrainings of 1) against the same jobs with
``cache_dense=false`` (three dense trainings).

``python -m benchmarks.bench_jobs``.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import alternate, bench_device, compose, emit, quiet_lightning
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.experiment.runner import run_experiment
from fer_lottery.models import build_model
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.stage import Stage, train_stage

TINY_JOB = (
    "data=synthetic",
    "data.synthetic.per_class=4",
    "data.image_size=16",
    "data.batch_size=16",
    "model.weights=null",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "+trainer.extra.enable_model_summary=false",
)


# epoch_overhead_resnet18's slope is the difference of two ~1 s timings on a shared machine:
# at least this many repeats keep its median within a few ms from run to run.
RESNET_REPEATS = 7

DENSE_EPOCHS = 5  # sweep_cost: what the cache saves is this many epochs per job but the first


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 7))


def _autocast():
    """bf16 autocast on a GPU (fer_lottery's precision there), nothing on the CPU."""
    device = bench_device()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def accuracy(model: nn.Module, datamodule: FaceDataModule, split: str) -> float:
    model.eval()
    device = bench_device()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for x, y in datamodule.eval_loader(split):
        with _autocast():
            logits = model(datamodule.transform(x.to(device), train=False))
        correct += (logits.argmax(1) == y.to(device)).sum()
        total += len(y)
    return int(correct) / max(total, 1)


def plain_stage(model, datamodule, cfg, epochs: int, out_dir: Path) -> dict[str, float]:
    """A plain loop with the stage's bookkeeping: best weights in memory, CSV rows, test; on the
    device and in the precision ours uses there."""
    device = bench_device()
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    best, best_state = -1.0, None
    start = time.perf_counter()
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train/loss", "val/acc"])
        for epoch in range(epochs):
            model.train()
            total = 0.0
            for x, y in datamodule.train_dataloader():
                with _autocast():
                    logits = model(datamodule.transform(x.to(device), train=True))
                    loss = F.cross_entropy(logits, y.to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss)
            acc = accuracy(model, datamodule, "val")
            if acc > best:
                best = acc
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            writer.writerow([epoch, total, acc])
            f.flush()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    model.load_state_dict(best_state)
    test_acc = accuracy(model, datamodule, "test")
    return {"train_s": train_s, "test_s": time.perf_counter() - start, "test/acc": test_acc}


def stage_slopes(
    size: tuple[str, ...], make_model, repeats: int, short: int, long: int
) -> tuple[dict[str, float], dict[str, float], int]:
    """ms per epoch of ours (``train_stage``) and of ``plain_stage``: the slope of the training
    time (``trainer.fit``: every epoch, with its validation, logs and checkpoints) between a
    ``short`` and a ``long`` stage, so that per-stage costs cancel; also the medians and the
    training images. ``size``: the Hydra overrides of the data. The test and the report after
    the training are per stage: they would cancel in the slope too, and only add their noise."""
    cfg = compose(
        "data=synthetic",
        *size,
        "trainer.enable_progress_bar=false",
        "+trainer.extra.enable_model_summary=false",
    )
    datamodule = FaceDataModule(cfg.data, None, seed=0)
    datamodule.setup()

    def run_ours(epochs: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            module = FERClassifier(make_model(), cfg.optim, datamodule.class_names)
            metrics = train_stage(
                cfg, datamodule, module, Path(tmp), Stage("dense", max_epochs=epochs)
            )
            return float(metrics["time/train_s"])

    def run_plain(epochs: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            return plain_stage(make_model(), datamodule, cfg, epochs, Path(tmp))["train_s"]

    s = alternate(
        {
            "ours_short": lambda: run_ours(short),
            "ours_long": lambda: run_ours(long),
            "plain_short": lambda: run_plain(short),
            "plain_long": lambda: run_plain(long),
        },
        repeats,
    )
    per_epoch = {
        k: (s[f"{k}_long"] - s[f"{k}_short"]) / (long - short) * 1000 for k in ("ours", "plain")
    }
    return per_epoch, s, len(datamodule.labels["train"])


def epoch_overhead(repeats: int, short: int, long: int) -> None:
    size = ("data.synthetic.per_class=4", "data.image_size=8")
    per_epoch, s, n_train = stage_slopes(size, tiny_model, repeats, short, long)
    emit(
        "epoch_overhead",
        per_epoch["ours"],
        per_epoch["plain"],
        "ms/epoch",
        digits=1,
        overhead_ms=round(per_epoch["ours"] - per_epoch["plain"], 1),
        ours_short_train_s=round(s["ours_short"], 3),
        baseline_short_train_s=round(s["plain_short"], 3),
        baseline_is="plain loop: best weights in memory, a CSV row per epoch, test",
        method=f"slope of the training time between {short} and {long} epochs",
        model="Linear(192, 7) on 8 px",
        train_images=n_train,
        repeats=repeats,
    )


def epoch_overhead_resnet18(repeats: int, short: int = 1, long: int = 11) -> None:
    """What an epoch of a real stage costs beyond a plain loop, with the default settings: a
    ResNet-18 stage at 32 px (checkpoints, CSV, TensorBoard, the best weights) against a plain
    loop that keeps its best weights in memory."""

    def resnet() -> nn.Module:
        torch.manual_seed(0)
        return build_model("resnet18", None)

    size = ("data.synthetic.per_class=4", "data.image_size=32", "model.weights=null")
    per_epoch, _, n_train = stage_slopes(size, resnet, repeats, short, long)
    defaults = compose().trainer
    emit(
        "epoch_overhead_resnet18",
        per_epoch["ours"],
        per_epoch["plain"],
        "ms/epoch",
        digits=1,
        overhead_ms=round(per_epoch["ours"] - per_epoch["plain"], 1),
        target_overhead_ms=20,
        baseline_is="plain loop: best weights in memory, a CSV row per epoch, test",
        method=f"slope of the training time between {short} and {long} epochs, default settings",
        checkpoint_every_s=defaults.checkpoint_every_s,
        checkpoint_every_n_epochs=defaults.checkpoint_every_n_epochs,
        model="resnet18 on 32 px",
        train_images=n_train,
        repeats=repeats,
    )


def job_overhead(repeats: int) -> None:
    ours_parts: list[dict[str, float]] = []
    plain_parts: list[dict[str, float]] = []

    def ours() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose(*TINY_JOB, "cache_dense=false", f"cache_dir={tmp}/cache")
            start = time.perf_counter()
            results = run_experiment(cfg, Path(tmp) / "job")
            wall = time.perf_counter() - start
        train_s, data_s = float(results["time/dense_s"]), float(results["time/data_s"])
        test_s = float(results["time/test_s"])
        ours_parts.append({"wall_s": wall, "train_s": train_s, "data_s": data_s, "test_s": test_s})
        return wall - data_s - train_s - test_s

    def plain() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose(*TINY_JOB)
            start = time.perf_counter()
            datamodule = FaceDataModule(cfg.data, None, seed=cfg.seed)
            datamodule.setup()
            data_s = time.perf_counter() - start
            torch.manual_seed(cfg.seed)
            model = build_model("resnet18", None)
            parts = plain_stage(model, datamodule, cfg, cfg.trainer.max_epochs, Path(tmp))
            (Path(tmp) / "results.json").write_text(json.dumps({"test/acc": parts["test/acc"]}))
            wall = time.perf_counter() - start
        plain_parts.append({"wall_s": wall, "data_s": data_s, **parts})
        return wall - data_s - parts["train_s"] - parts["test_s"]

    s = alternate({"plain": plain, "ours": ours}, repeats)

    def median(rows: list[dict[str, float]], key: str) -> float:
        return round(sorted(r[key] for r in rows)[len(rows) // 2], 3)

    emit(
        "job_overhead",
        s["ours"],
        s["plain"],
        "s/job",
        ours_wall_s=median(ours_parts, "wall_s"),
        ours_train_s=median(ours_parts, "train_s"),
        ours_test_s=median(ours_parts, "test_s"),
        baseline_wall_s=median(plain_parts, "wall_s"),
        baseline_test_s=median(plain_parts, "test_s"),
        baseline_is="plain job: data, ResNet-18, 1 epoch + val, test, results JSON",
        job="tiny dense job: synthetic 28 images, 16 px, ResNet-18, 1 epoch, cache_dense=false",
        repeats=repeats,
    )


def sweep_cost(repeats: int) -> None:
    ratios = (0.5, 0.9, 0.95)

    def sweep(cache: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for ratio in ratios:
                cfg = compose(
                    *[o for o in TINY_JOB if not o.startswith("trainer.max_epochs")],
                    f"trainer.max_epochs={DENSE_EPOCHS}",
                    "retrain.epochs=1",
                    f"cache_dense={str(cache).lower()}",
                    f"cache_dir={tmp}/cache",
                    f"prune.ratio={ratio}",
                )
                run_experiment(cfg, Path(tmp) / f"ratio{ratio}")

    s = alternate({"cached": lambda: sweep(True), "uncached": lambda: sweep(False)}, repeats, 0)
    emit(
        "sweep_cost",
        s["cached"],
        s["uncached"],
        "s/sweep",
        baseline_is="cache_dense=false: one dense training per job",
        sweep=(
            f"prune.ratio=0.5,0.9,0.95, in-process jobs, tiny synthetic, {DENSE_EPOCHS} dense "
            "epochs, 1 retraining epoch"
        ),
        repeats=repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--repeats", type=int, help=f"default: 3, and {RESNET_REPEATS} for epoch_overhead_resnet18"
    )
    parser.add_argument(
        "--only",
        choices=["epoch_overhead", "epoch_overhead_resnet18", "job_overhead", "sweep_cost"],
    )
    args = parser.parse_args()
    quiet_lightning()
    repeats = args.repeats or 3
    if args.only in (None, "epoch_overhead"):
        epoch_overhead(repeats, short=2, long=12)
    if args.only in (None, "epoch_overhead_resnet18"):
        epoch_overhead_resnet18(args.repeats or RESNET_REPEATS)
    if args.only in (None, "job_overhead"):
        job_overhead(repeats)
    if args.only in (None, "sweep_cost"):
        sweep_cost(max(1, repeats - 2))


if __name__ == "__main__":
    main()
