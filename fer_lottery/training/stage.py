"""One training stage with Lightning: fit, keep the best-val weights, test them once."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment

from fer_lottery import tracking
from fer_lottery.config import settings
from fer_lottery.config.sweeps import swept_params
from fer_lottery.core import paths
from fer_lottery.core.devices import (
    assigned_gpu,
    compute_device,
    lightning_accelerator,
    resolved_device,
)
from fer_lottery.core.seeding import seed_all
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.job import termination
from fer_lottery.models.units import depthwise
from fer_lottery.store.atomic import write_json_atomic
from fer_lottery.store.predictions import Predictions, write_predictions
from fer_lottery.store.weights import load_weights, save_weights
from fer_lottery.training import stage_logs
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.host_heap import keep_freed_memory, setup_heap_frozen
from fer_lottery.training.stage_callbacks import BestWeights, FaultPoint, ResumeCheckpoint

log = logging.getLogger(__name__)


# The tag prefix of the final metrics in TensorBoard's hparams tab (``hp/test/acc``, ...).
HPARAMS_PREFIX = "hp/"


def trainer_kwargs(cfg: DictConfig, max_epochs: int | None = None) -> dict:
    """Lightning Trainer arguments from ``cfg.trainer``, with GPU-friendly defaults."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True, enum_to_str=True)
    extra = kwargs.pop("extra") or {}
    for key in settings.trainer_own_keys():  # fer_lottery's, not Lightning's (lightning=False)
        kwargs.pop(key, None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "precision" not in kwargs:
        kwargs["precision"] = "bf16-mixed" if resolved_device(cfg) == "cuda" else "32-true"
    kwargs["accelerator"] = lightning_accelerator(cfg)
    if resolved_device(cfg) == "cuda":
        kwargs["devices"] = [assigned_gpu()]  # one GPU per sweep job, spread by job index
    if max_epochs is not None:
        kwargs["max_epochs"] = max_epochs
    if SLURMEnvironment.detect():
        # In a SLURM job, requeueing belongs to the launcher (submitit, on USR2, after the
        # stage's own checkpoint); Lightning's auto-requeue (on USR1, with checkpoints of its
        # own that the stage would not resume from) stays off.
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    kwargs.update(extra)
    return kwargs


def prepare_model(cfg: DictConfig, module: FERClassifier) -> FERClassifier:
    """channels_last on a GPU, and on the CPU for a model with depthwise convolutions (0.72x the
    NCHW time for MobileNetV2 and 0.67x for tf_efficientnet_lite0 in a plain loop at 112 px;
    README, ``make bench``); ``torch.compile`` with ``trainer.compile=true``.

    ``nn.Module.compile`` compiles in place, so state-dict keys, masks and checkpoints keep
    their names, and the stages of a job that share the model compile it once.
    """
    if resolved_device(cfg) == "cuda" or any(depthwise(m) for m in module.modules()):
        module = module.to(memory_format=torch.channels_last)
    if cfg.trainer.get("compile") and getattr(module.model, "_compiled_call_impl", None) is None:
        module.model.compile()
    return module


def autocast_dtype(precision: object) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision (``bf16-mixed``: bfloat16), or None (32)."""
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return None


@torch.no_grad()
def split_logits(
    model: torch.nn.Module, datamodule: FaceDataModule, split: str, cfg: DictConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of ``model`` on a split, in order, on the CPU, in float32: eval mode,
    no augmentation, plain PyTorch.

    On the training device and in the precision the stage's own test uses (Lightning moves the
    module back to the CPU after fit and test; evaluating it there, in fp32, would be slow and
    not comparable). The model is put back where it was. The outputs stay on the device until
    the end: one host copy per split, not one per batch.
    """
    device = compute_device(cfg)
    home = next(model.parameters()).device
    was_training = model.training
    model.to(device).eval()
    dtype = autocast_dtype(trainer_kwargs(cfg)["precision"])
    outputs, labels = [], []
    try:
        for images, y in datamodule.eval_loader(split):
            x = datamodule.transform(images.to(device, non_blocking=True), train=False)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outputs.append(model(x).float())
            labels.append(y)
    finally:
        model.to(home).train(was_training)
    if not outputs:
        return torch.zeros(0, len(datamodule.class_names)), torch.zeros(0, dtype=torch.long)
    return torch.cat(outputs).cpu(), torch.cat(labels)


def evaluate(
    model: torch.nn.Module, datamodule: FaceDataModule, split: str, cfg: DictConfig
) -> float:
    """Accuracy of ``model`` on a split (``split_logits``)."""
    logits, labels = split_logits(model, datamodule, split, cfg)
    return float((logits.argmax(1) == labels).sum()) / max(len(labels), 1)


def _write_predictions(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    module: FERClassifier,
    out_dir: Path,
    stage: str,
    test_probs: torch.Tensor | None,
) -> None:
    """``predictions_<stage>.csv``: the stage's final model on every test and validation image.

    The test rows come from the stage's own test (so they agree with its ``test/acc``); the
    validation rows from one more evaluation pass.
    """
    if test_probs is None or len(test_probs) != len(datamodule.ids["test"]):
        # no test of its own, or a partial one (trainer.extra.limit_test_batches): every image
        test_probs = torch.softmax(split_logits(module.model, datamodule, "test", cfg)[0], 1)
    val_probs = torch.softmax(split_logits(module.model, datamodule, "val", cfg)[0], 1)
    splits = {}
    for name, probs in (("test", test_probs), ("val", val_probs)):
        probs = probs.numpy()
        splits[name] = Predictions(
            items=list(datamodule.ids[name]),
            labels=datamodule.labels[name].numpy(),
            preds=probs.argmax(1),
            probs=probs,
        )
    write_predictions(out_dir, stage, datamodule.class_names, splits)


@dataclass
class Stage:
    """What one stage is, beyond a plain fit: its name (``dense``, ``retrain``, ``gradual``, ...),
    the callbacks that give it its timing (a mask kept, pruning steps, a fresh optimizer), its
    epochs (None: ``trainer.max_epochs``), the first epoch that may be the best (gradual
    pruning: those at the final sparsity), the (seed, name) of its SGD noise (None: the job's
    seed and the stage's name; the stability analysis gives its second retraining another seed
    under the first one's name), and what its TensorBoard hparams tab shows (``hparams``; None:
    the job's swept keys) beside its final metrics and ``extra_metrics``."""

    name: str
    callbacks: list[pl.Callback] = field(default_factory=list)
    max_epochs: int | None = None
    best_from_epoch: int = 0
    noise: tuple[int, str] | None = None
    hparams: dict[str, object] | None = None
    extra_metrics: dict[str, float] | None = None


@dataclass
class _Run:
    """A stage's Trainer with what it keeps: the best weights, the resumable checkpoint, the
    epoch boundary signals wait for, its logs and where it resumes from."""

    trainer: pl.Trainer
    best: BestWeights
    boundary: termination.EpochBoundary
    tb: TensorBoardLogger
    resume: stage_logs.Resume


def _report_stage(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    module: FERClassifier,
    metrics: dict[str, object],
    tb: TensorBoardLogger,
    step: int,
    out_dir: Path,
    stage: Stage,
) -> None:
    """Confusion image (TensorBoard and PNG), per-image predictions, and the hparams tab: swept
    keys + final metrics."""
    _write_predictions(cfg, datamodule, module, out_dir, stage.name, module.test_probs)
    hparams = swept_params(cfg) if stage.hparams is None else stage.hparams
    # Imported here, after training: matplotlib is not needed before.
    from PIL import Image

    from fer_lottery.plotting import confusion_figure, render

    figure = confusion_figure(
        metrics["test/confusion"],
        datamodule.class_names,
        title=f"{stage.name}: test confusion (acc={metrics['test/acc']:.3f})",
    )
    pixels = render(figure)
    Image.fromarray(pixels).save(paths.confusion_png(out_dir, stage.name))
    tb.experiment.add_image("test/confusion", pixels, global_step=step, dataformats="HWC")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
    scalars.update(stage.extra_metrics or {})
    # The hparams tab's final metrics get tags of their own: Lightning logs them at step 0, and
    # under a curve's own tag (val/acc_best) that point after the last epoch would break the
    # curve in TensorBoard's server.
    tb.log_hyperparams(hparams, {f"{HPARAMS_PREFIX}{k}": v for k, v in scalars.items()})
    tb.finalize("success")


def train_stage(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    module: FERClassifier,
    out_dir: Path,
    stage: Stage | str,
) -> dict[str, object]:
    """Train ``module`` for one stage, then test its best-validation weights on the held-out split.

    The best epoch's weights are kept in memory (``BestWeights``): no file is written when
    validation improves. A resumable checkpoint (``out_dir/checkpoints/<stage>/last.ckpt``:
    model, optimizer, epoch, the best weights and score, callback state such as the mask) is
    written when one is due (``trainer.checkpoint_every_s``, ``checkpoint_every_n_epochs``). A
    stage that was killed resumes from it and ends with the same numbers as an uninterrupted
    one: every epoch reseeds the RNGs and reshuffles from (seed, stage, epoch), so the epochs
    after the checkpoint run again exactly. Its CSV and TensorBoard curves keep the epochs up to
    the checkpoint (``stage_logs``). A finished stage leaves its result in the same folder, so a
    job killed later reruns without training it again.

    Returns ``test/*``, ``val/acc_best``, ``time/train_s``, ``time/test_s`` and ``stage``, and
    writes ``predictions_<stage>.csv`` (``store.predictions``), TensorBoard scalars, a
    confusion-matrix image and the hparams tab under ``out_dir/tb/<stage>``. On return the
    module holds the best weights.
    """
    stage = stage if isinstance(stage, Stage) else Stage(stage)
    ckpt_dir = paths.stage_checkpoints(out_dir, stage.name)
    finished = _finished(ckpt_dir, stage.name)
    if finished is not None:
        metrics, weights = finished
        module.model.load_state_dict(weights)
        log.info("%s: finished in an earlier attempt of this job; loaded its result", stage.name)
        return metrics
    keep_freed_memory()
    run = _start(cfg, datamodule, out_dir, ckpt_dir, stage)
    module = prepare_model(cfg, module)
    module.best_from_epoch = stage.best_from_epoch  # its logged best follows the stage's rule
    train_s = _fit(run, cfg, module, datamodule, stage)
    metrics, test_s = _test_best(run, module, datamodule)
    metrics.update(
        {"stage": stage.name, "time/train_s": round(train_s, 3), "time/test_s": round(test_s, 3)}
    )
    _report_stage(cfg, datamodule, module, metrics, run.tb, run.trainer.global_step, out_dir, stage)
    _keep_finished(ckpt_dir, module, metrics)
    run.boundary.act()  # a signal in the last epoch waited for the stage's result to be kept
    return metrics


def _start(
    cfg: DictConfig, datamodule: FaceDataModule, out_dir: Path, ckpt_dir: Path, stage: Stage
) -> _Run:
    """The stage's Trainer, its callbacks and logs, and the epochs' seeds."""
    resume, tb, csv = stage_logs.prepare(out_dir, stage.name)
    best = BestWeights("val/acc", from_epoch=stage.best_from_epoch)
    every = int(cfg.trainer.get("checkpoint_every_n_epochs", 0))
    every_s = float(cfg.trainer.get("checkpoint_every_s", 0))
    boundary = termination.EpochBoundary()  # what a signal asks of the running epoch
    resumable = ResumeCheckpoint(ckpt_dir / paths.LAST_CKPT, every, every_s, boundary)
    datamodule.seed_epochs(*_noise(cfg, stage))
    compute_device(cfg)  # the job's GPU from here on (peak memory counted from here)
    trainer = pl.Trainer(
        logger=[tb, csv, *tracking.current().stage_loggers(stage.name)],
        callbacks=[
            best,
            resumable,
            FaultPoint(stage.name),
            LearningRateMonitor(logging_interval="epoch"),
            *stage.callbacks,
        ],
        default_root_dir=out_dir,
        **trainer_kwargs(cfg, stage.max_epochs),
    )
    return _Run(trainer, best, boundary, tb, resume)


def _noise(cfg: DictConfig, stage: Stage) -> tuple[int, str]:
    """The (seed, name) that seed the stage's SGD noise."""
    return stage.noise if stage.noise is not None else (cfg.seed, stage.name)


def _fit(
    run: _Run, cfg: DictConfig, module: FERClassifier, datamodule: FaceDataModule, stage: Stage
) -> float:
    """Fit (or resume) the stage; the seconds it took. The best weights are restored after."""
    if run.resume.ckpt is not None:
        log.info(
            "%s: resuming after epoch %d from %s", stage.name, run.resume.epoch, run.resume.ckpt
        )
    start = time.perf_counter()
    # Seeded right before fit, by the stage's name alone: what the stage draws does not depend
    # on whether the dense stage ran in this process or came from the cache.
    seed_all(*_noise(cfg, stage))
    with termination.epoch_boundary(run.boundary), setup_heap_frozen():
        run.trainer.fit(module, datamodule=datamodule, ckpt_path=run.resume.ckpt)
    if run.boundary.stop is not None and run.trainer.should_stop:
        run.boundary.act()  # a signal stopped the fit after an epoch and its checkpoint
    seconds = time.perf_counter() - start
    best = run.best
    if best.weights is None:
        log.warning("%s: no validation ran; testing the last weights", stage.name)
    log.info("%s: best val/acc %.4f (epoch %d)", stage.name, best.score or 0.0, best.epoch)
    best.restore(module)
    return seconds


def _test_best(
    run: _Run, module: FERClassifier, datamodule: FaceDataModule
) -> tuple[dict[str, object], float]:
    """The held-out test split, evaluated once per stage, with the best-validation weights: its
    metrics and ``val/acc_best``, and the seconds it took."""
    start = time.perf_counter()
    run.trainer.test(module, datamodule=datamodule, verbose=False)
    metrics: dict[str, object] = dict(module.test_results)
    metrics["val/acc_best"] = float(run.best.score or 0.0)
    return metrics, time.perf_counter() - start


def _keep_finished(ckpt_dir: Path, module: FERClassifier, metrics: dict[str, object]) -> None:
    """Replace the stage's resumable checkpoint by its result: weights (sparse) and metrics.

    A job killed after this stage (in a later stage, or while ``results.json`` is written)
    loads the result on its rerun instead of training the stage again. ``run_experiment``
    removes ``checkpoints/`` once ``results.json`` is written.
    """
    save_weights(ckpt_dir / paths.FINISHED_WEIGHTS, module.model.state_dict())
    write_json_atomic(ckpt_dir / paths.FINISHED_METRICS, metrics)  # last: it marks the result whole
    (ckpt_dir / paths.LAST_CKPT).unlink(missing_ok=True)


def _finished(ckpt_dir: Path, stage: str) -> tuple[dict, dict] | None:
    """(metrics, weights) of the stage when an earlier attempt of this job finished it."""
    if not (ckpt_dir / paths.FINISHED_METRICS).is_file():
        return None
    try:
        metrics = json.loads((ckpt_dir / paths.FINISHED_METRICS).read_text())
        return metrics, load_weights(ckpt_dir / paths.FINISHED_WEIGHTS)
    except Exception as exc:  # damaged: train the stage again (same numbers, only later)
        log.warning(
            "%s: its finished result in %s cannot be read (%s); training it again",
            stage,
            ckpt_dir,
            exc,
        )
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return None


def test_stage(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    module: FERClassifier,
    out_dir: Path,
    stage: Stage | str,
) -> dict[str, object]:
    """Test ``module`` as it is, with no training (``retrain.epochs=0``, as in paper B).

    Returns the same keys as ``train_stage``; ``val/acc_best`` is the model's val accuracy. Of
    ``stage``, only its name and what its hparams tab shows apply.
    """
    stage = stage if isinstance(stage, Stage) else Stage(stage)
    _, tb, csv = stage_logs.prepare(
        out_dir, stage.name
    )  # a rerun replaces an earlier attempt's logs
    compute_device(cfg)
    trainer = pl.Trainer(logger=[tb, csv], default_root_dir=out_dir, **trainer_kwargs(cfg, 0))
    module = prepare_model(cfg, module)
    start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    test_s = time.perf_counter() - start
    metrics: dict[str, object] = dict(module.test_results)
    metrics["val/acc_best"] = evaluate(module.model, datamodule, "val", cfg)
    metrics["stage"] = stage.name
    metrics["time/train_s"] = 0.0
    metrics["time/test_s"] = round(test_s, 3)
    _report_stage(cfg, datamodule, module, metrics, tb, 0, out_dir, stage)
    return metrics
