"""The gradual stage (``prune.schedule=gradual``): prune while fine-tuning, from theta0.

Gradual magnitude pruning (Zhu & Gupta 2017; SparseML's GMP, jaxpruner's ``PolynomialSchedule``)
trains theta0 for ``retrain.epochs`` epochs (null: ``trainer.max_epochs``) as stage
``gradual``, recomputing the magnitude mask at the start of each epoch on the cubic schedule
(``pruning.mask_callbacks.GradualPruning``) until ``prune.gradual.end``, and keeping it applied. The
best validation epoch is chosen among those at the final sparsity, so the model tested is at
exactly ``prune.ratio``. The dense stage still runs (or comes from the cache) for the report's
dense columns; the gradual stage itself cannot come from the dense cache, since its weights
depend on the pruning.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from fer_lottery.config import enum_value
from fer_lottery.config.checks import gradual_epochs
from fer_lottery.config.sweeps import swept_params
from fer_lottery.core import paths
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.experiment.retrain import sparsity_keys
from fer_lottery.models import prunable_weights
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.mask_callbacks import FreshOptimizer, GradualPruning
from fer_lottery.pruning.rewind import check_start_weights
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.stage import Stage, train_stage

STAGE = "gradual"


def gradual_prune(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    model: nn.Module,
    frozen: list[nn.Module],
    states: dict,
    run_dir: Path,
) -> tuple[dict, dict]:
    """Train theta0 while pruning it gradually; the final metrics and the pruning keys."""
    names = prunable_weights(model, list(cfg.prune.include))
    model.load_state_dict(states["theta0"])
    check = check_start_weights(model, states["theta0"], Mask({}), "pretrained")
    epochs, start, end = gradual_epochs(cfg, cfg.trainer.max_epochs)
    pruning = GradualPruning(names, cfg.prune.ratio, enum_value(cfg.prune.scope), start, end)
    module = FERClassifier(model, cfg.optim, datamodule.class_names, frozen)
    stage = Stage(
        STAGE,
        callbacks=[pruning, FreshOptimizer()],
        max_epochs=epochs,
        hparams=swept_params(cfg),
        best_from_epoch=end,
    )
    final = train_stage(cfg, datamodule, module, run_dir, stage)
    mask = pruning.mask
    mask.save(run_dir / paths.MASK)
    info: dict[str, object] = {"prune/rewind_check": check}
    info.update(sparsity_keys(model, names, mask, cfg.prune.min_layer_density))
    info["time/prune_s"] = round(pruning.seconds, 3)
    info["time/retrain_s"] = final["time/train_s"]
    info["time/test_s"] = final["time/test_s"]
    return final, info
