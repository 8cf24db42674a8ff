"""The built-in synthetic face dataset: shapes, balance, determinism, class differences."""

import torch
import torch.nn.functional as F

from fer_lottery.data import CLASSES
from fer_lottery.data.synthetic import make_synthetic


def test_shapes_balance_and_range():
    images, labels = make_synthetic(per_class=6, image_size=40, seed=0)
    assert images.shape == (42, 3, 40, 40) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=len(CLASSES)).tolist() == [6] * 7
    assert images.float().std() > 20  # not blank


def test_deterministic_per_seed():
    a = make_synthetic(per_class=3, image_size=32, seed=5)
    make_synthetic.cache_clear()
    b = make_synthetic(per_class=3, image_size=32, seed=5)
    c = make_synthetic(per_class=3, image_size=32, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


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
