"""Rewinding: which weights the pruned network retrains from (``retrain.rewind``).

- ``none``: keep the fine-tuned weights (continuation);
- ``pretrained``: all of theta0, the weights before fine-tuning (every parameter and BN buffer):
  the lottery ticket from a pretrained start;
- ``epoch``: theta_k, the weights after ``retrain.rewind_epoch`` dense epochs;
- ``random``: a fresh random initialisation of what trains (the control).

The frozen layers (``model.frozen_layers``) keep their loaded weights under every mode, since
nothing would ever train them. The mask is applied after the rewind, so pruned entries are 0.

Then ``check_start_weights`` checks, bit for bit, that the model holds what the mode promises:
every surviving entry equals its target, every pruned entry is 0. A rewind that silently did not
rewind (a state loaded into a copy, a mask applied to the wrong tensors) stops the job there
(``RewindError``). The optimizer side (a fresh state for the retraining) is checked by
``pruning.mask_callbacks.FreshOptimizer`` when the retraining starts.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from fer_lottery.config import enum_value, prune_seed, settings
from fer_lottery.core.errors import FerLotteryError
from fer_lottery.core.seeding import seeded
from fer_lottery.models import build_model
from fer_lottery.pruning.mask import Mask


def snapshot_epoch(cfg: DictConfig) -> int | None:
    """The dense epoch whose weights ``retrain.rewind=epoch`` needs (theta_k), else None."""
    flat = {
        "retrain.rewind": enum_value(cfg.retrain.rewind),
        "retrain.rewind_epoch": cfg.retrain.rewind_epoch,
    }
    return settings.snapshot_epoch(flat)


def frozen_state_names(model: nn.Module, frozen: list[nn.Module]) -> set[str]:
    """State-dict names (parameters and buffers) of the frozen modules."""
    ids = {id(m) for m in frozen}
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if id(module) in ids:
            names.update(f"{prefix}.{n}" if prefix else n for n in module.state_dict())
    return names


class RewindError(FerLotteryError):
    """The start weights of a retraining are not what ``retrain.rewind`` asked for."""


def start_state(
    cfg: DictConfig, model: nn.Module, states: dict, frozen_names: set[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """The full state (parameters and buffers) that ``retrain.rewind`` retrains from, unmasked."""
    rewind = enum_value(cfg.retrain.rewind)
    if rewind == "none":
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    if rewind == "pretrained":
        return dict(states["theta0"])
    if rewind == "epoch":
        return dict(states["theta_k"])
    with seeded(prune_seed(cfg), "rewind-random"):
        fresh = build_model(enum_value(cfg.model.name), None, cfg.model.num_classes)
    state = fresh.state_dict()
    if frozen_names:
        kept = states["theta0"]
        state.update({n: kept[n] for n in frozen_names})
    return state


def _load(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(state)


def set_start_weights(
    cfg: DictConfig,
    model: nn.Module,
    states: dict,
    mask: Mask,
    frozen_names: set[str] = frozenset(),
) -> str:
    """Rewind (or not) the surviving weights as ``retrain.rewind`` says, apply the mask, and check
    the result (``check_start_weights``); returns ``"ok"``.

    ``states`` holds ``theta0`` and, for ``rewind=epoch``, ``theta_k``; ``frozen_names`` are the
    frozen layers' state names (``frozen_state_names``).
    """
    target = start_state(cfg, model, states, frozen_names)
    _load(model, target)
    mask.apply(model)
    return check_start_weights(model, target, mask, enum_value(cfg.retrain.rewind))


@torch.no_grad()
def check_start_weights(
    model: nn.Module, target: dict[str, torch.Tensor], mask: Mask, rewind: str = "?"
) -> str:
    """``"ok"`` when every entry of the model's state equals ``target`` where ``mask`` keeps it
    and is 0 where it prunes, bit for bit; else ``RewindError`` naming the first tensors off."""
    wrong = []
    for name, value in model.state_dict().items():
        expected = target.get(name)
        if expected is None:
            wrong.append(f"{name} (no target)")
            continue
        expected = expected.to(device=value.device, dtype=value.dtype)
        keep = mask.tensors.get(name)
        if keep is None:
            ok = torch.equal(value, expected)
        else:
            keep = keep.to(value.device)
            ok = torch.equal(value[keep], expected[keep]) and not bool(value[~keep].any())
        if not ok:
            wrong.append(name)
    if wrong:
        shown = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        raise RewindError(
            f"retrain.rewind={rewind}: the start weights of the retraining are not the ones asked "
            f"for ({shown} differ from the target or keep pruned entries): this is a bug in "
            "fer_lottery; the job stops here rather than retrain from the wrong weights"
        )
    return "ok"
