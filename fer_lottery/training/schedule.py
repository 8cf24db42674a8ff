"""Learning-rate schedules (``optim.scheduler``) and what a retraining starts from
(``retrain.lr``).

A schedule runs over one stage's epochs and is stepped once per epoch: ``cosine`` anneals from
``optim.lr`` to 0 over the stage (torch's ``CosineAnnealingLR`` with ``T_max`` = the stage's
epochs), ``step`` multiplies by ``step_gamma`` every ``step_size`` epochs. A retraining with
``retrain_lr=restart`` replays the schedule over its own epochs; with ``final`` it trains at a
constant learning rate, the one the dense stage's last epoch used. With ``scheduler=none`` the
two are the same run.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from fer_lottery.config.schema import enum_value


def make_scheduler(
    optimizer: torch.optim.Optimizer, optim_cfg, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The epoch-wise scheduler of ``optim.scheduler`` over ``epochs`` (None: constant)."""
    kind = enum_value(optim_cfg.get("scheduler", "none"))
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=optim_cfg.step_size, gamma=optim_cfg.step_gamma
        )
    return None


def last_lr(optim_cfg, epochs: int) -> float:
    """The learning rate of the last of ``epochs`` epochs under the schedule (exactly as the
    scheduler computes it, replayed on a one-parameter optimizer)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=optim_cfg.lr)
    scheduler = make_scheduler(optimizer, optim_cfg, epochs)
    for _ in range(epochs - 1):
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return float(optimizer.param_groups[0]["lr"])


def retrain_optim(cfg: DictConfig) -> DictConfig:
    """The optim config of a retraining: as the dense stage's (``restart``), or constant at the
    dense stage's last learning rate (``final``)."""
    if enum_value(cfg.retrain.lr) != "final":
        return cfg.optim
    node = OmegaConf.to_container(cfg.optim, resolve=True, enum_to_str=True)
    node.update(lr=last_lr(cfg.optim, cfg.trainer.max_epochs), scheduler="none")
    return OmegaConf.create(node)
