"""One experiment: dense fine-tune (cached) -> prune -> rewind or continue -> retrain -> test.

Writes ``results.json`` (flat slash keys plus the resolved config) into the run directory.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fer_lottery.config import enum_value
from fer_lottery.config.sweeps import swept_params
from fer_lottery.data.sfew import SFEWDataModule
from fer_lottery.job import faults
from fer_lottery.models import build_model, count_macs, freeze_layers, prunable_weights
from fer_lottery.pruning.callbacks import KeepMasked, SnapshotAtEpoch
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask import Mask, zero_fraction
from fer_lottery.pruning.random import random_mask
from fer_lottery.seeding import seeded, set_threads
from fer_lottery.store.atomic import write_json_atomic
from fer_lottery.store.dense_cache import DenseEntry, dense_key, load_state, snapshot_epoch
from fer_lottery.store.results import check_results
from fer_lottery.store.weights import WEIGHTS_FILE, save_weights
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.stage import evaluate, test_stage, train_stage

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]


def _clone(state: State) -> State:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def prune_active(cfg: DictConfig) -> bool:
    """Whether this run prunes: distinctiveness always, magnitude and random when ratio > 0."""
    method = enum_value(cfg.prune.method)
    return method == "distinctiveness" or (method != "none" and cfg.prune.ratio > 0)


# -- dense stage ---------------------------------------------------------------------------------


def dense_stage(
    cfg: DictConfig, datamodule: SFEWDataModule, module: FERClassifier, run_dir: Path
) -> tuple[dict, dict[str, State | None]]:
    """Fine-tune the dense model, or load it from the cache; leave its best weights in the module.

    Returns the dense metrics and the states to rewind to: ``theta0`` (before fine-tuning) and
    ``theta_k`` (after ``prune.rewind_epoch`` epochs, when ``prune.rewind=epoch``).
    """
    k = snapshot_epoch(cfg)
    hparams = {n: v for n, v in swept_params(cfg).items() if not n.startswith("prune.")}

    def train(out_dir: Path) -> dict:
        callbacks = [SnapshotAtEpoch(k, out_dir / "theta_k.pt")] if k else []
        return train_stage(
            cfg, datamodule, module, out_dir, "dense", callbacks=callbacks, hparams=hparams
        )

    theta0 = _clone(module.model.state_dict())
    if not cfg.cache_dense:
        metrics = train(run_dir)
        metrics["cache"] = "off"
        theta_k = None if k is None else theta0 if k == 0 else load_state(run_dir / "theta_k.pt")
        return metrics, {"theta0": theta0, "theta_k": theta_k}

    entry = DenseEntry(cfg.cache_dir, dense_key(cfg, datamodule.fingerprint()))
    entry.acquire(cfg.cache_lock_timeout_s, job=str(run_dir))
    try:
        if entry.done():
            log.info("dense cache hit %s: reusing the dense fine-tune, no training", entry.key)
            status = "hit"
        else:
            status = "resumed" if entry.partial.is_dir() else "miss"
            log.info(
                "dense cache %s %s: training the dense model once for every job", status, entry.key
            )
            entry.partial.mkdir(parents=True, exist_ok=True)
            # theta0 is written once, by the job that starts the entry: a resumed job keeps it.
            if entry.load_partial("theta0.pt") is None:
                DenseEntry.save_state(entry.partial / "theta0.pt", theta0)
            metrics = train(entry.partial)
            DenseEntry.save_state(entry.partial / "best.pt", _clone(module.model.state_dict()))
            if k == 0:
                shutil.copy2(entry.partial / "theta0.pt", entry.partial / "theta_k.pt")
            files = ["theta0.pt", "best.pt"] + (["theta_k.pt"] if k is not None else [])
            entry.finish(metrics, files)
    finally:
        entry.release()
    module.model.load_state_dict(entry.load("best.pt"))
    entry.copy_logs(run_dir)
    metrics = entry.metrics()
    metrics.update(cache=status, cache_key=entry.key)
    states = {"theta0": entry.load("theta0.pt"), "theta_k": None}
    if k is not None:
        states["theta_k"] = entry.load("theta_k.pt")
    return metrics, states


# -- pruning -------------------------------------------------------------------------------------


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_mask(
    cfg: DictConfig,
    model: nn.Module,
    names: list[str],
    ratio: float,
    previous: Mask | None,
    datamodule: SFEWDataModule,
) -> tuple[Mask, dict[str, object], dict[str, torch.Tensor]]:
    """Run the configured strategy on the model's current weights: a Mask, what it did, and (for
    distinctiveness) which units of each layer it removed."""
    p = cfg.prune
    method = enum_value(p.method)
    seed = cfg.seed if p.seed is None else p.seed
    if method == "magnitude":
        return magnitude_mask(model, names, ratio, p.scope, previous), {}, {}
    if method == "random":
        return random_mask(model, names, ratio, p.scope, previous, seed=seed), {}, {}
    from fer_lottery.pruning.distinctiveness import distinctiveness_prune

    device = _device()
    model.to(device)
    batches = (
        datamodule.transform(x.to(device), train=False) for x, _ in datamodule.eval_loader("train")
    )
    result = distinctiveness_prune(
        model,
        enum_value(cfg.model.name),
        batches,
        angle=p.angle,
        complementary=p.complementary,
        normalize=enum_value(p.normalize),
        norm_std=p.norm_std,
        variant=enum_value(p.variant),
        layers=list(p.layers) if p.layers is not None else None,
        device=device,
    )
    model.cpu()
    mask = result.mask if previous is None else result.mask & previous
    removed, total = sum(result.units_removed.values()), sum(result.units_total.values())
    info: dict[str, object] = {
        "prune/units_removed_frac": removed / total if total else 0.0,
        "prune/units_removed": removed,
        "prune/units_total": total,
        "prune/similar_pairs": result.similar_pairs,
        "prune/complementary_pairs": result.complementary_pairs,
        "time/angles_s": round(result.angle_seconds, 4),
    }
    info.update({f"prune/units_removed/{n}": v for n, v in result.units_removed.items()})
    if result.units_revived:  # paper_b: removed units that a later merge wrote back into
        info["prune/units_revived"] = sum(result.units_revived.values())
        info.update({f"prune/units_revived/{n}": v for n, v in result.units_revived.items()})
    removed = {n: pairing.removed.cpu().clone() for n, pairing in result.pairings.items()}
    return mask, info, removed


def frozen_state_names(model: nn.Module, frozen: list[nn.Module]) -> set[str]:
    """State-dict names (parameters and buffers) of the frozen modules."""
    ids = {id(m) for m in frozen}
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if id(module) in ids:
            names.update(f"{prefix}.{n}" if prefix else n for n in module.state_dict())
    return names


def set_start_weights(
    cfg: DictConfig,
    model: nn.Module,
    states: dict,
    mask: Mask,
    frozen_names: set[str] = frozenset(),
) -> None:
    """Rewind (or not) the surviving weights, then apply the mask.

    none: keep the fine-tuned weights; pretrained: all of theta0 (every parameter and BN
    buffer); epoch: theta_k; random: a fresh random initialisation of what trains (the
    control); the frozen layers (``frozen_names``) keep their loaded weights, since nothing
    would ever train them.
    """
    rewind = enum_value(cfg.prune.rewind)
    if rewind == "pretrained":
        model.load_state_dict(states["theta0"])
    elif rewind == "epoch":
        model.load_state_dict(states["theta_k"])
    elif rewind == "random":
        seed = cfg.seed if cfg.prune.seed is None else cfg.prune.seed
        with seeded(seed, "rewind-random"):
            fresh = build_model(enum_value(cfg.model.name), None, cfg.model.num_classes)
        state = fresh.state_dict()
        if frozen_names:
            kept = states["theta0"]
            state.update({n: kept[n] for n in frozen_names})
        model.load_state_dict(state)
    mask.apply(model)


_UNIT_COUNTS = ("prune/units_revived", "prune/similar_pairs", "prune/complementary_pairs")


def _add_units(
    info: dict[str, object], round_info: dict[str, object], removed: dict[str, torch.Tensor]
) -> None:
    """Fold one round's distinctiveness counts into the job's totals.

    ``removed`` holds, per layer, every unit removed so far (the union over rounds), so a unit
    that a later round removes again (a dead unit that a paper rule compares like any other)
    counts once.
    """
    for key, value in round_info.items():
        if key in _UNIT_COUNTS or key.startswith("prune/units_revived/"):
            info[key] = info.get(key, 0) + value
        elif key == "time/angles_s":
            info[key] = round(info.get(key, 0.0) + value, 4)
        elif not key.startswith(("prune/units_removed", "prune/units_removed_frac")):
            info[key] = value
    if removed:
        per_layer = {n: int(r.sum()) for n, r in removed.items()}
        info.update({f"prune/units_removed/{n}": v for n, v in per_layer.items()})
        info["prune/units_removed"] = sum(per_layer.values())
        total = info.get("prune/units_total", 0)
        info["prune/units_removed_frac"] = info["prune/units_removed"] / total if total else 0.0


def prune_and_retrain(
    cfg: DictConfig,
    datamodule: SFEWDataModule,
    model: nn.Module,
    frozen: list[nn.Module],
    states: dict,
    run_dir: Path,
) -> tuple[dict, dict]:
    """Prune the dense model (``prune.iterations`` rounds), rewind or continue, retrain each round.

    Returns the final stage's metrics and the pruning keys for results.json.
    """
    p = cfg.prune
    names = prunable_weights(model, list(p.include))
    n = p.iterations
    mask: Mask | None = None
    info: dict[str, object] = {}
    prune_s = retrain_s = test_s = 0.0
    final: dict = {}
    frozen_names = frozen_state_names(model, frozen)
    removed: dict[str, torch.Tensor] = {}  # distinctiveness: units removed so far, per layer
    for r in range(1, n + 1):
        ratio = 1 - (1 - p.ratio) ** (r / n)
        start = time.perf_counter()
        with seeded(cfg.seed, f"prune{r}"):
            mask, round_info, round_removed = make_mask(cfg, model, names, ratio, mask, datamodule)
        for layer, units in round_removed.items():
            removed[layer] = units | removed[layer] if layer in removed else units
        mask.apply(model)
        prune_s += time.perf_counter() - start
        faults.at("prune")
        before_val, before_test = (
            evaluate(model, datamodule, "val"),
            evaluate(model, datamodule, "test"),
        )
        log.info(
            "prune round %d/%d: sparsity %.4f, val acc %.4f right after pruning",
            r,
            n,
            zero_fraction(model, names),
            before_val,
        )
        set_start_weights(cfg, model, states, mask, frozen_names)
        module = FERClassifier(model, cfg.optim, datamodule.class_names, frozen)
        stage = "retrain" if n == 1 else f"retrain{r}"
        hparams = swept_params(cfg)
        if p.retrain_epochs == 0:  # paper B: the pruned model is tested as it is
            final = test_stage(
                cfg,
                datamodule,
                module,
                run_dir,
                "pruned",
                hparams=hparams,
                extra_metrics={"prune/sparsity": zero_fraction(model, names)},
            )
        else:
            final = train_stage(
                cfg,
                datamodule,
                module,
                run_dir,
                stage,
                callbacks=[KeepMasked(mask)],
                max_epochs=p.retrain_epochs,
                hparams=hparams,
                extra_metrics={"prune/sparsity": zero_fraction(model, names)},
            )
        retrain_s += final["time/train_s"]
        test_s += final["time/test_s"]
        _add_units(info, round_info, removed)
        info["prune/acc_before_retrain"] = before_test
        info["prune/val_acc_before_retrain"] = before_val
        if n > 1:
            info[f"round{r}/prune/sparsity"] = zero_fraction(model, names)
            info[f"round{r}/prune/acc_before_retrain"] = before_test
            info[f"round{r}/test/acc"] = final["test/acc"]
            info[f"round{r}/val/acc_best"] = final["val/acc_best"]
            info.update({f"round{r}/{k}": v for k, v in round_info.items()})
    assert mask is not None
    mask.save(run_dir / "mask.pt")
    sparsity = zero_fraction(model, names)
    info["prune/sparsity"] = sparsity
    info["prune/mask_sparsity"] = mask.sparsity()
    info["prune/compression"] = 1 / (1 - sparsity) if sparsity < 1 else float("inf")
    info["params/prunable"] = sum(model.state_dict()[nm].numel() for nm in names)
    dead = [nm for nm in names if not bool(model.state_dict()[nm].any())]
    if dead:
        log.warning("pruning removed every weight of %d layer(s): %s", len(dead), ", ".join(dead))
    info["prune/layers_fully_pruned"] = len(dead)
    info["time/prune_s"] = round(prune_s, 3)
    info["time/retrain_s"] = round(retrain_s, 3)
    info["time/test_s"] = round(test_s, 3)
    return final, info


# -- the experiment ------------------------------------------------------------------------------


def run_experiment(cfg: DictConfig, run_dir: str | Path) -> dict[str, object]:
    """Run one experiment in ``run_dir`` and write ``results.json``; return the results."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for leftover in run_dir.glob(".results.json.*.tmp"):  # from a job killed while writing
        leftover.unlink()
    total_start = time.perf_counter()
    threads = set_threads(cfg.get("threads"))
    log.info("torch threads: %d (set threads=N to change; CPU results depend on it)", threads)
    if torch.cuda.is_available():  # this job's peak GPU memory, for packing jobs on one GPU
        torch.cuda.reset_peak_memory_stats()

    # Each point that draws random numbers is seeded on its own (fer_lottery.seeding), so a
    # number never depends on what ran before it: face detection or a cache hit, say.
    start = time.perf_counter()
    datamodule = SFEWDataModule(cfg.data, run_dir, seed=cfg.seed, cache_dir=cfg.cache_dir)
    with seeded(cfg.seed, "data"):
        datamodule.setup()
    data_s = time.perf_counter() - start

    arch = enum_value(cfg.model.name)
    with seeded(cfg.seed, "model"):
        model = build_model(arch, cfg.model.weights, cfg.model.num_classes)
    frozen = freeze_layers(model, arch, cfg.model.frozen_layers)
    module = FERClassifier(model, cfg.optim, datamodule.class_names, frozen)
    dense, states = dense_stage(cfg, datamodule, module, run_dir)

    final, prune_info = dense, {}
    if prune_active(cfg):
        final, prune_info = prune_and_retrain(cfg, datamodule, model, frozen, states, run_dir)

    stage_keys = [k for k in final if k.startswith(("test/", "val/"))]
    results: dict[str, object] = {k: final[k] for k in stage_keys}
    results.update({f"dense/{k}": dense[k] for k in dense if k.startswith(("test/", "val/"))})
    results["dense/cache"] = dense.get("cache")
    results["dense/cache_key"] = dense.get("cache_key")  # where a dense-only job's weights are
    results.update(prune_info)
    results["params/total"] = sum(p.numel() for p in model.parameters())
    results["params/nonzero"] = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    results["params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    results["flops/total"], results["flops/nonzero"] = count_macs(model, cfg.data.image_size)
    results["torch/threads"] = threads
    results["model/init"] = "random" if cfg.model.weights is None else str(cfg.model.weights)
    results.update(datamodule.stats)
    results["time/dense_s"] = dense["time/train_s"]
    # Test passes this job ran (a dense stage from the cache was tested by the job that trained it).
    dense_test_s = 0.0 if dense.get("cache") == "hit" else dense.get("time/test_s", 0.0)
    results["time/test_s"] = round(dense_test_s + prune_info.get("time/test_s", 0.0), 3)
    results["time/data_s"] = round(data_s, 3)
    results["time/total_s"] = round(time.perf_counter() - total_start, 3)
    if torch.cuda.is_available():
        gb = 1024**3
        results["gpu/max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated() / gb, 3)
        results["gpu/max_memory_reserved_gb"] = round(torch.cuda.max_memory_reserved() / gb, 3)
    results["config"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    check_results(results, run_dir / "results.json")  # a key missing or mistyped: fail, not write
    if prune_active(cfg) or not cfg.cache_dense:  # else the dense cache entry holds them
        save_weights(run_dir / WEIGHTS_FILE, model.state_dict())
    write_json_atomic(run_dir / "results.json", results, fault_point="results")
    # What remains only serves to resume (best.ckpt holds the optimizer state: 100 MB on
    # ResNet-18); the final weights are in weights.pt, sparse.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return results
