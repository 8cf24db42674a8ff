"""The dense stage: fine-tune the model once, through the dense cache, and keep its start weights.

Every job of a prune sweep with the same data, model, optim, trainer and seed shares one dense
fine-tune (``store.dense_cache``); ``cache_dense=false`` trains a job's own copy in its run dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from fer_lottery import tracking
from fer_lottery.config.sweeps import swept_params
from fer_lottery.core import paths
from fer_lottery.core.devices import resolved_device
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.pruning.mask_callbacks import SnapshotAtEpoch
from fer_lottery.pruning.rewind import snapshot_epoch
from fer_lottery.store.dense_cache import DenseEntry, dense_key, load_state
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.stage import Stage, train_stage, trainer_kwargs

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]


def cache_key(
    cfg: DictConfig, data_fingerprint: str = "", weights_sha256: str | None = None
) -> str:
    """The dense cache key of this job: its settings with the device, precision, theta_k epoch
    and start weights they resolve to."""
    return dense_key(
        cfg,
        data_fingerprint,
        device=resolved_device(cfg),
        precision=str(trainer_kwargs(cfg)["precision"]),
        snapshot_epoch=snapshot_epoch(cfg),
        weights_sha256=weights_sha256,
    )


def _train(
    cfg: DictConfig, datamodule: FaceDataModule, module: FERClassifier, out_dir: Path, k: int | None
) -> dict:
    """Fine-tune into ``out_dir``, writing theta_k there when epoch k >= 1 is needed."""
    callbacks = [SnapshotAtEpoch(k, out_dir / paths.THETA_K)] if k else []
    hparams = {n: v for n, v in swept_params(cfg).items() if not n.startswith("prune.")}
    stage = Stage("dense", callbacks=callbacks, hparams=hparams)
    return train_stage(cfg, datamodule, module, out_dir, stage)


def dense_stage(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    module: FERClassifier,
    run_dir: Path,
    weights_sha256: str | None = None,
) -> tuple[dict, dict[str, State | None]]:
    """Fine-tune the dense model, or load it from the cache; leave its best weights in the module.

    ``weights_sha256``: the hash of the start weights ``model.weights`` resolved to, part of the
    cache key (``store.dense_cache.dense_key``).

    Returns the dense metrics and the states to rewind to: ``theta0`` (before fine-tuning) and
    ``theta_k`` (after ``retrain.rewind_epoch`` epochs, when ``retrain.rewind=epoch``).
    """
    k = snapshot_epoch(cfg)
    theta0 = {n: v.detach().cpu().clone() for n, v in module.model.state_dict().items()}
    if not cfg.cache_dense:
        metrics = _train(cfg, datamodule, module, run_dir, k)
        metrics["cache"] = "off"
        theta_k = None if k is None else theta0 if k == 0 else load_state(run_dir / paths.THETA_K)
        return metrics, {"theta0": theta0, "theta_k": theta_k}

    key = cache_key(cfg, datamodule.fingerprint(), weights_sha256)
    entry = DenseEntry(cfg.cache_dir, key, k)
    with entry.locked(cfg.cache_lock_timeout_s, job=str(run_dir)):
        if entry.check():
            log.info("dense cache hit %s: reusing the dense fine-tune, no training", entry.key)
            status = "hit"
        else:
            status = entry.start(theta0)
            log.info(
                "dense cache %s %s: training the dense model once for every job", status, entry.key
            )
            metrics = _train(cfg, datamodule, module, entry.partial, k)
            tracking.current().sent("dense")  # its curves went to the trackers as it trained
            entry.publish(metrics, module.model.state_dict())
    module.model.load_state_dict(entry.load(paths.BEST))
    entry.copy_logs(run_dir)
    if status == "hit":  # a tracker's run of this job gets the dense curves too
        tracking.current().replay("dense", paths.stage_csv(run_dir, "dense") / paths.METRICS_CSV)
    metrics = entry.metrics()
    metrics.update(cache=status, cache_key=entry.key)
    return metrics, entry.start_weights()
