"""Rewinding: which weights the pruned network retrains from (``prune.rewind``).

- ``none``: keep the fine-tuned weights (continuation);
- ``pretrained``: all of theta0, the weights before fine-tuning (every parameter and BN buffer):
  the lottery ticket from a pretrained start;
- ``epoch``: theta_k, the weights after ``prune.rewind_epoch`` dense epochs;
- ``random``: a fresh random initialisation of what trains (the control).

The frozen layers (``model.frozen_layers``) keep their loaded weights under every mode, since
nothing would ever train them. The mask is applied after the rewind, so pruned entries are 0.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from fer_lottery.config import enum_value, prune_seed
from fer_lottery.models import build_model
from fer_lottery.pruning.mask import Mask
from fer_lottery.seeding import seeded


def snapshot_epoch(cfg: DictConfig) -> int | None:
    """The dense epoch whose weights ``prune.rewind=epoch`` needs (theta_k), else None."""
    rewind = enum_value(cfg.prune.rewind)
    return int(cfg.prune.rewind_epoch) if rewind == "epoch" else None


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
    """Rewind (or not) the surviving weights as ``prune.rewind`` says, then apply the mask.

    ``states`` holds ``theta0`` and, for ``rewind=epoch``, ``theta_k``; ``frozen_names`` are the
    frozen layers' state names (``frozen_state_names``).
    """
    rewind = enum_value(cfg.prune.rewind)
    if rewind == "pretrained":
        model.load_state_dict(states["theta0"])
    elif rewind == "epoch":
        model.load_state_dict(states["theta_k"])
    elif rewind == "random":
        with seeded(prune_seed(cfg), "rewind-random"):
            fresh = build_model(enum_value(cfg.model.name), None, cfg.model.num_classes)
        state = fresh.state_dict()
        if frozen_names:
            kept = states["theta0"]
            state.update({n: kept[n] for n in frozen_names})
        model.load_state_dict(state)
    mask.apply(model)
