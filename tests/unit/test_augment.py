"""Batch augmentation: per-sample parameters, identity when switched off, normalisation."""

import torch

from fer_lottery.data.augment import (
    IMAGENET_MEAN,
    NORMALIZATIONS,
    normalize,
    random_affine_batch,
)


def test_identity_when_all_augmentation_is_off():
    x = torch.rand(4, 3, 32, 32)
    y = random_affine_batch(x, hflip=0.0, rotation=0.0, area_min=1.0, area_max=1.0)
    assert torch.allclose(x, y, atol=1e-5)


def test_flip_always_mirrors():
    x = torch.rand(2, 3, 16, 16)
    y = random_affine_batch(x, hflip=1.0, rotation=0.0, area_min=1.0, area_max=1.0)
    assert torch.allclose(y, x.flip(-1), atol=1e-5)


def test_each_image_gets_its_own_parameters():
    x = torch.rand(1, 3, 32, 32).repeat(8, 1, 1, 1)
    y = random_affine_batch(
        x,
        hflip=0.5,
        rotation=15.0,
        area_min=0.9,
        area_max=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert y.shape == x.shape
    distinct = {tuple(img.flatten()[:50].tolist()) for img in y}
    assert len(distinct) == 8


def test_normalize_imagenet():
    x = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 4).clone()
    assert torch.allclose(normalize(x, NORMALIZATIONS["imagenet"]), torch.zeros_like(x), atol=1e-6)
    assert torch.equal(normalize(x, NORMALIZATIONS["none"]), x)
    half = normalize(torch.full((1, 3, 2, 2), 0.75), NORMALIZATIONS["inception"])
    assert torch.allclose(half, torch.full_like(half, 0.5))
