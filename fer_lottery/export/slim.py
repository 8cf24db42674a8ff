"""Slice the units a unit-level mask removed out of a model, exactly, on any backbone.

A unit of a unit layer (``models.units``, found from the model's graph: ResNet-18's block
``conv1`` channels; AlexNet's conv1-5, fc6 and fc7; MobileNet's expansions with their depthwise
convs; ConvNeXt's MLP hidden units) is *masked* when the mask removes its whole incoming filter
or row. Its weights are zero, so it emits a constant: the activation of its bias, or of its
BatchNorm applied to 0 (through the depthwise convs that follow it, if any).
What happens to it depends on that constant, so that the export computes what the masked model
computes (up to float rounding):

- constant 0 (``honest`` masks the unit's bias and BN too): the unit is sliced out;
- constant c != 0 and a Linear consumer (fc6, fc7, fc8; conv5 -> fc6 passes max-pool, average
  pool and flatten, which keep a constant map constant, so c meets 36 columns of fc6): c times
  the unit's columns is added to the consumer's bias, then the unit is sliced out (``folded``);
- constant c != 0 and a Conv2d consumer (``paper_a`` / ``paper_b`` leave bias and BN alive), or
  into a depthwise follower: the unit is kept (``kept_constant``). Zero padding makes a constant
  map non-constant at the borders of the next conv, so no bias can stand in for it. Exactness
  before size.

A layer keeps at least one unit (``kept_last``). Whole rows masked outside the prunable layers
(``paper_a`` masks ResNet's residual convs and the logits) stay: their outputs feed a residual
sum or are the logits (``unsliceable``). Slicing a unit removes its row (filter) and bias, its
BN entries (weight, bias, running mean and variance), the same of its depthwise followers, and
its input columns in the consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fer_lottery.export.loader import build_model
from fer_lottery.models.backbone import describe
from fer_lottery.models.units import PrunableUnit, prunable_units

State = dict[str, torch.Tensor]


@dataclass
class LayerExport:
    """What the export did to one prunable layer's units."""

    name: str
    units: int  # in the dense model
    masked: int  # whole incoming filter / row masked
    sliced: int  # gone from the export (folded ones included)
    folded: int  # sliced after adding a constant output to the consumer's bias
    kept_constant: int  # masked, constant output != 0 into a conv: kept for exactness
    kept_last: int  # masked, kept so that the layer keeps one unit

    @property
    def width(self) -> int:
        return self.units - self.sliced


@dataclass
class Export:
    """A slimmer model and how it was made."""

    model: nn.Module
    arch: dict[str, object]
    layers: list[LayerExport]
    unsliceable: dict[str, int] = field(default_factory=dict)  # layer -> whole rows masked
    params_dense: int = 0

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def summary(self) -> dict[str, object]:
        """Counts for people and JSON: units per layer, parameters, units kept and why."""
        return {
            "model": self.arch["model"],
            "params_dense": self.params_dense,
            "params_export": self.params,
            "units_masked": sum(x.masked for x in self.layers),
            "units_sliced": sum(x.sliced for x in self.layers),
            "units_folded": sum(x.folded for x in self.layers),
            "units_kept_constant": sum(x.kept_constant for x in self.layers),
            "units_kept_last": sum(x.kept_last for x in self.layers),
            "rows_masked_unsliceable": sum(self.unsliceable.values()),
            "layers": {x.name: {"units": x.units, "width": x.width} for x in self.layers},
        }


def _masked_rows(mask: State, name: str, n: int) -> torch.Tensor:
    keep = mask.get(f"{name}.weight")
    if keep is None:
        return torch.zeros(n, dtype=torch.bool)
    return ~keep.reshape(n, -1).any(1)


@torch.no_grad()
def _constant(model: nn.Module, state: State, unit: PrunableUnit, n: int) -> torch.Tensor:
    """Each unit's output when its incoming weights are all zero: its bias (or 0) through its
    BatchNorm, activation and depthwise followers, each in eval mode. NaN where a nonzero
    constant would meet a depthwise conv (its zero padding makes the map non-constant)."""
    x = state.get(f"{unit.name}.bias", torch.zeros(n)).detach().clone().view(1, n, 1, 1)
    for path in ([unit.bn] if unit.bn else []) + list(unit.followers):
        module = model.get_submodule(path)
        if isinstance(module, nn.Conv2d):  # a depthwise follower
            bias = state.get(f"{path}.bias", torch.zeros(n)).view(1, n, 1, 1)
            x = torch.where(x != 0, torch.nan, bias)
        else:
            x = _eval(module, x)
    if unit.activation is not None:
        x = _eval(model.get_submodule(unit.activation), x.clone())
    return x.reshape(n)


def _eval(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    training = module.training
    module.eval()
    try:
        return module(x.float())
    finally:
        module.train(training)


def _take(state: State, name: str, keep: torch.Tensor, dim: int = 0, span_of: int = 0) -> None:
    """Keep ``keep``'s entries of ``state[name]`` along ``dim`` (columns in blocks of span)."""
    t = state[name]
    if dim == 0:
        state[name] = t[keep].clone()
    else:  # input columns: (out, units, span...) whatever the layer type
        state[name] = t.reshape(t.shape[0], span_of, -1)[:, keep].reshape(
            t.shape[0], -1, *t.shape[2:]
        )


@torch.no_grad()
def _slim_layer(model: nn.Module, state: State, mask: State, unit: PrunableUnit) -> LayerExport:
    n = state[f"{unit.name}.weight"].shape[0]
    masked = _masked_rows(mask, unit.name, n)
    const = _constant(model, state, unit, n)
    linear = isinstance(model.get_submodule(unit.next), nn.Linear)
    drop = masked & ((const == 0) | (linear & ~const.isnan()))
    kept_last = 0
    if n and bool(drop.all()):
        drop[0] = False
        kept_last = 1
    fold = drop & (const != 0)
    nxt = f"{unit.next}.weight"
    if fold.any():
        w = state[nxt].reshape(state[nxt].shape[0], n, -1)
        contribution = (w[:, fold] * const[fold].view(1, -1, 1)).sum((1, 2))
        state[f"{unit.next}.bias"] = state[f"{unit.next}.bias"] + contribution
    keep = ~drop
    for owner in unit.owners:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            if f"{owner}.{suffix}" in state:
                _take(state, f"{owner}.{suffix}", keep)
    _take(state, nxt, keep, dim=1, span_of=n)
    return LayerExport(
        unit.name,
        units=n,
        masked=int(masked.sum()),
        sliced=int(drop.sum()),
        folded=int(fold.sum()),
        kept_constant=int((masked & ~drop).sum()) - kept_last,
        kept_last=kept_last,
    )


def _unsliceable(model: nn.Module, mask: State, prunable: set[str]) -> dict[str, int]:
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and name not in prunable:
            rows = int(_masked_rows(mask, name, module.weight.shape[0]).sum())
            if rows:
                out[name] = rows
    return out


def slim(model: nn.Module, arch: str, mask: State) -> Export:
    """The masked ``model`` (backbone ``arch``, mask already applied) with masked units gone.

    ``mask``: state-dict name -> bool keep tensor, as in ``mask.pt``. ``model`` is not changed.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    units = prunable_units(model, arch)
    layers = [_slim_layer(model, state, mask, u) for u in units]
    head = model.get_submodule(describe(arch).head)
    description = {
        "model": arch,
        "num_classes": head.out_features if isinstance(head, nn.Linear) else head.out_channels,
        "widths": {x.name: x.width for x in layers},
        "dense_widths": {x.name: x.units for x in layers},
    }
    return Export(
        model=build_model(arch, head.out_features, state).eval(),
        arch=description,
        layers=layers,
        unsliceable=_unsliceable(model, mask, {o for u in units for o in u.owners}),
        params_dense=sum(p.numel() for p in model.parameters()),
    )
