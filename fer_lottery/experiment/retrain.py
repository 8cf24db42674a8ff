"""The pruning rounds of one experiment: prune, measure, rewind, retrain (``prune.iterations``).

Each round asks the configured criterion (``core.criteria``) for a mask at that round's
ratio, applies it, measures the accuracy right after pruning, sets the start weights
(``pruning.rewind``) and retrains with the mask kept applied (``KeepMasked``), or, with
``retrain.epochs=0``, tests the pruned model as it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from fer_lottery.config import enum_value, prune_seed
from fer_lottery.config.sweeps import swept_params
from fer_lottery.core import criteria, paths
from fer_lottery.core.devices import compute_device
from fer_lottery.core.seeding import seeded
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.experiment.stability import clone_state, stability_analysis
from fer_lottery.job import faults
from fer_lottery.models import prunable_weights
from fer_lottery.pruning.mask import Mask, zero_fraction
from fer_lottery.pruning.mask_callbacks import FreshOptimizer, KeepMasked
from fer_lottery.pruning.rewind import frozen_state_names, set_start_weights
from fer_lottery.pruning.strategy import Pruned, Request, Strategy
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.schedule import retrain_optim
from fer_lottery.training.stage import Stage, evaluate, test_stage, train_stage

log = logging.getLogger(__name__)


def round_ratio(ratio: float, r: int, n: int) -> float:
    """The overall fraction pruned after round r of n: each round prunes 1-(1-ratio)^(1/n) of
    what remains."""
    return 1 - (1 - ratio) ** (r / n)


def prune_round(
    cfg: DictConfig,
    strategy: Strategy,
    model: nn.Module,
    names: list[str],
    r: int,
    previous: Mask | None,
    datamodule: FaceDataModule,
) -> Pruned:
    """Round r's mask from the criterion, seeded by the round's name (not yet applied)."""

    def examples(device: torch.device):
        for x, y in datamodule.eval_loader("train"):
            yield datamodule.transform(x.to(device), train=False), y.to(device)

    def batches(device: torch.device):
        for x, _ in examples(device):
            yield x

    request = Request(
        model=model,
        names=names,
        ratio=round_ratio(cfg.prune.ratio, r, cfg.prune.iterations),
        previous=previous,
        options=cfg.prune,
        arch=enum_value(cfg.model.name),
        seed=prune_seed(cfg),
        batches=batches,
        examples=examples,
        device=compute_device(cfg),
    )
    with seeded(cfg.seed, f"prune{r}"):
        pruned = strategy.prune(request)
    model.cpu()  # a criterion may have run it on the device
    return pruned


def retrain(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    model: nn.Module,
    frozen: list[nn.Module],
    mask: Mask,
    run_dir: Path,
    stage: str,
    names: list[str],
    noise: tuple[int, str] | None = None,
) -> dict:
    """Retrain the masked model for ``retrain.epochs`` (0: test it as it is); ``noise``
    seeds its SGD noise (``train_stage``)."""
    module = FERClassifier(model, retrain_optim(cfg), datamodule.class_names, frozen)
    extra = {"prune/sparsity": zero_fraction(model, names)}
    hparams = swept_params(cfg)
    if cfg.retrain.epochs == 0:  # paper B: the pruned model is tested as it is
        pruned = Stage("pruned", hparams=hparams, extra_metrics=extra)
        return test_stage(cfg, datamodule, module, run_dir, pruned)
    retraining = Stage(
        stage,
        callbacks=[KeepMasked(mask), FreshOptimizer()],
        max_epochs=cfg.retrain.epochs,
        hparams=hparams,
        extra_metrics=extra,
        noise=noise,
    )
    return train_stage(cfg, datamodule, module, run_dir, retraining)


@dataclass
class _Seconds:
    """Where a job's pruning rounds spent their time, summed over the rounds."""

    prune: float = 0.0
    retrain: float = 0.0
    test: float = 0.0

    def add_stage(self, metrics: dict) -> None:
        self.retrain += metrics["time/train_s"]
        self.test += metrics["time/test_s"]

    def keys(self) -> dict[str, float]:
        return {
            "time/prune_s": round(self.prune, 3),
            "time/retrain_s": round(self.retrain, 3),
            "time/test_s": round(self.test, 3),
        }


def prune_and_retrain(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    model: nn.Module,
    frozen: list[nn.Module],
    states: dict,
    run_dir: Path,
) -> tuple[dict, dict]:
    """Prune the dense model (``prune.iterations`` rounds), rewind or continue, retrain each round.

    With ``prune.score_at=pretrained`` the criterion scores theta0 instead (one round), and the
    masked theta0 retrains (``retrain.rewind=pretrained``): pruning before fine-tuning. With
    ``stability.enabled=true`` the last round retrains once more (``stability_analysis``).

    Returns the final stage's metrics and the pruning keys for results.json.
    """
    n = cfg.prune.iterations
    names = prunable_weights(model, list(cfg.prune.include))
    strategy = criteria.get(enum_value(cfg.prune.method))
    frozen_names = frozen_state_names(model, frozen)
    mask: Mask | None = None
    rounds: list[Pruned] = []
    info: dict[str, object] = {}
    seconds = _Seconds()
    final: dict = {}
    if enum_value(cfg.prune.score_at) == "pretrained":  # prune before fine-tuning: score theta0
        model.load_state_dict(states["theta0"])
    for r in range(1, n + 1):
        pruned, before = _prune(cfg, strategy, model, names, r, mask, datamodule, seconds)
        mask = pruned.mask
        info["prune/rewind_check"] = set_start_weights(cfg, model, states, mask, frozen_names)
        stage = "retrain" if n == 1 else f"retrain{r}"
        start_state = clone_state(model) if cfg.stability.enabled and r == n else None
        final = retrain(cfg, datamodule, model, frozen, mask, run_dir, stage, names)
        seconds.add_stage(final)
        rounds.append(replace(pruned, mask=Mask({})))  # its keys and units; the mask is ``mask``
        info.update(strategy.rounds_metrics(rounds))
        info.update(before)
        if n > 1:  # IMP: each round's own keys, and its mask (how the rounds nest)
            info.update(_imp_round(run_dir, model, names, r, n, pruned, before, final))
    assert mask is not None
    if start_state is not None:
        info.update(
            stability_analysis(
                cfg, datamodule, model, frozen, mask, start_state, stage, run_dir, names, retrain
            )
        )
    mask.save(run_dir / paths.MASK)
    info.update(sparsity_keys(model, names, mask, cfg.prune.min_layer_density))
    info.update(seconds.keys())
    return final, info


def _prune(
    cfg: DictConfig,
    strategy: Strategy,
    model: nn.Module,
    names: list[str],
    r: int,
    previous: Mask | None,
    datamodule: FaceDataModule,
    seconds: _Seconds,
) -> tuple[Pruned, dict[str, float]]:
    """Round r: its mask from the criterion, applied to ``model``, and the accuracy right after."""
    start = time.perf_counter()
    pruned = prune_round(cfg, strategy, model, names, r, previous, datamodule)
    pruned.mask.apply(model)
    seconds.prune += time.perf_counter() - start
    faults.at("prune")
    return pruned, accuracy_before_retrain(cfg, model, datamodule, names, r, cfg.prune.iterations)


def _imp_round(
    run_dir: Path,
    model: nn.Module,
    names: list[str],
    r: int,
    n: int,
    pruned: Pruned,
    before: dict[str, float],
    final: dict,
) -> dict[str, object]:
    """IMP round r of n: its mask saved (all but the last round's, which is ``mask.pt``) and its
    own ``round<r>/`` keys."""
    if r < n:
        pruned.mask.save(paths.round_mask(run_dir, r))
    return {
        f"round{r}/prune/sparsity": zero_fraction(model, names),
        f"round{r}/prune/acc_before_retrain": before["prune/acc_before_retrain"],
        f"round{r}/test/acc": final["test/acc"],
        f"round{r}/val/acc_best": final["val/acc_best"],
        **{f"round{r}/{k}": v for k, v in pruned.metrics.items()},
    }


def accuracy_before_retrain(
    cfg: DictConfig, model: nn.Module, datamodule: FaceDataModule, names: list[str], r: int, n: int
) -> dict[str, float]:
    """Test and val accuracy of the pruned model right after pruning, before any retraining, on
    the training device in the stage's precision."""
    val = evaluate(model, datamodule, "val", cfg)
    test = evaluate(model, datamodule, "test", cfg)
    log.info(
        "prune round %d/%d: sparsity %.4f, val acc %.4f right after pruning",
        r,
        n,
        zero_fraction(model, names),
        val,
    )
    return {"prune/acc_before_retrain": test, "prune/val_acc_before_retrain": val}


def layer_name(weight: str) -> str:
    """A prunable weight's layer, as results.json keys name it (``layer1.0.conv1``)."""
    return weight.removesuffix(".weight")


def sparsity_keys(
    model: nn.Module, names: list[str], mask: Mask, min_density: float
) -> dict[str, object]:
    """What the final mask left: sparsity, compression, prunable and fully pruned layers, and
    per layer the fraction pruned (``prune/sparsity/<layer>``); a layer left with less than
    ``min_density`` of its weights is named in a warning and counted (layer collapse)."""
    state = model.state_dict()
    sparsity = zero_fraction(model, names)
    dead = [name for name in names if not bool(state[name].any())]
    if dead:
        log.warning("pruning removed every weight of %d layer(s): %s", len(dead), ", ".join(dead))
    per_layer = {layer_name(n): zero_fraction(model, [n]) for n in names}
    near = [layer for layer, s in per_layer.items() if 1 - s < min_density]
    if near:
        log.warning(
            "%d layer(s) keep less than prune.min_layer_density=%g of their weights (layer "
            "collapse): %s",
            len(near),
            min_density,
            ", ".join(f"{layer} ({1 - per_layer[layer]:.2%} left)" for layer in near),
        )
    return {
        "prune/sparsity": sparsity,
        "prune/mask_sparsity": mask.sparsity(),
        "prune/compression": 1 / (1 - sparsity) if sparsity < 1 else float("inf"),
        "params/prunable": sum(state[name].numel() for name in names),
        "prune/layers_fully_pruned": len(dead),
        "prune/layers_near_collapse": len(near),
        **{f"prune/sparsity/{layer}": s for layer, s in per_layer.items()},
    }
