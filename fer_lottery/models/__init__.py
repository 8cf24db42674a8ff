"""Networks: build any torchvision or timm backbone with its weights and a new head, freeze its
first layer groups, name its prunable weights and count its MACs."""

from fer_lottery.models.build import (
    build,
    build_model,
    count_macs,
    freeze_layers,
    layer_groups,
    prunable_weights,
)

__all__ = [
    "build",
    "build_model",
    "count_macs",
    "freeze_layers",
    "layer_groups",
    "prunable_weights",
]
