"""Random pruning, the control: the same per-layer counts as magnitude pruning, random positions."""

from __future__ import annotations

import torch
from torch import nn

from fer_lottery.config.schema import enum_value
from fer_lottery.pruning import units
from fer_lottery.pruning.magnitude import pruned_counts
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.strategy import Pruned, Request, Strategy


def random_mask(
    model: nn.Module,
    names: list[str],
    ratio: float,
    scope: str = "global",
    previous: Mask | None = None,
    seed: int = 0,
) -> Mask:
    """Prune as many entries per layer as magnitude pruning would, chosen uniformly at random.

    Entries already pruned by ``previous`` stay pruned and count towards each layer's total.
    """
    counts = pruned_counts(model, names, ratio, scope, previous)
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    out = {}
    for n in names:
        shape = state[n].shape
        alive = torch.ones(shape.numel(), dtype=torch.bool)
        if previous is not None and n in previous:
            alive = previous.tensors[n].cpu().flatten().clone()
        extra = counts[n] - int((~alive).sum())
        if extra > 0:
            candidates = alive.nonzero().flatten()
            chosen = candidates[torch.randperm(len(candidates), generator=generator)[:extra]]
            alive[chosen] = False
        out[n] = alive.view(shape)
    return Mask(out)


def _prune(request: Request) -> Pruned:
    if units.granularity(request) == "unit":
        return units.prune_units(request, None)
    scope = enum_value(request.options.scope)
    mask = random_mask(
        request.model, request.names, request.ratio, scope, request.previous, seed=request.seed
    )
    return Pruned(mask)


STRATEGY = Strategy(_prune)
