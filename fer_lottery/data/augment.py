"""Batch augmentation and normalisation on the training device.

Paper A's training augmentation is a horizontal flip (p=0.5), a rotation of +-15 degrees and a
random square crop of 90-100% of the area. torchvision's transforms draw one set of parameters
per call, so applying them to a whole batch would give every image the same flip and angle. Here
each image gets its own flip, angle and crop, composed into one affine matrix, and the batch is
resampled in a single ``grid_sample`` call: one interpolation, no per-sample Python work.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_affine_batch(
    images: torch.Tensor,
    hflip: float,
    rotation: float,
    area_min: float,
    area_max: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Flip, rotate and square-crop each image of a float batch [B, C, H, W] independently."""
    b = images.shape[0]
    # All five draws in one tensor, made on the CPU generator (the same values, in the same
    # order, as five draws of b) and copied to the device once: one host-to-device copy per
    # batch, not five.
    draws = torch.rand(5, b, generator=generator).to(images.device, non_blocking=True)

    def uniform(row: int, lo: float, hi: float) -> torch.Tensor:
        return draws[row].mul(hi - lo).add_(lo)

    side = uniform(0, area_min, area_max).sqrt()  # crop side as a fraction of the image side
    # Crop centre, in normalised [-1, 1] coordinates, so the crop stays inside the image.
    cx = uniform(1, -1, 1) * (1 - side)
    cy = uniform(2, -1, 1) * (1 - side)
    angle = uniform(3, -rotation, rotation) * (math.pi / 180)
    flip = torch.where(uniform(4, 0, 1) < hflip, -1.0, 1.0)
    cos, sin = angle.cos() * side, angle.sin() * side
    # Output pixel (x, y) samples input at R(angle) * S(side) * Flip * (x, y) + centre.
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, cx], dim=1),
            torch.stack([sin * flip, cos, cy], dim=1),
        ],
        dim=1,
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] in 0..255 -> float in [0, 1]."""
    return images.float().div_(255)


INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
MeanStd = tuple[tuple[float, ...], tuple[float, ...]]
# data.normalize's fixed choices; "auto" is resolved from the weights (models.weights).
NORMALIZATIONS: dict[str, MeanStd | None] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": (INCEPTION_MEAN, INCEPTION_STD),
    "none": None,
}


@functools.cache
def _mean_std(
    mean_std: MeanStd, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as [1, 3, 1, 1] tensors, made once per values, device and dtype (a tensor
    built from Python numbers per batch would be one more host-to-device copy each time)."""
    mean = torch.tensor(mean_std[0], dtype=dtype).view(1, 3, 1, 1).to(device)
    std = torch.tensor(mean_std[1], dtype=dtype).view(1, 3, 1, 1).to(device)
    return mean, std


def normalize(images: torch.Tensor, mean_std: MeanStd | None) -> torch.Tensor:
    """``(images - mean) / std`` per channel, or the [0, 1] values as they are (None)."""
    if mean_std is None:
        return images
    mean, std = _mean_std(tuple(map(tuple, mean_std)), images.device, images.dtype)
    return (images - mean) / std
