"""Distinctiveness pruning (Gedeon & Harris): merge units whose activation vectors are parallel.

Each prunable unit (an FC neuron or a conv channel) gets an activation vector over the training
split. Two units whose vectors are nearly parallel (angle < tau) do the same job: one is removed
and its outgoing weights are added to the other, so the next layer sees the same input. Two units
whose vectors are nearly opposite (angle > 180 - tau, "complementary") cancel out: both go.

``distinctiveness_prune`` merges the outgoing weights into ``model`` *in place* and returns a
``Mask``; the caller applies it (``result.mask.apply(model)``). Until then the removed units still
fire, so the model's output is the dense output plus the merged contributions (double counted).

One module per part: ``angles`` (which layers, activations, the Gram step), and one per rule
(``variant=``): ``honest`` (DESIGN "Distinctiveness, precisely"), ``paper_a`` and ``paper_b``
(each paper's rule read literally). ``layers`` restricts the prunable layers, e.g.
``["classifier.4"]`` for paper B's fc7.

Where a paper says "weights" of a neuron are added to another, it is read as the *outgoing*
weights, as in the Gedeon & Harris method both papers cite; that is what keeps a duplicate unit's
merge exact. ``similar_pairs`` / ``complementary_pairs`` count removals by the kind of pair that
removed a unit (for the paper variants: the first qualifying pair in loop order).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from fer_lottery.errors import ConfigError
from fer_lottery.pruning.distinctiveness import honest, paper_a, paper_b
from fer_lottery.pruning.distinctiveness.angles import (
    ARCHS,
    CHUNK,
    Pairing,
    PrunableUnit,
    gram_rows,
    pairwise_angles,
    prunable_units,
    roots,
    select_layers,
    unit_activations,
)
from fer_lottery.pruning.mask import Mask

__all__ = [
    "ARCHS",
    "CHUNK",
    "NORMALIZE",
    "VARIANTS",
    "DistinctivenessResult",
    "Pairing",
    "PrunableUnit",
    "distinctiveness_prune",
    "pair_units",
    "pairwise_angles",
    "prunable_units",
    "unit_activations",
]

log = logging.getLogger(__name__)

VARIANTS = ("honest", "paper_a", "paper_b")
NORMALIZE = ("minmax", "center")


@dataclass
class DistinctivenessResult:
    """What ``distinctiveness_prune`` did. The merges are already in the model; the mask is not."""

    mask: Mask
    units_removed: dict[str, int]
    units_total: dict[str, int]
    similar_pairs: int
    complementary_pairs: int
    angle_seconds: float
    units_flagged: dict[str, int] = field(default_factory=dict)
    units_compared: dict[str, int] = field(default_factory=dict)
    pairings: dict[str, Pairing] = field(default_factory=dict)  # per layer: who went, into whom

    def removed_fraction(self) -> float:
        total = sum(self.units_total.values())
        return sum(self.units_removed.values()) / total if total else 0.0


def _normalise(
    acts: torch.Tensor, variant: str, normalize: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm columns to compare, and the flag of units that cannot be compared."""
    if variant == "paper_a":
        return paper_a.normalise(acts)
    if variant == "paper_b":
        return paper_b.normalise(acts)
    return honest.normalise(acts, normalize)


_norm_filter = honest.norm_filter
_gram_rows = gram_rows


def pair_units(
    acts: torch.Tensor,
    angle: float,
    *,
    complementary: bool = False,
    normalize: str = "minmax",
    norm_std: float | None = None,
    variant: str = "honest",
    chunk: int = CHUNK,
) -> Pairing:
    """Decide, from a (samples, units) activation matrix, which units go and where they merge.

    This is the whole angle step (normalise, Gram, pairing); see the module docstring for each
    variant's rule.
    """
    _check(angle, normalize, norm_std, variant)
    units = acts.shape[1]
    z, flagged = _normalise(acts, variant, normalize)
    compared = ~flagged
    if norm_std is not None and variant != "paper_a":
        compared &= _norm_filter(acts, norm_std)
    idx = compared.nonzero().squeeze(1)
    zc = z[:, idx]
    cos_tau = math.cos(math.radians(angle))
    idx_cpu = idx.cpu()
    removed = torch.zeros(units, dtype=torch.bool)
    into = torch.full((units,), -1, dtype=torch.long)
    similar = compl = 0
    if idx.numel() >= 2:
        if variant == "honest":
            if complementary:
                parent, gone, similar, compl = honest.greedy_general(zc, cos_tau, chunk)
            else:
                parent = honest.greedy_similar(zc, cos_tau, chunk)
                gone = parent >= 0
                similar = int(gone.sum())
            merged = torch.from_numpy(parent >= 0)
            target = torch.from_numpy(roots(parent))
            removed[idx_cpu] = torch.from_numpy(gone)
        else:
            first, is_high = paper_a.pairs_in_order(zc, cos_tau, variant == "paper_b", chunk)
            merged = first >= 0
            target = first
            removed[idx_cpu] = merged
            compl = int(is_high.sum())
            similar = int(merged.sum()) - compl
        into[idx_cpu[merged]] = idx_cpu[target[merged]]
    return Pairing(removed, into, flagged.cpu(), compared.cpu(), similar, compl)


def _check(angle: float, normalize: str, norm_std: float | None, variant: str) -> None:
    if not 0.0 < angle <= 90.0:
        raise ConfigError(f"prune.angle={angle}: tau must be in (0, 90] degrees")
    if normalize not in NORMALIZE:
        raise ConfigError(f"prune.normalize={normalize!r}: expected one of {', '.join(NORMALIZE)}")
    if variant not in VARIANTS:
        raise ConfigError(f"prune.variant={variant!r}: expected one of {', '.join(VARIANTS)}")
    if norm_std is not None and not (math.isfinite(norm_std) and norm_std >= 0):
        raise ConfigError(f"prune.norm_std={norm_std}: expected null or a number >= 0")


# -- merge and mask -----------------------------------------------------------------------------


@torch.no_grad()
def _merge(model: nn.Module, unit: PrunableUnit, into: torch.Tensor) -> None:
    """Add each merged unit's outgoing weights (columns of the next layer) to its keeper's."""
    src = (into >= 0).nonzero().squeeze(1)
    if not src.numel():
        return
    weight = model.get_submodule(unit.next).weight
    n_units = into.numel()
    w = weight.detach().reshape(weight.shape[0], n_units, -1).clone()
    src = src.to(w.device)
    w.index_add_(1, into.to(w.device)[src], w[:, src])
    weight.copy_(w.view(weight.shape))


def _mask_unit(model: nn.Module, unit: PrunableUnit, removed: torch.Tensor, keep: dict) -> None:
    """Mark a removed unit's incoming weights, bias, BN gamma/beta and outgoing weights."""
    state = model.state_dict(keep_vars=True)

    def entry(name: str) -> torch.Tensor:
        if name not in keep:
            keep[name] = torch.ones(state[name].shape, dtype=torch.bool)
        return keep[name]

    owners = [unit.name] + ([unit.bn] if unit.bn else [])
    for owner in owners:
        for suffix in ("weight", "bias"):
            name = f"{owner}.{suffix}"
            if name in state and state[name] is not None:
                entry(name)[removed] = False
    out = entry(f"{unit.next}.weight")
    out.view(out.shape[0], removed.numel(), -1)[:, removed] = False


def distinctiveness_prune(
    model: nn.Module,
    arch: str,
    batches: Iterable[torch.Tensor],
    angle: float,
    complementary: bool = False,
    normalize: str = "minmax",
    norm_std: float | None = None,
    variant: str = "honest",
    layers: list[str] | None = None,
    device: str | torch.device = "cpu",
) -> DistinctivenessResult:
    """Prune units with near-parallel (or, optionally, opposite) activation vectors.

    ``batches``: training-split inputs, normalised, not augmented. Outgoing weights of merged
    units are added to their keepers *in ``model``, in place, before this returns*; the returned
    mask (every touched tensor: incoming weights, biases, BN gamma/beta, next-layer weights) is
    not applied: call ``result.mask.apply(model)``. ``layers``: module names (or glob patterns)
    to restrict to, e.g. ``["classifier.4"]``; None = all of ``prunable_units``. ``device`` runs
    the activation pass and the angle step; the model is returned to its own device.
    """
    _check(angle, normalize, norm_std, variant)
    if variant == "paper_a" and (complementary or norm_std is not None):
        log.warning(
            "distinctiveness paper_a: complementary and norm_std are not in paper A; ignored"
        )
    units = select_layers(prunable_units(model, arch), layers)
    home = next(model.parameters()).device
    model.to(device)
    try:
        acts = unit_activations(model, units, batches, device)
    finally:
        model.to(home)

    keep: dict[str, torch.Tensor] = {}
    removed_n, total_n, flagged_n, compared_n, pairings = {}, {}, {}, {}, {}
    similar = compl = 0
    seconds = 0.0
    for unit in units:
        a = acts[unit.name]
        start = time.perf_counter()
        pairing = pair_units(
            a,
            angle,
            complementary=complementary,
            normalize=normalize,
            norm_std=norm_std,
            variant=variant,
        )
        seconds += time.perf_counter() - start
        _merge(model, unit, pairing.into)
        _mask_unit(model, unit, pairing.removed, keep)
        removed_n[unit.name] = int(pairing.removed.sum())
        total_n[unit.name] = a.shape[1]
        flagged_n[unit.name] = int(pairing.flagged.sum())
        compared_n[unit.name] = int(pairing.compared.sum())
        pairings[unit.name] = pairing
        similar += pairing.similar_pairs
        compl += pairing.complementary_pairs
        log.info(
            "distinctiveness %s: removed %d of %d units (%d similar, %d complementary; "
            "%d flagged dead/constant, %d compared)",
            unit.name,
            removed_n[unit.name],
            total_n[unit.name],
            pairing.similar_pairs,
            pairing.complementary_pairs,
            flagged_n[unit.name],
            compared_n[unit.name],
        )
    return DistinctivenessResult(
        mask=Mask(keep),
        units_removed=removed_n,
        units_total=total_n,
        similar_pairs=similar,
        complementary_pairs=compl,
        angle_seconds=seconds,
        units_flagged=flagged_n,
        units_compared=compared_n,
        pairings=pairings,
    )
