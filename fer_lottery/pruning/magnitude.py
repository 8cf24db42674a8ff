"""Magnitude pruning: remove the weights with the smallest |w|, globally or per layer."""

from __future__ import annotations

import torch
from torch import nn

from fer_lottery.config.schema import enum_value
from fer_lottery.pruning import units
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.selection import mask_from_scores
from fer_lottery.pruning.strategy import Pruned, Request, Strategy


def _scores(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """|w| per named weight."""
    state = model.state_dict()
    return {n: state[n].detach().abs().float().cpu() for n in names}


def pruned_counts(
    model: nn.Module, names: list[str], ratio: float, scope: str, previous: Mask | None = None
) -> dict[str, int]:
    """How many entries of each named weight magnitude pruning removes at ``ratio``."""
    mask = magnitude_mask(model, names, ratio, scope, previous)
    return {n: int((~t).sum()) for n, t in mask.tensors.items()}


def magnitude_mask(
    model: nn.Module,
    names: list[str],
    ratio: float,
    scope: str = "global",
    previous: Mask | None = None,
) -> Mask:
    """Mask pruning the fraction ``ratio`` of the named weights with the smallest magnitude
    (``mask_from_scores`` of |w|)."""
    return mask_from_scores(_scores(model, names), ratio, scope, previous)


def _prune(request: Request) -> Pruned:
    if units.granularity(request) == "unit":
        return units.prune_units(request, units.l1_scores)
    scope = enum_value(request.options.scope)
    return Pruned(
        magnitude_mask(request.model, request.names, request.ratio, scope, request.previous)
    )


STRATEGY = Strategy(_prune)
