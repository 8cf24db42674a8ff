"""Rebuild an exported (physically smaller) model: torch and torchvision only.

An exported file is ``torch.save({"arch": ..., "state_dict": ...})``. ``arch["model"]`` names
the torchvision builder (``resnet18`` or ``alexnet``) and ``arch["num_classes"]`` its head;
``arch["widths"]`` lists the units each sliced layer kept, for people. The layer widths the
loader needs are the state dict's own shapes: every Conv2d, Linear and BatchNorm2d whose weight
has another shape than torchvision's is replaced by one of that shape, with the same kernel,
stride and padding. This file imports nothing from fer_lottery, so it can be copied alone.

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


def _resized(module: nn.Module, shape: torch.Size) -> nn.Module:
    """A copy of ``module``'s layer type and settings with a weight of ``shape``."""
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(
            shape[1] * module.groups,
            shape[0],
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    if isinstance(module, nn.Linear):
        return nn.Linear(shape[1], shape[0], bias=module.bias is not None)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape[0], module.eps, module.momentum)
    raise TypeError(f"cannot resize a {type(module).__name__}")


def build_model(name: str, num_classes: int, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """torchvision ``name`` with its layers resized to ``state_dict``'s shapes, weights loaded."""
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    for path, module in list(model.named_modules()):
        weight = state_dict.get(f"{path}.weight")
        resizable = isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d)
        if resizable and weight is not None and weight.shape != module.weight.shape:
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, _resized(module, weight.shape))
    model.load_state_dict(state_dict)
    return model


def load_exported(path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The exported model in ``path``, in eval mode."""
    saved = torch.load(path, map_location=map_location, weights_only=True)
    arch = saved["arch"]
    return build_model(arch["model"], arch["num_classes"], saved["state_dict"]).eval()
