"""Networks: build any torchvision or timm backbone with its weights and a new head, freeze its
first layer groups, name its prunable weights and count its MACs."""

from fer_lottery.models.build import (
    ARCHITECTURES,
    build_model,
    count_macs,
    freeze_layers,
    layer_groups,
    prunable_weights,
)

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "count_macs",
    "freeze_layers",
    "layer_groups",
    "prunable_weights",
]
