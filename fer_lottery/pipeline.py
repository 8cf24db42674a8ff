"""One experiment: data -> model -> dense fine-tune -> test the best checkpoint -> results.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from fer_lottery.data.sfew import SFEWDataModule
from fer_lottery.io import write_json_atomic
from fer_lottery.models import build_model, freeze_layers
from fer_lottery.module import FERClassifier
from fer_lottery.plots import confusion_figure

log = logging.getLogger(__name__)


def _enum(value) -> str:
    return getattr(value, "value", value)


def _trainer_kwargs(cfg: DictConfig) -> dict:
    """Lightning Trainer arguments from ``cfg.trainer``, with GPU-friendly defaults."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True, enum_to_str=True)
    extra = kwargs.pop("extra") or {}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "precision" not in kwargs:
        kwargs["precision"] = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    kwargs.update(extra)
    return kwargs


def flat_config(cfg: DictConfig) -> dict[str, object]:
    """The resolved config as ``{"data.split_seed": 1, ...}`` with scalars only (for hparams)."""
    out: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = value if isinstance(value, int | float | str | bool) else str(value)

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


def train_stage(
    cfg: DictConfig,
    datamodule: SFEWDataModule,
    module: FERClassifier,
    run_dir: Path,
    stage: str,
) -> dict[str, object]:
    """Train ``module`` for one stage, then test its best-val checkpoint on the held-out split.

    Returns the stage's metrics (``test/*``, ``val/acc_best``, ``time/<stage>_s``) and writes
    TensorBoard scalars, a confusion-matrix image and hparams under ``run_dir/tb/<stage>``.
    """
    tb = TensorBoardLogger(save_dir=run_dir, name="tb", version=stage, default_hp_metric=False)
    csv = CSVLogger(save_dir=run_dir, name="csv", version=stage)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints" / stage,
        filename="best",
        monitor="val/acc",
        mode="max",
        save_top_k=1,
        save_last=True,
    )
    trainer = pl.Trainer(
        logger=[tb, csv],
        callbacks=[checkpoint],
        default_root_dir=run_dir,
        **_trainer_kwargs(cfg),
    )
    if torch.cuda.is_available():
        module = module.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_s = time.perf_counter() - start
    best = checkpoint.best_model_path
    log.info("%s: best val/acc %.4f at %s", stage, checkpoint.best_model_score or 0.0, best)
    # The held-out test split is evaluated once, with the best-validation checkpoint.
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics: dict[str, object] = dict(module.test_results)
    metrics["val/acc_best"] = float(checkpoint.best_model_score or 0.0)
    metrics[f"time/{stage}_s"] = round(train_s, 3)
    metrics["checkpoint"] = str(Path(best).relative_to(run_dir)) if best else None

    figure = confusion_figure(
        metrics["test/confusion"],
        datamodule.class_names,
        title=f"{stage}: test confusion (acc={metrics['test/acc']:.3f})",
    )
    tb.experiment.add_figure("test/confusion", figure, global_step=trainer.global_step)
    figure.savefig(run_dir / f"confusion_{stage}.png")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
    tb.log_hyperparams(flat_config(cfg), scalars)
    tb.finalize("success")
    return metrics


def run_experiment(cfg: DictConfig, run_dir: str | Path) -> dict[str, object]:
    """Run one experiment in ``run_dir`` and write ``results.json``; return the results."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    total_start = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    start = time.perf_counter()
    datamodule = SFEWDataModule(cfg.data, run_dir, seed=cfg.seed, cache_dir=cfg.cache_dir)
    datamodule.setup()
    data_s = time.perf_counter() - start

    name = _enum(cfg.model.name)
    model = build_model(name, cfg.model.weights, cfg.model.num_classes)
    frozen = freeze_layers(model, name, cfg.model.frozen_layers)
    module = FERClassifier(model, cfg.optim, datamodule.class_names, frozen)

    dense = train_stage(cfg, datamodule, module, run_dir, "dense")

    # Without pruning the final model is the dense one; prefixed keys keep the stage explicit.
    stage_keys = [k for k in dense if k.startswith(("test/", "val/"))]
    results: dict[str, object] = {k: dense[k] for k in stage_keys}
    results.update({f"dense/{k}": dense[k] for k in stage_keys})
    results["time/dense_s"] = dense["time/dense_s"]
    results["time/data_s"] = round(data_s, 3)
    results["dense/checkpoint"] = dense["checkpoint"]
    n_params = sum(p.numel() for p in model.parameters())
    results["params/total"] = n_params
    results["params/nonzero"] = int(sum(int((p != 0).sum()) for p in model.parameters()))
    results["params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    results["model/init"] = "random" if cfg.model.weights is None else str(cfg.model.weights)
    results.update(datamodule.stats)
    results["time/total_s"] = round(time.perf_counter() - total_start, 3)
    results["config"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    write_json_atomic(run_dir / "results.json", results)
    return results
