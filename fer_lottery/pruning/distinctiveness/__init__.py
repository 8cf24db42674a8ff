"""Distinctiveness pruning (Gedeon & Harris): merge units whose activation vectors are parallel.

Each prunable unit (an FC neuron or a conv channel) gets an activation vector over the training
split. Two units whose vectors are nearly parallel (angle < tau) do the same job: one is removed
and its weights are added to the other. Two units whose vectors are nearly opposite (angle >
180 - tau, "complementary") cancel out: both go.

``distinctiveness_prune`` merges weights into ``model`` *in place* and returns a ``Mask``; the
caller applies it (``result.mask.apply(model)``). ``STRATEGY`` is the criterion
``prune.method=distinctiveness`` (``core.criteria``).

One module per part:
- ``angles``: which layers, their activations, and the Gram step, shared by the rules.
- ``honest`` (docs/design.md "Distinctiveness, precisely"): per-unit normalisation, greedy
  disjoint pairs. A merged unit's *outgoing* weights are added to its keeper's, which keeps a
  duplicate's merge exact.
- ``paper_a`` and ``paper_b``: what each paper's published code does, flaws included. Both merge
  a unit's *incoming* weights (``W[i] += W[j]``), as their code does.

``variant=`` picks the rule (``RULES``); ``layers`` restricts the layers, e.g.
``["classifier.4"]`` for paper B's fc7. ``similar_pairs`` / ``complementary_pairs`` count
removals by the kind of pair that removed a unit (for the paper rules: the unit's first pair in
the code's loop order).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from fer_lottery.config import check_angle, check_norm_std, choices, enum_value, settings
from fer_lottery.config.schema import UnitNormalize, Variant
from fer_lottery.core.errors import ConfigError
from fer_lottery.models.units import PrunableUnit, prunable_units
from fer_lottery.pruning.distinctiveness import honest, paper_a, paper_b
from fer_lottery.pruning.distinctiveness.angles import (
    CHUNK,
    Pairing,
    pairwise_angles,
    select_layers,
    select_names,
    unit_activations,
)
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.strategy import Pruned, Request, Strategy

__all__ = [
    "CHUNK",
    "RULES",
    "STRATEGY",
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


# -- the three rules ---------------------------------------------------------------------------

Units = dict[str, PrunableUnit | None]  # layer name -> what its units feed (None: paper_a)


@dataclass(frozen=True)
class Rule:
    """One variant: which layers and activations, how units pair, how a layer is merged."""

    # (model, arch, layers, example input batch to trace the graph with, or None)
    units: Callable[..., Units]
    activations: Callable[[nn.Module, Units, Iterable, torch.device], dict[str, torch.Tensor]]
    pair: Callable[..., Pairing]  # (acts, angle, *, complementary, normalize, norm_std, chunk)
    merge_and_mask: Callable[[nn.Module, str, PrunableUnit | None, Pairing, dict], None]


def _units(model: nn.Module, arch: str | None, layers: list[str] | None, example=None) -> Units:
    return {u.name: u for u in select_layers(prunable_units(model, arch, example), layers)}


def _activations(model: nn.Module, units: Units, batches, device) -> dict[str, torch.Tensor]:
    return unit_activations(model, list(units.values()), batches, device)


def _honest_merge(model: nn.Module, name: str, unit, pairing: Pairing, keep: dict) -> None:
    honest.merge(model, unit, pairing.into)
    honest.mask(model, unit, pairing.removed, keep)


def _rows_rule(module) -> Callable:
    """paper_a / paper_b: merge the layer's own rows, mask only the rows the merge zeroed."""

    def merge_and_mask(model: nn.Module, name: str, unit, pairing: Pairing, keep: dict) -> None:
        weight = model.get_submodule(name).weight
        module.merge(weight, pairing)
        entry = keep.setdefault(f"{name}.weight", torch.ones(weight.shape, dtype=torch.bool))
        entry[module.zeroed(pairing)] = False

    return merge_and_mask


RULES: dict[str, Rule] = {
    "honest": Rule(
        _units,
        _activations,
        honest.pair,
        _honest_merge,
    ),
    "paper_a": Rule(
        lambda model, arch, layers, example=None: dict.fromkeys(
            select_names(paper_a.layers(model), layers)
        ),
        lambda model, units, batches, device: paper_a.activations(
            model, list(units), batches, device
        ),
        lambda acts, angle, *, chunk, **_: paper_a.pair(acts, angle, chunk),
        _rows_rule(paper_a),
    ),
    "paper_b": Rule(
        _units,
        _activations,
        lambda acts, angle, *, norm_std, chunk, **_: paper_b.pair(acts, angle, norm_std, chunk),
        _rows_rule(paper_b),
    ),
}
assert set(RULES) == set(choices(Variant)), "a Variant without a rule, or a rule without one"

# The warning when a paper rule is given an option it ignores (the options' ``applies`` in the
# schema).
_IGNORED_WARNING = {
    "paper_a": "complementary and norm_std are not in paper A; ignored",
    "paper_b": "it merges complementary pairs; complementary ignored",
}


def _check(angle: float, normalize: str, norm_std: float | None, variant: str) -> None:
    check_angle(angle)
    if normalize not in choices(UnitNormalize):
        allowed = ", ".join(choices(UnitNormalize))
        raise ConfigError(
            f"prune.distinctiveness.normalize={normalize!r}: expected one of {allowed}"
        )
    if variant not in RULES:
        raise ConfigError(
            f"prune.distinctiveness.variant={variant!r}: expected one of {', '.join(RULES)}"
        )
    check_norm_std(norm_std)


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
    return RULES[variant].pair(
        acts,
        angle,
        complementary=complementary,
        normalize=normalize,
        norm_std=norm_std,
        chunk=chunk,
    )


# -- what one call did -------------------------------------------------------------------------


@dataclass
class DistinctivenessResult:
    """What ``distinctiveness_prune`` did. The merges are already in the model; the mask is not."""

    mask: Mask
    pairings: dict[str, Pairing]  # per layer: who went, into whom
    units_total: dict[str, int]  # per layer: how many units it has
    angle_seconds: float  # time spent in the angle step (normalise, Gram, pairing)

    @property
    def units_removed(self) -> dict[str, int]:
        return {n: int(p.removed.sum()) for n, p in self.pairings.items()}

    @property
    def units_revived(self) -> dict[str, int]:
        """paper_b: removed units live again (counted in ``units_removed`` too); see paper_b."""
        return {n: int(p.revived.sum()) for n, p in self.pairings.items() if p.revived is not None}

    @property
    def similar_pairs(self) -> int:
        return sum(p.similar_pairs for p in self.pairings.values())

    @property
    def complementary_pairs(self) -> int:
        return sum(p.complementary_pairs for p in self.pairings.values())

    def removed_units(self) -> dict[str, torch.Tensor]:
        """Per layer, a bool per unit: removed (on the CPU)."""
        return {n: p.removed.cpu().clone() for n, p in self.pairings.items()}

    def metrics(self) -> dict[str, object]:
        """This call's ``results.json`` keys (``prune/units_*``, pair counts, ``time/angles_s``)."""
        removed, total = sum(self.units_removed.values()), sum(self.units_total.values())
        out: dict[str, object] = {
            "prune/units_removed_frac": removed / total if total else 0.0,
            "prune/units_removed": removed,
            "prune/units_total": total,
            "prune/similar_pairs": self.similar_pairs,
            "prune/complementary_pairs": self.complementary_pairs,
            "time/angles_s": round(self.angle_seconds, 4),
        }
        out.update({f"prune/units_removed/{n}": v for n, v in self.units_removed.items()})
        revived = self.units_revived
        if revived:
            out["prune/units_revived"] = sum(revived.values())
            out.update({f"prune/units_revived/{n}": v for n, v in revived.items()})
        return out


# -- prune -------------------------------------------------------------------------------------


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
    _warn_ignored(variant, complementary=complementary, norm_std=norm_std)
    rule = RULES[variant]
    home = next(model.parameters()).device
    batches, example = _peek(batches)
    model.to(device)
    try:
        units = rule.units(model, arch, layers, example)
        acts = rule.activations(model, units, batches, device)
    finally:
        model.to(home)

    keep: dict[str, torch.Tensor] = {}
    pairings: dict[str, Pairing] = {}
    seconds = 0.0
    for name, unit in units.items():
        start = time.perf_counter()
        pairing = pair_units(
            acts[name],
            angle,
            complementary=complementary,
            normalize=normalize,
            norm_std=norm_std,
            variant=variant,
        )
        seconds += time.perf_counter() - start
        rule.merge_and_mask(model, name, unit, pairing, keep)
        pairings[name] = pairing
        _log_layer(name, pairing, acts[name].shape[1])
    units_total = {name: acts[name].shape[1] for name in units}
    return DistinctivenessResult(Mask(keep), pairings, units_total, seconds)


def _peek(batches: Iterable) -> tuple[Iterable, torch.Tensor | None]:
    """The batches as they were, and the first one's first input: the unit layers' graph is
    traced with the data they are pruned on."""
    it = iter(batches)
    first = next(it, None)
    if first is None:
        return [], None
    x = first[0] if isinstance(first, tuple | list) else first
    return itertools.chain([first], it), x[:1]


def _warn_ignored(variant: str, complementary: bool, norm_std: float | None) -> None:
    """One warning when a paper rule is given an option its code does not have."""
    # normalize always has a value (minmax by default), so it is never warned about.
    given = {"complementary": bool(complementary), "norm_std": norm_std is not None}
    flat = {"prune.method": "distinctiveness", "prune.distinctiveness.variant": variant}
    if any(on and not settings.applies(f"prune.{n}", flat) for n, on in given.items()):
        log.warning("distinctiveness %s: %s", variant, _IGNORED_WARNING[variant])


def _log_layer(name: str, pairing: Pairing, total: int) -> None:
    revived = int(pairing.revived.sum()) if pairing.revived is not None else 0
    log.info(
        "distinctiveness %s: removed %d of %d units (%d similar, %d complementary; "
        "%d flagged dead/constant, %d compared; %d revived)",
        name,
        int(pairing.removed.sum()),
        total,
        pairing.similar_pairs,
        pairing.complementary_pairs,
        int(pairing.flagged.sum()),
        int(pairing.compared.sum()),
        revived,
    )


# -- the criterion -----------------------------------------------------------------------------


def _prune(request: Request) -> Pruned:
    """One round: activations on ``request.device``, merges in the model, the mask returned."""
    p, model, device = request.options.distinctiveness, request.model, request.device
    model.to(device)
    result = distinctiveness_prune(
        model,
        request.arch,
        request.batches(device),
        angle=p.angle,
        complementary=p.complementary,
        normalize=enum_value(p.normalize),
        norm_std=p.norm_std,
        variant=enum_value(p.variant),
        layers=list(p.layers) if p.layers is not None else None,
        device=device,
    )
    mask = result.mask if request.previous is None else result.mask & request.previous
    return Pruned(mask, result.metrics(), result.removed_units())


# Keys summed over IMP rounds; the removed-unit counts are of the union of the rounds' removals.
_SUMMED = ("prune/units_revived", "prune/similar_pairs", "prune/complementary_pairs")


def rounds_metrics(rounds: list[Pruned]) -> dict[str, object]:
    """The job's distinctiveness keys over its rounds.

    Pair and revived counts and the angle time are summed; ``prune/units_removed*`` count every
    unit removed in any round once (a dead unit that a paper rule compares like any other may be
    removed again by a later round); other keys (``prune/units_total``) are the last round's.
    """
    out: dict[str, object] = {}
    union: dict[str, torch.Tensor] = {}
    for pruned in rounds:
        for key, value in pruned.metrics.items():
            if key in _SUMMED or key.startswith("prune/units_revived/"):
                out[key] = out.get(key, 0) + value
            elif key == "time/angles_s":
                out[key] = round(out.get(key, 0.0) + value, 4)
            elif not key.startswith("prune/units_removed"):
                out[key] = value
        for layer, units in pruned.units_removed.items():
            union[layer] = units | union[layer] if layer in union else units
    if union:
        per_layer = {n: int(r.sum()) for n, r in union.items()}
        out.update({f"prune/units_removed/{n}": v for n, v in per_layer.items()})
        out["prune/units_removed"] = sum(per_layer.values())
        total = out.get("prune/units_total", 0)
        out["prune/units_removed_frac"] = out["prune/units_removed"] / total if total else 0.0
    return out


STRATEGY = Strategy(_prune, rounds_metrics)
