"""Whole-unit pruning (``prune.granularity=unit``): remove neurons or channels, not weights.

The layers are the unit layers found from the model's graph (``models.units``: each ResNet-18
BasicBlock's ``conv1`` channels; AlexNet's conv1-5, fc6 and fc7; MobileNet's expansions with their
depthwise convs; ConvNeXt's MLP hidden units; any backbone's), narrowed by
``prune.include``. Each unit has one score (``UnitScores``): magnitude, the L1 norm of its
incoming filter (Li et al. 2016); gradient, the summed |w * dL/dw| of that filter; random, a
uniform draw with magnitude's per-layer counts. ``prune.ratio`` of the units go, ranked together
(``scope=global``) or per layer; each layer keeps at least its best unit.

A removed unit's incoming filter, its bias, its BatchNorm gamma and beta, and those of the
depthwise convs that follow it are masked, so it outputs exactly 0, and
``python -m fer_lottery.export`` slices it out of the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fnmatch import fnmatch

import torch
from torch import nn

from fer_lottery.config.schema import enum_value
from fer_lottery.models.units import PrunableUnit, prunable_units
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.selection import prune_smallest
from fer_lottery.pruning.strategy import Pruned, Request

log = logging.getLogger(__name__)

# Per unit layer (its module name), one score per unit.
UnitScores = Callable[[Request, list[PrunableUnit]], dict[str, torch.Tensor]]


def unit_layers(request: Request) -> list[PrunableUnit]:
    """The unit layers of the model that match ``prune.include``; at least one, or ValueError."""
    include = list(request.options.include)
    every = prunable_units(request.model, request.arch)
    layers = [u for u in every if _matches(u.name, include)]
    if not layers:
        raise ValueError(
            f"prune.granularity=unit: prune.include={include} matches none of the unit layers "
            f"of {request.arch} ({', '.join(u.name for u in every)})"
        )
    return layers


def _matches(name: str, include: list[str]) -> bool:
    return any(fnmatch(name, p) for p in include)


def l1_scores(request: Request, layers: list[PrunableUnit]) -> dict[str, torch.Tensor]:
    """The L1 norm of each unit's incoming filter (row)."""
    state = request.model.state_dict()
    return {u.name: _rows(state[f"{u.name}.weight"].abs()).sum(1) for u in layers}


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().cpu().reshape(t.shape[0], -1)


def removed_before(previous: Mask | None, layer: str, n: int) -> torch.Tensor:
    """The units of ``layer`` whose whole filter ``previous`` already masks."""
    if previous is None or f"{layer}.weight" not in previous:
        return torch.zeros(n, dtype=torch.bool)
    return ~previous.tensors[f"{layer}.weight"].reshape(n, -1).any(1).cpu()


def select_units(
    scores: dict[str, torch.Tensor], ratio: float, scope: str, previous: Mask | None = None
) -> dict[str, torch.Tensor]:
    """Per layer, a bool per unit, True where removed: ``ratio`` of the units, lowest first.

    Units that ``previous`` removed stay removed (they score -1); every layer keeps its
    best-scoring unit (it scores +inf), so at most ``units - layers`` go.
    """
    ranked = {}
    for layer, s in scores.items():
        s = s.float().clone()
        s[removed_before(previous, layer, len(s))] = -1.0
        s[int(s.argmax())] = float("inf")
        ranked[layer] = s
    if scope == "layer":
        return {
            layer: ~prune_smallest(s, min(round(ratio * len(s)), len(s) - 1))
            for layer, s in ranked.items()
        }
    flat = torch.cat(list(ranked.values()))
    k = round(ratio * flat.numel())
    most = flat.numel() - len(ranked)
    if k > most:
        log.warning(
            "prune.ratio=%g of %d units would empty a layer: %d removed, every layer keeps one",
            ratio,
            flat.numel(),
            most,
        )
        k = most
    removed = ~prune_smallest(flat, k)
    return dict(zip(ranked, torch.split(removed, [len(s) for s in ranked.values()]), strict=True))


def random_units(
    counts: dict[str, int], previous: Mask | None, seed: int
) -> dict[str, torch.Tensor]:
    """``counts[layer]`` units of each layer removed, those ``previous`` removed first, the rest
    drawn uniformly among the others."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for layer, (n, k) in counts.items():
        removed = removed_before(previous, layer, n).clone()
        extra = k - int(removed.sum())
        if extra > 0:
            alive = (~removed).nonzero().flatten()
            removed[alive[torch.randperm(len(alive), generator=generator)[:extra]]] = True
        out[layer] = removed
    return out


def unit_mask(
    model: nn.Module, layers: list[PrunableUnit], removed: dict[str, torch.Tensor], names: list[str]
) -> Mask:
    """The mask of ``names`` (the prunable weights) that removes the units: each removed unit's
    filter row and bias, its BatchNorm's gamma and beta, and the same of its followers (a
    depthwise conv and its BatchNorm)."""
    state = model.state_dict()
    keep = {n: torch.ones_like(state[n], dtype=torch.bool) for n in names}
    for unit in layers:
        gone = removed[unit.name]
        for owner in unit.owners:
            for suffix in ("weight", "bias"):
                key = f"{owner}.{suffix}"
                if key not in state:
                    continue
                k = keep.get(key, torch.ones_like(state[key], dtype=torch.bool))
                k[gone] = False
                keep[key] = k
    return Mask(keep)


def prune_units(request: Request, scores: UnitScores | None) -> Pruned:
    """One round of unit pruning with these unit scores (None: at random, with the counts of
    magnitude's L1 scores)."""
    layers = unit_layers(request)
    scope = enum_value(request.options.scope)
    if scores is None:
        by_l1 = select_units(l1_scores(request, layers), request.ratio, scope, request.previous)
        counts = {layer: (len(r), int(r.sum())) for layer, r in by_l1.items()}
        removed = random_units(counts, request.previous, request.seed)
    else:
        removed = select_units(scores(request, layers), request.ratio, scope, request.previous)
    mask = unit_mask(request.model, layers, removed, request.names)
    if request.previous is not None:
        mask = mask & request.previous
    return Pruned(mask, metrics=unit_metrics(removed), units_removed=removed)


def unit_metrics(removed: dict[str, torch.Tensor]) -> dict[str, object]:
    """``prune/units_removed[/<layer>]``, ``prune/units_total``, ``prune/units_removed_frac``."""
    total = sum(len(r) for r in removed.values())
    gone = sum(int(r.sum()) for r in removed.values())
    out: dict[str, object] = {
        "prune/units_removed_frac": gone / total if total else 0.0,
        "prune/units_removed": gone,
        "prune/units_total": total,
    }
    out.update({f"prune/units_removed/{layer}": int(r.sum()) for layer, r in removed.items()})
    return out


def granularity(request: Request) -> str:
    """``prune.granularity`` of the request (``weight`` when the config has none)."""
    return enum_value(request.options.get("granularity", "weight"))
