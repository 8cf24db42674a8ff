"""Rebuild an exported (physically smaller) model: torch and torchvision (or timm) only.

An exported file is ``torch.save({"arch": ..., "state_dict": ...})``. ``arch["model"]`` names
the backbone (a torchvision builder such as ``resnet18``, or ``timm/<name>``) and
``arch["num_classes"]`` its head; ``arch["widths"]`` lists the units each sliced layer kept, for
people. The layer widths the loader needs are the state dict's own shapes: every Conv2d, Linear
and BatchNorm whose weight has another shape than the library's is resized in place to that
shape (a depthwise conv keeps one group per channel), so its class, kernel, stride, padding
(timm's TF "same" padding included) and fused activation stay. This file imports nothing from
fer_lottery, so it can be copied alone.

    import torch
    from fer_lottery.export.loader import load_exported
    model = load_exported("exported.pt").eval()
    logits = model(images)  # images normalised as in training, (N, 3, H, W)
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

__all__ = ["build_model", "load_exported"]

TIMM_PREFIX = "timm/"


def _resize(module: nn.Module, shape: torch.Size) -> None:
    """In place: ``module``'s weight (and bias, BN statistics) take ``shape``."""
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        module.groups = shape[0] if depthwise else module.groups
        module.out_channels, module.in_channels = shape[0], shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = shape[0], shape[1]
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = shape[0]
        for name in ("running_mean", "running_var"):
            if getattr(module, name, None) is not None:
                setattr(module, name, torch.zeros(shape[0]))
    else:
        raise TypeError(f"cannot resize a {type(module).__name__}")
    module.weight = nn.Parameter(torch.empty(shape))
    if getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(torch.empty(shape[0]))


def _library_model(name: str, num_classes: int) -> nn.Module:
    if name.startswith(TIMM_PREFIX):
        import timm

        return timm.create_model(name.removeprefix(TIMM_PREFIX), num_classes=num_classes)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def build_model(name: str, num_classes: int, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Backbone ``name`` with its layers resized to ``state_dict``'s shapes, weights loaded."""
    model = _library_model(name, num_classes)
    resizable = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    for path, module in list(model.named_modules()):
        weight = state_dict.get(f"{path}.weight")
        if (
            isinstance(module, resizable)
            and weight is not None
            and weight.shape != module.weight.shape
        ):
            _resize(module, weight.shape)
    model.load_state_dict(state_dict)
    return model


def load_exported(path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The exported model in ``path``, in eval mode."""
    saved = torch.load(path, map_location=map_location, weights_only=True)
    arch = saved["arch"]
    return build_model(arch["model"], arch["num_classes"], saved["state_dict"]).eval()
