"""The built-in synthetic face dataset: shapes, determinism, and that the classes differ."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fer_lottery.core.classes import CLASSES
from fer_lottery.data.synthetic import make_synthetic, render_face


def test_shapes_dtypes_counts_and_range():
    images, labels = make_synthetic(per_class=4, image_size=32, seed=0)
    assert images.shape == (7 * 4, 3, 32, 32)
    assert images.dtype == torch.uint8
    assert labels.shape == (7 * 4,)
    assert labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=len(CLASSES)).tolist() == [4] * len(CLASSES)
    assert int(labels.min()) == 0 and int(labels.max()) == len(CLASSES) - 1
    # Real pictures, not blank or saturated canvases.
    assert images.is_contiguous()
    assert int(images.min()) < 60 and int(images.max()) > 190
    assert images.float().std() > 20


def test_labels_interleaved_and_empty_dataset():
    _, labels = make_synthetic(per_class=3, image_size=16, seed=0)
    assert labels.tolist() == list(range(7)) * 3
    images, labels = make_synthetic(per_class=0, image_size=16, seed=0)
    assert images.shape == (0, 3, 16, 16) and labels.shape == (0,)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_synthetic(per_class=-1, image_size=32, seed=0)
    with pytest.raises(ValueError):
        make_synthetic(per_class=1, image_size=4, seed=0)
    with pytest.raises(ValueError):
        render_face(7, np.random.default_rng(0), 32)


def test_deterministic_per_seed():
    a_img, a_lab = make_synthetic(per_class=3, image_size=32, seed=5)
    make_synthetic.cache_clear()  # regenerate, rather than get the cached tensors back
    b_img, b_lab = make_synthetic(per_class=3, image_size=32, seed=5)
    assert b_img is not a_img
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    c_img, c_lab = make_synthetic(per_class=3, image_size=32, seed=6)
    assert torch.equal(a_lab, c_lab)
    assert not torch.equal(a_img, c_img)
    # Every image differs from its counterpart under another seed.
    assert ((a_img.float() - c_img.float()).abs().mean(dim=(1, 2, 3)) > 5).all()
    # Image i depends only on (seed, i): a smaller dataset is a prefix of a larger one.
    d_img, _ = make_synthetic(per_class=2, image_size=32, seed=5)
    assert torch.equal(d_img, a_img[: len(d_img)])
    # Generation does not touch the global RNGs.
    torch.manual_seed(0)
    np.random.seed(0)
    state_t, state_np = torch.get_rng_state(), np.random.get_state()[1].copy()
    make_synthetic.cache_clear()
    make_synthetic(per_class=1, image_size=16, seed=3)
    assert torch.equal(torch.get_rng_state(), state_t)
    assert np.array_equal(np.random.get_state()[1], state_np)


def test_images_within_a_dataset_are_all_different():
    images, _ = make_synthetic(per_class=5, image_size=32, seed=0)
    flat = images.flatten(1).float()
    dist = torch.cdist(flat, flat)
    dist.fill_diagonal_(float("inf"))
    assert dist.min() > 0


def test_render_face_returns_rgb_image_of_size():
    img = render_face(3, np.random.default_rng(0), 48)
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB" and img.size == (48, 48)


def _paired_renders(n_seeds: int, size: int) -> np.ndarray:
    """[n_seeds, 7, H, W, 3] float: every class drawn with the same nuisance per seed.

    ``render_face`` draws the same sequence of random numbers for every label, so equal
    generator states give equal pose, colours, background and noise; only the expression
    differs.
    """
    out = np.empty((n_seeds, len(CLASSES), size, size, 3), dtype=np.float32)
    for k in range(n_seeds):
        for c in range(len(CLASSES)):
            out[k, c] = np.asarray(render_face(c, np.random.default_rng([1234, k]), size))
    return out


def test_same_nuisance_different_class_gives_a_different_face():
    """With the generator state fixed, every pair of classes is drawn differently."""
    faces = _paired_renders(12, 48)
    for a in range(len(CLASSES)):
        for b in range(a + 1, len(CLASSES)):
            diff = np.abs(faces[:, a] - faces[:, b]).mean(axis=(1, 2, 3))
            assert diff.min() > 0.2, (CLASSES[a], CLASSES[b], diff)
            assert diff.mean() > 1.0, (CLASSES[a], CLASSES[b], diff)
    # ... and the class alone changes nothing else: the corners (background) are identical
    # up to the noise, which is also shared.
    corners = faces[:, :, :4, :4]
    assert np.array_equal(corners, np.broadcast_to(corners[:, :1], corners.shape))


def test_classes_are_linearly_separable_above_chance():
    """A ridge-regression probe on 16x16 grey pixels, fit on half and scored on the other half,
    must beat chance (1/7) by a wide margin: the classes really differ in what is drawn."""
    images, labels = make_synthetic(per_class=80, image_size=48, seed=1)
    x = F.interpolate(images.float().mean(1, keepdim=True), size=(16, 16), mode="area").flatten(1)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    train = torch.arange(len(x)) % 2 == 0
    targets = F.one_hot(labels[train], 7).float()
    gram = x[train].T @ x[train] + 10 * torch.eye(x.shape[1])
    weights = torch.linalg.solve(gram, x[train].T @ targets)
    accuracy = ((x[~train] @ weights).argmax(1) == labels[~train]).float().mean()
    assert accuracy > 0.3
