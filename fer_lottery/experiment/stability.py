"""``stability.enabled=true``: is the retrained ticket stable to SGD noise? (linear mode
connectivity, Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis").

After the last round's retraining (A), the same pruned start weights retrain again with the
same mask as stage ``stability`` (B), for as many epochs, with other SGD noise: its batch order,
augmentation and dropout come from ``stability.seed`` (null: derived from ``seed``) under
the first retraining's stage name, so B with A's seed repeats A exactly. Then the straight line
between the two final models (each the best-validation epoch of its stage) is evaluated at
``stability.points`` values of alpha in [0, 1], the BatchNorm statistics recomputed on the
training split at every point (``training.connectivity``). The error barrier is the highest
test error on the path minus the mean of the two ends; a barrier near 0 means the two
retrainings found one linearly connected minimum: the ticket is stable. The job's final model,
and its ``test/*``, stay A's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fer_lottery.core.seeding import derived_seed
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.pruning.mask import Mask
from fer_lottery.training.connectivity import error_barrier, evaluate_path, trained_batchnorms

log = logging.getLogger(__name__)

STAGE = "stability"


def stability_seed(cfg: DictConfig) -> int:
    """The seed of the second retraining's SGD noise: ``stability.seed``, or one derived
    from the run's ``seed``."""
    own = cfg.stability.seed
    return int(own) if own is not None else derived_seed(cfg.seed, "stability")


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def stability_analysis(
    cfg: DictConfig,
    datamodule: FaceDataModule,
    model: nn.Module,
    frozen: list[nn.Module],
    mask: Mask,
    start: dict[str, torch.Tensor],
    first_stage: str,
    run_dir: Path,
    names: list[str],
    retrain,
) -> dict[str, object]:
    """Retrain ``start`` again (stage ``stability``), walk the line from the model ``model``
    holds (the first retraining's result) to it, and return the ``stability/*`` keys. The model
    holds the first retraining's weights again on return. ``retrain`` is
    ``experiment.retrain.retrain`` (passed in: that module calls this one)."""
    begin = time.perf_counter()
    a = clone_state(model)
    seed_b = stability_seed(cfg)
    model.load_state_dict(start)
    mask.apply(model)
    b_metrics = retrain(
        cfg, datamodule, model, frozen, mask, run_dir, STAGE, names, (seed_b, first_stage)
    )
    b = clone_state(model)
    points = int(cfg.stability.points)
    alphas = [round(float(x), 6) for x in np.linspace(0.0, 1.0, points)]
    rows = evaluate_path(model, frozen, a, b, alphas, datamodule, cfg)
    # What the recomputation is for: the midpoint with the two ends' statistics averaged.
    plain = evaluate_path(model, frozen, a, b, [0.5], datamodule, cfg, recompute_bn=False)[0]
    model.load_state_dict(a)
    keys: dict[str, object] = {
        "stability/seed_b": seed_b,
        "stability/alphas": alphas,
        "stability/bn_layers_recomputed": len(trained_batchnorms(model, frozen)),
        "stability/b/test/acc": b_metrics["test/acc"],
        "stability/b/val/acc_best": b_metrics["val/acc_best"],
    }
    for split in ("val", "test"):
        for metric in ("acc", "loss"):
            keys[f"stability/{split}/{metric}"] = [row[f"{split}/{metric}"] for row in rows]
        keys[f"stability/{split}/barrier"] = error_barrier(keys[f"stability/{split}/acc"])
        keys[f"stability/{split}/acc_mid_bn_interpolated"] = plain[f"{split}/acc"]
    keys["stability/identical_ends"] = all(torch.equal(a[k], b[k]) for k in a)
    keys["time/stability_s"] = round(time.perf_counter() - begin, 3)
    log.info(
        "stability: test error barrier %.4f (val %.4f) over %d points between two retrainings "
        "(seeds %d and %d), BatchNorm statistics recomputed on the training split at each",
        keys["stability/test/barrier"],
        keys["stability/val/barrier"],
        points,
        cfg.seed,
        seed_b,
    )
    return keys
