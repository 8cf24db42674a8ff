"""What fer_lottery needs to know of a backbone, found on the model itself, for any torchvision
classification builder (``model.name=mobilenet_v2``) and any timm model
(``model.name=timm/<name>``).

- **The architecture** (``create``): the library's own 1000-way ImageNet network, randomly
  initialised by the library's own code.
- **The head** (``head_name``): timm's ``pretrained_cfg["classifier"]``; for torchvision, the
  last Linear or Conv2d with 1000 outputs. A new head (``replace_head``) is timm's
  ``reset_classifier``, or a fresh layer of the same type with ``num_classes`` outputs.
- **The layer groups** that ``model.frozen_layers`` counts (``layer_groups``): timm's own
  coarse ``group_matcher`` (stem, stages, head). torchvision builds its models in one of two
  layouts: named stages (ResNet: ``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``) or a body
  and a head (``features``, ``classifier``: AlexNet, VGG, MobileNet, EfficientNet, ConvNeXt).
  The groups are the model's children that hold parameters, and for the second layout the
  items of ``features`` and ``classifier``; a normalisation layer joins the group before it
  (ResNet's stem is ``conv1`` and ``bn1``).
- **The smallest image size** (``min_image_size``): the smallest size at which the forward
  pass runs (tried on the meta device, no memory and no arithmetic), and at least the network's
  total downsampling (224 over its smallest convolution output at 224 px).

``describe(name)`` gathers these for a name, on a meta-device model, for the checks that run
before any work (``models.checks``) and for ``python -m fer_lottery.models NAME``.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from fer_lottery.core.errors import ConfigError

TIMM_PREFIX = "timm/"
IMAGENET_CLASSES = 1000
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
PROBE_SIZE = 224


@dataclass(frozen=True)
class Spec:
    """A backbone name, split: ``library`` (torchvision or timm) and its own ``arch`` name."""

    name: str
    library: str
    arch: str

    @property
    def is_timm(self) -> bool:
        return self.library == "timm"


@functools.cache
def spec(name: str) -> Spec:
    """The backbone ``model.name`` names, or a one-line ConfigError with close names."""
    name = str(name)
    if name.startswith(TIMM_PREFIX):
        import timm

        arch = name.removeprefix(TIMM_PREFIX)
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            hint = f" (close: {', '.join(TIMM_PREFIX + c for c in close)})" if close else ""
            raise ConfigError(
                f"model.name={name}: timm has no model {arch!r}{hint}; "
                "python -c 'import timm; print(timm.list_models())' lists them"
            )
        return Spec(name, "timm", arch)
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"model.name={name}: not a torchvision classification model{hint}; use one of "
            "torchvision.models.list_models(module=torchvision.models), or timm/<name> for a "
            "timm model"
        )
    return Spec(name, "torchvision", name)


def create(s: Spec) -> nn.Module:
    """The library's 1000-way ImageNet architecture, randomly initialised by its own code."""
    if s.is_timm:
        import timm

        return timm.create_model(s.arch, pretrained=False)
    import torchvision

    return torchvision.models.get_model(s.arch, weights=None)


def head_name(model: nn.Module, s: Spec) -> str:
    """The module path of the classifier that a new head replaces."""
    if s.is_timm:
        head = model.pretrained_cfg.get("classifier")
        if isinstance(head, str) and _has(model, head):
            return head
        raise ConfigError(
            f"model.name={s.name}: timm names no single classifier for it ({head!r}); "
            "choose a classification model"
        )
    heads = [
        n
        for n, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m.out_features == IMAGENET_CLASSES)
        or (isinstance(m, nn.Conv2d) and m.out_channels == IMAGENET_CLASSES)
    ]
    if not heads:
        raise ConfigError(
            f"model.name={s.name}: found no {IMAGENET_CLASSES}-way classifier layer to replace"
        )
    return heads[-1]


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def replace_head(model: nn.Module, s: Spec, num_classes: int) -> str:
    """A new, randomly initialised ``num_classes``-way head, in place; returns its path."""
    path = head_name(model, s)
    if s.is_timm:
        model.reset_classifier(num_classes)
        return path
    old = model.get_submodule(path)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(
            old.in_channels,
            num_classes,
            old.kernel_size,
            old.stride,
            old.padding,
            bias=old.bias is not None,
        )
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return path


# -- layer groups -------------------------------------------------------------------------------


def layer_group_names(model: nn.Module, s: Spec) -> list[tuple[str, list[str]]]:
    """The layer groups ``model.frozen_layers`` counts, in order: (label, module paths)."""
    if s.is_timm:
        from timm.models import group_modules

        groups = group_modules(model, model.group_matcher(coarse=True))
        return [(_label(paths), list(paths)) for _, paths in sorted(groups.items())]
    children = [(n, m) for n, m in model.named_children() if _params(m)]
    items: list[tuple[str, nn.Module]] = []
    for name, module in children:
        if len(children) <= 2 and isinstance(module, nn.Sequential | nn.ModuleList):
            items += [(f"{name}.{n}", m) for n, m in module.named_children() if _params(m)]
        else:
            items.append((name, module))
    groups: list[list[str]] = []
    for name, module in items:
        if groups and isinstance(module, NORM_TYPES):
            groups[-1].append(name)
        else:
            groups.append([name])
    return [(_label(paths), paths) for paths in groups]


def _params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _label(paths: list[str]) -> str:
    """A group's name: the dotted prefix its paths share, else its top-level names joined."""
    parts = [p.split(".") for p in paths]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if common and len(paths) > 1 or len(paths) == 1:
        return ".".join(common) if len(paths) > 1 else paths[0]
    tops = list(
        dict.fromkeys(".".join(p[:2]) if p[0] in ("blocks", "stages") else p[0] for p in parts)
    )
    return "+".join(tops)


def group_has_batchnorm(model: nn.Module, paths: list[str]) -> bool:
    """Whether a group holds a BatchNorm layer (a batch of one fails while it trains)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in paths
        for m in model.get_submodule(p).modules()
    )


# -- the smallest input --------------------------------------------------------------------------


def min_image_size(model: nn.Module) -> int:
    """The smallest square input the model runs on: its forward pass works at that size, and
    the size is at least the total downsampling (224 over the smallest conv output at 224)."""
    smallest = _smallest_map(model, PROBE_SIZE)
    if smallest is None:
        raise ConfigError("the model does not run on a 224 px image")
    stride = math.ceil(PROBE_SIZE / smallest)
    lo, hi = 1, PROBE_SIZE  # hi runs; find the smallest that does
    while lo < hi:
        mid = (lo + hi) // 2
        if _smallest_map(model, mid) is not None:
            hi = mid
        else:
            lo = mid + 1
    return max(lo, stride)


@torch.no_grad()
def _smallest_map(model: nn.Module, size: int) -> int | None:
    """The smallest height or width of any 4-D module output at this input size; None if the
    forward fails. The model must live on the meta device (no arithmetic is done)."""
    sides: list[int] = []

    def hook(_m, inputs, out):
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.dim() == 4 and min(x.shape[2:]) > 1:
            sides.append(min(out.shape[2], out.shape[3]))

    # Convolutions of a spatial map only: a global pool's 1x1 map (and a squeeze-excitation
    # conv on it) is no downsampling.
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model(torch.empty(2, 3, size, size, device="meta"))
    except Exception:  # noqa: BLE001 - any failure means "does not run at this size"
        return None
    finally:
        for h in handles:
            h.remove()
    sides = [s for s in sides if s > 0]
    return min(sides) if sides else size


# -- everything at once, for checks and people ----------------------------------------------------


@dataclass(frozen=True)
class Description:
    """A backbone as fer_lottery sees it (with the new head): groups, head, limits."""

    spec: Spec
    head: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    batchnorm: tuple[bool, ...]  # per group: holds BatchNorm
    min_image_size: int
    params: int
    layers: tuple[str, ...] = ()  # the conv and linear modules: what prune.include globs match

    @property
    def batchnorm_groups(self) -> int:
        """How many groups, from the first, must be frozen before no BatchNorm trains."""
        return max((i + 1 for i, bn in enumerate(self.batchnorm) if bn), default=0)


@functools.cache
def describe(name: str, num_classes: int = 7) -> Description:
    """The description of a backbone, built on the meta device (no weights, no memory)."""
    s = spec(name)
    with torch.device("meta"):
        model = create(s)
        head = replace_head(model, s, num_classes)
    model.eval()
    groups = layer_group_names(model, s)
    return Description(
        spec=s,
        head=head,
        groups=tuple((label, tuple(paths)) for label, paths in groups),
        batchnorm=tuple(group_has_batchnorm(model, paths) for _, paths in groups),
        min_image_size=min_image_size(model),
        params=sum(p.numel() for p in model.parameters()),
        layers=tuple(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)),
    )
