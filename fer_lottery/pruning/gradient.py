"""Gradient magnitude pruning: remove the weights with the smallest |w * dL/dw|.

The score of a weight is the first-order estimate of how much the loss changes when it is set
to 0 (ShrinkBench's ``GlobalMagGrad`` / ``LayerMagGrad``), with L the mean cross-entropy over
the *whole* training split rather than one batch: the model in eval mode (BatchNorm with its
running statistics, no dropout), no augmentation, gradients summed over batches in float32.
Scored at the pretrained weights (``prune.score_at=pretrained``), this is SNIP (Lee et al. 2019)
from a pretrained start. The selection is magnitude's (``magnitude.mask_from_scores``): global
or per layer, exact to one weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fer_lottery.config.schema import enum_value
from fer_lottery.pruning import units
from fer_lottery.pruning.selection import mask_from_scores
from fer_lottery.pruning.strategy import Pruned, Request, Strategy

Examples = Callable[[torch.device], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def gradient_scores(
    model: nn.Module, names: list[str], examples: Examples, device: torch.device
) -> dict[str, torch.Tensor]:
    """|w * dL/dw| per named weight (on the CPU), L the mean cross-entropy over ``examples``.

    The model's modes, ``requires_grad`` flags, gradients and device are put back afterwards.
    """
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"gradient scores need parameters, and these are not: {missing[:3]}")
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    home = next(model.parameters()).device
    wanted = [params[n] for n in names]
    model.to(device).eval()
    try:
        for n, p in params.items():  # gradients of the scored weights only
            p.requires_grad_(n in names)
        sums = [torch.zeros_like(p, dtype=torch.float32) for p in wanted]
        total = 0
        for x, y in examples(device):
            loss = F.cross_entropy(model(x).float(), y, reduction="sum")
            for acc, g in zip(sums, torch.autograd.grad(loss, wanted), strict=True):
                acc += g.float()
            total += len(y)
        if total == 0:
            raise ValueError("gradient scores need at least one training image")
        return {
            n: (p.detach().float() * (g / total)).abs().cpu()
            for n, p, g in zip(names, wanted, sums, strict=True)
        }
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
        model.to(home).train(was_training)


def _unit_scores(request: Request, layers) -> dict[str, torch.Tensor]:
    """Per unit, the summed score of its incoming filter."""
    names = [f"{u.name}.weight" for u in layers]
    scores = gradient_scores(request.model, names, request.examples, request.device)
    return {
        u.name: scores[n].reshape(len(scores[n]), -1).sum(1)
        for u, n in zip(layers, names, strict=True)
    }


def _prune(request: Request) -> Pruned:
    if units.granularity(request) == "unit":
        return units.prune_units(request, _unit_scores)
    scope = enum_value(request.options.scope)
    scores = gradient_scores(request.model, request.names, request.examples, request.device)
    return Pruned(mask_from_scores(scores, request.ratio, scope, request.previous))


STRATEGY = Strategy(_prune)
