"""One experiment: dense fine-tune (cached) -> prune -> rewind or continue -> retrain -> test.

``run_experiment`` reads as the steps it takes; each step lives in its own module
(``experiment.dense``, ``experiment.retrain``). It writes ``results.json`` (flat slash keys plus
the resolved config, checked against ``store.results`` first) into the run directory.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from fer_lottery.config import config_changes, enum_value, resolved, run_prunes
from fer_lottery.core import paths
from fer_lottery.core.devices import device_facts, new_job, used_gpu
from fer_lottery.core.seeding import seeded, set_threads
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.experiment.dense import dense_stage
from fer_lottery.experiment.gradual import gradual_prune
from fer_lottery.experiment.retrain import prune_and_retrain
from fer_lottery.job import faults
from fer_lottery.models import build, count_macs, freeze_layers, prunable_weights
from fer_lottery.models.backbone import spec
from fer_lottery.models.checks import batchnorm_trains
from fer_lottery.models.weights import Loaded, normalization
from fer_lottery.store.atomic import move_aside, temp_files, write_json_atomic
from fer_lottery.store.results import check_results
from fer_lottery.store.weights import save_weights
from fer_lottery.tracking import open_trackers, retire
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.packing import job_threads
from fer_lottery.training.stage import trainer_kwargs

log = logging.getLogger(__name__)


def run_experiment(cfg: DictConfig, run_dir: str | Path) -> dict[str, object]:
    """Run one experiment in ``run_dir`` and write ``results.json``; return the results.

    Each point that draws random numbers is seeded on its own (``fer_lottery.core.seeding``), so a
    number never depends on what ran before it: face detection or a cache hit, say.
    """
    run_dir, start = Path(run_dir), time.perf_counter()
    threads = _start_job(cfg, run_dir)
    with open_trackers(cfg, run_dir) as trackers:  # logger=mlflow / wandb: one run per job
        datamodule, data_s = _load_data(cfg, run_dir)
        model, frozen, weights = _build_model(cfg)
        module = FERClassifier(model, cfg.optim, datamodule.class_names, frozen)
        dense, start_weights = dense_stage(cfg, datamodule, module, run_dir, weights.sha256)
        final, pruning = dense, {}
        if run_prunes(cfg) and enum_value(cfg.prune.schedule) == "gradual":
            final, pruning = gradual_prune(cfg, datamodule, model, frozen, start_weights, run_dir)
        elif run_prunes(cfg):
            final, pruning = prune_and_retrain(
                cfg, datamodule, model, frozen, start_weights, run_dir
            )
        results = _results(cfg, model, datamodule, dense, final, pruning, threads, data_s, start)
        results.update(_weights_keys(cfg, weights, datamodule))
        _write(cfg, run_dir, model, results)
        trackers.finish(results)
    return results


def _start_job(cfg: DictConfig, run_dir: Path) -> int:
    """Make the run dir, drop a results file half-written by a killed job, set the threads."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for leftover in temp_files(run_dir / paths.RESULTS):  # from a job killed while writing
        leftover.unlink()
    _checkpoints_of_this_config(cfg, run_dir)
    threads = set_threads(job_threads(cfg))
    log.info("torch threads: %d (set threads=N to change; CPU results depend on it)", threads)
    new_job()  # no CUDA context yet: the job's GPU is taken when it first computes there
    return threads


def _checkpoints_of_this_config(cfg: DictConfig, run_dir: Path) -> None:
    """A killed job resumes only from checkpoints of the same config: those of another one (a
    relaunch with a changed setting) are moved aside, so every stage starts over."""
    checkpoints = run_dir / paths.CHECKPOINTS
    stamp = checkpoints / paths.CONFIG_STAMP
    data = _data_digest(cfg)
    if checkpoints.is_dir():
        try:
            recorded = json.loads(stamp.read_text())
            recorded_data = recorded.pop(DATA_STAMP, None)
            changed = config_changes(recorded, cfg)
            if recorded_data != data:
                changed.append(f"the files under data.root={cfg.data.root}")
        except (OSError, ValueError) as exc:  # no stamp (or a torn one): whose they are is unknown
            changed = [f"{stamp.name} cannot be read ({type(exc).__name__})"]
        if changed:
            log.warning(
                "%s holds checkpoints of another config (%s); %s; every stage starts over",
                run_dir,
                "; ".join(changed[:5]) + ("; ..." if len(changed) > 5 else ""),
                move_aside(checkpoints, "stale", folder=run_dir / paths.QUARANTINE),
            )
            retire(run_dir, "a relaunch with another config: " + "; ".join(changed))
            # The killed config's per-image predictions are not this config's either.
            for stale in sorted(run_dir.glob(paths.PREDICTIONS_GLOB)):
                move_aside(stale, "stale", folder=run_dir / paths.QUARANTINE)
    write_json_atomic(stamp, {**resolved(cfg), DATA_STAMP: data})


# The checkpoint stamp's key for the data the checkpoints were trained on.
DATA_STAMP = "__data_root_digest__"


def _data_digest(cfg: DictConfig) -> str | None:
    """``root_digest`` of SFEW's data root (None for synthetic faces: the config says it all)."""
    if enum_value(cfg.data.name) == "synthetic":
        return None
    from fer_lottery.data.layout import root_digest

    return root_digest(cfg.data.root)


def _load_data(cfg: DictConfig, run_dir: Path) -> tuple[FaceDataModule, float]:
    """The data module with its splits set up, and the seconds it took."""
    start = time.perf_counter()
    single = batchnorm_trains(str(cfg.model.name), cfg.model.frozen_layers)
    mean_std, source = normalization(
        enum_value(cfg.data.normalize), spec(str(cfg.model.name)), cfg.model.weights
    )
    log.info("input normalisation: %s (%s)", mean_std or "none, [0, 1] values", source)
    datamodule = FaceDataModule(
        cfg.data,
        run_dir,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        drop_single_last=single,
        mean_std=mean_std,
    )
    datamodule.normalization_source = source
    with seeded(cfg.seed, "data"):
        datamodule.setup()
    return datamodule, time.perf_counter() - start


def _build_model(cfg: DictConfig) -> tuple[nn.Module, list[nn.Module], Loaded]:
    """The network with its start weights (theta0), its frozen modules, and where its weights
    came from."""
    arch = str(cfg.model.name)
    with seeded(cfg.seed, "model"):
        model, weights = build(arch, cfg.model.weights, cfg.model.num_classes)
    log.info("%s", _model_line(cfg, model, weights))
    return model, freeze_layers(model, arch, cfg.model.frozen_layers), weights


def _model_line(cfg: DictConfig, model: nn.Module, weights: Loaded) -> str:
    """The job's one line on its network (Lightning's own summary is off unless
    ``trainer.enable_model_summary=true``): start weights, parameters, prunable weights and
    multiply-accumulates per image, as ``results.json`` counts them."""
    if weights.pretrained:
        start = f"ImageNet-pretrained ({weights.source}), new {cfg.model.num_classes}-way head"
    elif weights.sha256 is None:
        start = "random init (NOT pretrained)"
    else:
        start = f"weights from {weights.source}"
    params = sum(p.numel() for p in model.parameters())
    names = set(prunable_weights(model, list(cfg.prune.include)))
    prunable = sum(p.numel() for n, p in model.named_parameters() if n in names)
    macs, _ = count_macs(model, cfg.data.image_size)
    return (
        f"model: {cfg.model.name}, {start}; {params / 1e6:.2f} M parameters "
        f"({prunable / 1e6:.2f} M in the prunable weights of prune.include), "
        f"{macs / 1e6:.1f} M MACs per {cfg.data.image_size} px image"
    )


def _weights_keys(cfg: DictConfig, weights: Loaded, datamodule: FaceDataModule) -> dict:
    """What the start weights were and how the inputs were normalised for them."""
    mean_std = datamodule.mean_std
    return {
        "model/pretrained": weights.pretrained,
        "model/weights_source": weights.source,
        "model/weights_sha256": weights.sha256,
        "data/normalize_mean": list(mean_std[0]) if mean_std else None,
        "data/normalize_std": list(mean_std[1]) if mean_std else None,
        "data/normalize_source": datamodule.normalization_source,
    }


def _results(
    cfg: DictConfig,
    model: nn.Module,
    datamodule: FaceDataModule,
    dense: dict,
    final: dict,
    pruning: dict,
    threads: int,
    data_s: float,
    start: float,
) -> dict[str, object]:
    """The results.json keys (``store.results``) of the final model, the dense one and the run."""
    results: dict[str, object] = {k: v for k, v in final.items() if k.startswith(("test/", "val/"))}
    results.update({f"dense/{k}": v for k, v in dense.items() if k.startswith(("test/", "val/"))})
    results["dense/cache"] = dense.get("cache")
    results["dense/cache_key"] = dense.get("cache_key")  # where a dense-only job's weights are
    results.update(pruning)
    stage = final.get("stage") or ("dense" if final is dense else None)
    if stage:  # the stage whose predictions_<stage>.csv goes with test/*
        results["predictions/stage"] = stage
    params = list(model.parameters())
    results["params/total"] = sum(p.numel() for p in params)
    results["params/nonzero"] = sum(int(torch.count_nonzero(p)) for p in params)
    results["params/trainable"] = sum(p.numel() for p in params if p.requires_grad)
    results["flops/total"], results["flops/nonzero"] = count_macs(model, cfg.data.image_size)
    results["torch/threads"] = threads
    results.update(device_facts(cfg, trainer_kwargs(cfg)["precision"]))
    results["model/init"] = "random" if cfg.model.weights is None else str(cfg.model.weights)
    results.update(datamodule.stats)
    results["time/dense_s"] = dense["time/train_s"]
    # Test passes this job ran (a dense stage from the cache was tested by the job that trained it).
    dense_test_s = 0.0 if dense.get("cache") == "hit" else dense.get("time/test_s", 0.0)
    results["time/test_s"] = round(dense_test_s + pruning.get("time/test_s", 0.0), 3)
    results["time/data_s"] = round(data_s, 3)
    results["time/total_s"] = round(time.perf_counter() - start, 3)
    if used_gpu():  # this job's peak GPU memory, for packing jobs on one GPU
        gb = 1024**3
        results["gpu/max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated() / gb, 3)
        results["gpu/max_memory_reserved_gb"] = round(torch.cuda.max_memory_reserved() / gb, 3)
    results["config"] = resolved(cfg)
    return results


def _write(cfg: DictConfig, run_dir: Path, model: nn.Module, results: dict) -> None:
    """Check the results, store the final weights, write results.json, drop the checkpoints."""
    check_results(results, run_dir / paths.RESULTS)  # a key missing or mistyped: fail, not write
    if run_prunes(cfg) or not cfg.cache_dense:  # else the dense cache entry holds them
        save_weights(run_dir / paths.WEIGHTS, model.state_dict())
    write_json_atomic(run_dir / paths.RESULTS, results, after_write=lambda: faults.at("results"))
    # What remains only serves to resume (last.ckpt holds the optimizer state: 100 MB on
    # ResNet-18); the final weights are in weights.pt, sparse.
    shutil.rmtree(run_dir / paths.CHECKPOINTS, ignore_errors=True)
