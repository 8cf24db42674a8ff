"""Distinctiveness pruning (Gedeon & Harris): merge units whose activation vectors are parallel.

Each prunable unit (an FC neuron or a conv channel) gets an activation vector over the training
split. Two units whose vectors are nearly parallel (angle < tau) do the same job: one is removed
and its weights are added to the other. Two units whose vectors are nearly opposite (angle >
180 - tau, "complementary") cancel out: both go.

``distinctiveness_prune`` merges weights into ``model`` *in place* and returns a ``Mask``; the
caller applies it (``result.mask.apply(model)``).

One module per part:
- ``angles``: which layers, their activations, and the Gram step, shared by the rules.
- ``honest`` (DESIGN "Distinctiveness, precisely"): per-unit normalisation, greedy disjoint pairs.
  A merged unit's *outgoing* weights are added to its keeper's, which keeps a duplicate's merge
  exact.
- ``paper_a`` and ``paper_b``: what each paper's published code does, flaws included. Both merge
  a unit's *incoming* weights (``W[i] += W[j]``), as their code does.

``variant=`` picks the rule; ``layers`` restricts the layers, e.g. ``["classifier.4"]`` for paper
B's fc7. ``similar_pairs`` / ``complementary_pairs`` count removals by the kind of pair that
removed a unit (for the paper rules: the unit's first pair in the code's loop order).
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
    pairwise_angles,
    prunable_units,
    select_layers,
    select_names,
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
    # paper_b: removed units live again (counted in units_removed too); see paper_b
    units_revived: dict[str, int] = field(default_factory=dict)

    def removed_fraction(self) -> float:
        total = sum(self.units_total.values())
        return sum(self.units_removed.values()) / total if total else 0.0


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

    This is the whole angle step (normalise, Gram, pairing); each rule's module documents it.
    """
    _check(angle, normalize, norm_std, variant)
    if variant == "paper_a":
        return paper_a.pair(acts, angle, chunk)
    if variant == "paper_b":
        return paper_b.pair(acts, angle, norm_std, chunk)
    return honest.pair(
        acts,
        angle,
        complementary=complementary,
        normalize=normalize,
        norm_std=norm_std,
        chunk=chunk,
    )


def _check(angle: float, normalize: str, norm_std: float | None, variant: str) -> None:
    if not 0.0 < angle <= 90.0:
        raise ConfigError(f"prune.angle={angle}: tau must be in (0, 90] degrees")
    if normalize not in NORMALIZE:
        raise ConfigError(f"prune.normalize={normalize!r}: expected one of {', '.join(NORMALIZE)}")
    if variant not in VARIANTS:
        raise ConfigError(f"prune.variant={variant!r}: expected one of {', '.join(VARIANTS)}")
    if norm_std is not None and not (math.isfinite(norm_std) and norm_std >= 0):
        raise ConfigError(f"prune.norm_std={norm_std}: expected null or a number >= 0")


# -- prune ---------------------------------------------------------------------------------------


def _mask_rows(model: nn.Module, name: str, rows: torch.Tensor, keep: dict) -> None:
    """Mask the given rows (units) of module ``name``'s weight, and nothing else of it."""
    weight = model.get_submodule(name).weight
    entry = keep.setdefault(f"{name}.weight", torch.ones(weight.shape, dtype=torch.bool))
    entry[rows] = False


def distinctiveness_prune(
    model: nn.Module,
    arch: str | None,
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

    ``batches``: training-split inputs, normalised, not augmented. Merged weights are added to
    their keepers *in ``model``, in place, before this returns*: outgoing weights for ``honest``,
    the layer's own rows for the paper rules. The returned mask is not applied: call
    ``result.mask.apply(model)``. ``honest`` masks every tensor of a removed unit (incoming
    weights, bias, BN gamma/beta, next-layer weights); the paper rules mask only the removed rows
    of the layer's weight, as their code zeroes nothing else.

    ``arch`` picks ``prunable_units`` for ``honest`` and ``paper_b``; ``paper_a`` takes every
    Conv2d and Linear of any model and ignores it. ``layers``: module names (or glob patterns) to
    restrict to, e.g. ``["classifier.4"]``. ``device`` runs the activation pass and the angle
    step; the model is returned to its own device.
    """
    _check(angle, normalize, norm_std, variant)
    if variant == "paper_a" and (complementary or norm_std is not None):
        log.warning(
            "distinctiveness paper_a: complementary and norm_std are not in paper A; ignored"
        )
    if variant == "paper_b" and complementary:
        log.warning("distinctiveness paper_b: it merges complementary pairs; complementary ignored")
    home = next(model.parameters()).device
    model.to(device)
    try:
        if variant == "paper_a":
            units = {n: None for n in select_names(paper_a.layers(model), layers)}
            acts = paper_a.activations(model, list(units), batches, device)
        else:
            units = {u.name: u for u in select_layers(prunable_units(model, arch), layers)}
            acts = unit_activations(model, list(units.values()), batches, device)
    finally:
        model.to(home)

    keep: dict[str, torch.Tensor] = {}
    removed_n, total_n, flagged_n, compared_n, revived_n, pairings = {}, {}, {}, {}, {}, {}
    similar = compl = 0
    seconds = 0.0
    for name, unit in units.items():
        a = acts[name]
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
        if variant == "honest":
            honest.merge(model, unit, pairing.into)
            honest.mask(model, unit, pairing.removed, keep)
        else:
            rule = paper_a if variant == "paper_a" else paper_b
            rule.merge(model.get_submodule(name).weight, pairing)
            _mask_rows(model, name, rule.zeroed(pairing), keep)
        removed_n[name] = int(pairing.removed.sum())
        total_n[name] = a.shape[1]
        flagged_n[name] = int(pairing.flagged.sum())
        compared_n[name] = int(pairing.compared.sum())
        if pairing.revived is not None:
            revived_n[name] = int(pairing.revived.sum())
        pairings[name] = pairing
        similar += pairing.similar_pairs
        compl += pairing.complementary_pairs
        log.info(
            "distinctiveness %s: removed %d of %d units (%d similar, %d complementary; "
            "%d flagged dead/constant, %d compared; %d revived)",
            name,
            removed_n[name],
            total_n[name],
            pairing.similar_pairs,
            pairing.complementary_pairs,
            flagged_n[name],
            compared_n[name],
            revived_n.get(name, 0),
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
        units_revived=revived_n,
    )
