"""The units of a network: output channels or neurons that can be removed one at a time, found
from the model's graph (Torch-Pruning's ``DependencyGraph``), for any backbone.

A layer's units are its output channels (a Conv2d) or neurons (a Linear) when the channels that
are coupled with them, in Torch-Pruning's dependency group, are only:

- the layer itself, and its BatchNorm;
- any depthwise convolution that follows them, with its own BatchNorm (MobileNet, EfficientNet);
- the input columns of one consuming Conv2d or Linear (through pooling, activations and
  flatten: AlexNet's conv5 owns 36 input columns of fc6 each).

Anything else in the group leaves the layer out: a residual sum (a second producer of the same
channels, as in every ResNet conv but the blocks' first), a LayerNorm or GroupNorm across the
channels (removing one changes the others' normalisation), a concatenation, a
squeeze-excitation gate (a second consumer), a free parameter (ConvNeXt's layer scale). The
classifier's outputs (the logits) are never units.

For each unit layer (``PrunableUnit``): ``name`` (whose rows are removed), ``bn``, the
``followers`` (depthwise convolutions and their BatchNorms, in forward order), ``next`` (the
consumer, whose columns take distinctiveness' merges and lose a removed unit's inputs), ``span``
(columns per unit), ``source`` (the last module of the unit's chain, whose output is the unit's
activation) and ``activation`` (the activation module the forward pass applies to it next, or
None when the source applies its own, as timm's ``BatchNormAct2d``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from fer_lottery.models.backbone import describe

ACTIVATION_MODULES = ("torch.nn.modules.activation", "timm.layers.activations")
# Torch-Pruning's nodes for functions that pass a channel through unchanged in number.
PASS_THROUGH_OPS = ("_ElementWiseOp", "_ReshapeOp", "_FlattenOp", "_UnbindOp")


@dataclass(frozen=True)
class PrunableUnit:
    """A layer whose output units may be removed, and where they go (module docstring)."""

    name: str
    source: str
    next: str
    bn: str | None = None
    span: int = 1
    followers: tuple[str, ...] = field(default=())
    activation: str | None = None

    @property
    def owners(self) -> list[str]:
        """The modules whose per-channel parameters belong to the unit: the layer, its
        BatchNorm, then the followers."""
        return [self.name] + ([self.bn] if self.bn else []) + list(self.followers)


def depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def prunable_units(
    model: nn.Module, arch: str | None, example: torch.Tensor | None = None
) -> list[PrunableUnit]:
    """The unit layers of ``model`` (backbone ``arch``), in module order.

    ``example``: an input batch to trace the graph with (default: one blank image of the
    backbone's smallest size). Found once per model class and parameter shapes (a pruned
    model's are the dense one's); the cache holds the units, never the model."""
    signature = (
        arch,
        type(model).__qualname__,
        tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
    )
    if signature not in _FOUND:
        if len(_FOUND) >= 16:
            _FOUND.pop(next(iter(_FOUND)))
        _FOUND[signature] = tuple(find_units(model, arch, example))
    return list(_FOUND[signature])


_FOUND: dict[tuple, tuple[PrunableUnit, ...]] = {}


@torch.no_grad()
def _trace(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """Forward-pass events in order: ("start" | "end", module path)."""
    events: list[tuple[str, str]] = []
    handles = []
    for path, m in model.named_modules():
        if m is model:
            continue
        handles.append(
            m.register_forward_pre_hook(lambda _m, _i, p=path: events.append(("start", p)))
        )
        handles.append(
            m.register_forward_hook(lambda _m, _i, _o, p=path: events.append(("end", p)))
        )
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return events


def find_units(
    model: nn.Module, arch: str | None, example: torch.Tensor | None = None
) -> list[PrunableUnit]:
    """Build the dependency graph (one eval-mode pass on ``example``, or on a blank image) and
    read the groups."""
    import torch_pruning as tp

    device = next(model.parameters()).device
    if example is None:
        size = max(describe(arch).min_image_size, 32)
        x = torch.zeros(1, 3, size, size, device=device)
    else:
        x = example.to(device)
    modes = {m: m.training for m in model.modules()}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    model.eval()
    for p in frozen:  # the graph is traced through autograd: frozen layers must take part
        p.requires_grad_(True)
    try:
        with warnings.catch_warnings():  # ConvNeXt's layer scale: such groups are left out
            warnings.simplefilter("ignore", UserWarning)
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
        events = _trace(model, x)
    finally:
        for m, training in modes.items():
            m.train(training)
        for p in frozen:
            p.requires_grad_(False)
    names = {m: n for n, m in model.named_modules()}
    head = describe(arch).head if arch is not None else None
    order = {}
    for i, (kind, path) in enumerate(events):
        order.setdefault((kind, path), i)
    units = []
    for name, module in model.named_modules():
        if name == head or not isinstance(module, nn.Conv2d | nn.Linear) or depthwise(module):
            continue
        out = (
            tp.prune_conv_out_channels
            if isinstance(module, nn.Conv2d)
            else tp.prune_linear_out_channels
        )
        group = graph.get_pruning_group(module, out, idxs=[0])
        unit = _read_group(model, name, group, names, order, events)
        if unit is not None:
            units.append(unit)
    return units


def _read_group(model, name, group, names, order, events) -> PrunableUnit | None:
    producers, consumers, chain = [], [], []
    for dep, _ in group:
        target = dep.target.module
        handler = getattr(dep.handler, "__name__", type(dep.handler).__name__)
        path = names.get(target)
        if path is None:
            if type(target).__name__ not in PASS_THROUGH_OPS:
                return None  # concatenation, split, a free parameter...
        elif depthwise(target) or isinstance(target, nn.modules.batchnorm._BatchNorm):
            chain.append(path)
        elif isinstance(target, nn.Conv2d | nn.Linear):
            (producers if "out" in handler else consumers).append(path)
        elif any(True for _ in target.parameters(recurse=False)) or not _parameterless(target):
            return None  # a LayerNorm, GroupNorm or another layer with per-channel weights
    producers, consumers, chain = (list(dict.fromkeys(x)) for x in (producers, consumers, chain))
    if producers != [name] or len(consumers) != 1:
        return None
    chain.sort(key=lambda p: order.get(("start", p), len(events)))
    bn = chain[0] if chain and not depthwise(model.get_submodule(chain[0])) else None
    followers = tuple(chain[1:] if bn else chain)
    consumer = model.get_submodule(consumers[0])
    width = model.get_submodule(name)
    width = width.out_channels if isinstance(width, nn.Conv2d) else width.out_features
    fan_in = consumer.in_features if isinstance(consumer, nn.Linear) else consumer.in_channels
    if fan_in % width or (isinstance(consumer, nn.Conv2d) and fan_in != width):
        return None
    source = ([name, bn, *followers] if bn else [name, *followers])[-1]
    return PrunableUnit(
        name=name,
        source=source,
        next=consumers[0],
        bn=bn,
        span=fan_in // width,
        followers=followers,
        activation=_activation_after(model, source, consumers[0], events),
    )


def _parameterless(module: nn.Module) -> bool:
    return not any(True for _ in module.parameters())


def _activation_after(model: nn.Module, source: str, consumer: str, events) -> str | None:
    """The first activation module the forward pass runs after ``source`` ends and before
    ``consumer`` starts (None: none, or the source applies its own)."""
    try:
        i = events.index(("end", source))
    except ValueError:
        return None
    for kind, path in events[i + 1 :]:
        if (kind, path) == ("start", consumer):
            return None
        if kind == "end" and type(model.get_submodule(path)).__module__.startswith(
            ACTIVATION_MODULES
        ):
            return path
    return None
