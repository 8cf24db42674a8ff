"""Magnitude pruning: remove the weights with the smallest |w|, globally or per layer."""

from __future__ import annotations

import torch
from torch import nn

from fer_lottery.config.schema import PruneScope, choices, enum_value
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.strategy import Pruned, Request, Strategy


def _prune_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask that prunes exactly ``k`` entries of a flat score vector, smallest first.

    The k-th smallest score is found by selection (linear time, no full sort); entries equal to
    it are pruned in order of position until the count is exactly ``k``.
    """
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return keep
    threshold = torch.kthvalue(scores, k).values
    below = scores < threshold
    keep[below] = False
    ties = (scores == threshold).nonzero().flatten()
    keep[ties[: k - int(below.sum())]] = False
    return keep


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


def mask_from_scores(
    scores: dict[str, torch.Tensor],
    ratio: float,
    scope: str = "global",
    previous: Mask | None = None,
) -> Mask:
    """Mask pruning the fraction ``ratio`` of the scored entries with the smallest scores.

    ``scores``: per weight name, a score tensor of the weight's shape (>= 0). ``scope="global"``
    ranks all of them together; ``"layer"`` prunes ``ratio`` of each. ``ratio`` is the overall
    target: entries already pruned by ``previous`` score -1, so they count towards it and stay
    pruned, and iterative rounds with a growing ratio only ever shrink the mask. The count is
    exact: ``round(ratio * n)`` entries of the ``n`` ranked together.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    names = list(scores)
    flat_scores = {}
    for n in names:
        s = scores[n].detach().float().cpu().flatten().clone()
        if previous is not None and n in previous:
            s[~previous.tensors[n].cpu().flatten()] = -1.0
        flat_scores[n] = s
    if scope == "global":
        flat = torch.cat([flat_scores[n] for n in names])
        keep_flat = _prune_smallest(flat, round(ratio * flat.numel()))
        pieces = torch.split(keep_flat, [flat_scores[n].numel() for n in names])
        keep = dict(zip(names, pieces, strict=True))
    elif scope == "layer":
        keep = {
            n: _prune_smallest(flat_scores[n], round(ratio * flat_scores[n].numel())) for n in names
        }
    else:
        allowed = " or ".join(repr(s) for s in choices(PruneScope))
        raise ValueError(f"prune scope must be {allowed}, got {scope!r}")
    return Mask({n: keep[n].view_as(scores[n]) for n in names})


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
    from fer_lottery.pruning import units

    if units.granularity(request) == "unit":
        return units.prune_units(request, units.l1_scores)
    scope = enum_value(request.options.scope)
    return Pruned(
        magnitude_mask(request.model, request.names, request.ratio, scope, request.previous)
    )


STRATEGY = Strategy(_prune)
