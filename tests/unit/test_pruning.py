"""Invariants of the weight-level strategies and the Mask type."""

import pytest
import torch

from fer_lottery.models import build_model, prunable_weights
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask import Mask, zero_fraction
from fer_lottery.pruning.random import random_mask


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_model("resnet18", None)


@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_global_magnitude_prunes_exact_count(resnet, ratio):
    names = prunable_weights(resnet)
    mask = magnitude_mask(resnet, names, ratio, "global")
    total = mask.numel()
    assert total == sum(resnet.state_dict()[n].numel() for n in names)
    assert total - mask.kept() == round(ratio * total)
    # The pruned weights are the smallest: every kept |w| >= every pruned |w|.
    state = resnet.state_dict()
    kept_min = min(
        float(state[n].abs()[mask.tensors[n]].min()) for n in names if mask.tensors[n].any()
    )
    pruned_max = max(
        float(state[n].abs()[~mask.tensors[n]].max()) for n in names if (~mask.tensors[n]).any()
    )
    assert pruned_max <= kept_min


def test_layer_magnitude_prunes_exact_count_per_layer(resnet):
    names = prunable_weights(resnet)
    mask = magnitude_mask(resnet, names, 0.9, "layer")
    for n in names:
        t = mask.tensors[n]
        assert int((~t).sum()) == round(0.9 * t.numel()), n


def test_biases_and_batchnorm_are_not_prunable(resnet):
    names = prunable_weights(resnet)
    assert all(n.endswith(".weight") for n in names)
    assert not any("bn" in n or "downsample.1" in n for n in names)
    assert "fc.weight" in names and "conv1.weight" in names


def test_ties_are_broken_exactly():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10))
    with torch.no_grad():
        model[0].weight.fill_(0.5)
    mask = magnitude_mask(model, ["0.weight"], 0.37, "global")
    assert mask.numel() - mask.kept() == 37


def test_iterative_masks_only_shrink(resnet):
    names = prunable_weights(resnet)
    model = build_model("resnet18", None)
    model.load_state_dict(resnet.state_dict())
    previous = None
    n, final = 3, 0.9
    for i in range(1, n + 1):
        ratio = 1 - (1 - final) ** (i / n)
        mask = magnitude_mask(model, names, ratio, "global", previous)
        if previous is not None:
            for name in names:  # nothing pruned comes back
                assert not (mask.tensors[name] & ~previous.tensors[name]).any()
        mask.apply(model)
        with torch.no_grad():  # weights move between rounds, as retraining would move them
            for name in names:
                model.state_dict()[name].add_(torch.randn_like(model.state_dict()[name]) * 1e-3)
                mask.apply(model)
        assert abs(mask.sparsity() - ratio) < 1e-6
        previous = mask
    assert abs(zero_fraction(model, names) - final) < 1e-6


def test_random_has_magnitude_counts_per_layer(resnet):
    names = prunable_weights(resnet)
    for scope in ("global", "layer"):
        mag = magnitude_mask(resnet, names, 0.9, scope)
        rnd = random_mask(resnet, names, 0.9, scope, seed=3)
        for n in names:
            assert int((~mag.tensors[n]).sum()) == int((~rnd.tensors[n]).sum()), n
        overlap = sum(int((~mag.tensors[n] & ~rnd.tensors[n]).sum()) for n in names)
        assert overlap < 0.95 * (mag.numel() - mag.kept())  # different positions
    a = random_mask(resnet, names, 0.5, "layer", seed=1)
    b = random_mask(resnet, names, 0.5, "layer", seed=1)
    assert all(torch.equal(a.tensors[n], b.tensors[n]) for n in names)


def test_random_respects_previous_mask(resnet):
    names = prunable_weights(resnet)
    first = random_mask(resnet, names, 0.5, "global", seed=0)
    second = random_mask(resnet, names, 0.8, "global", previous=first, seed=1)
    for n in names:
        assert not (second.tensors[n] & ~first.tensors[n]).any()
    assert abs(second.sparsity() - 0.8) < 1e-6


def test_mask_apply_save_load_and_and(tmp_path, resnet):
    names = prunable_weights(resnet)
    mask = magnitude_mask(resnet, names, 0.75, "layer")
    model = build_model("resnet18", None)
    mask.apply(model)
    assert abs(zero_fraction(model, names) - 0.75) < 1e-4
    mask.save(tmp_path / "mask.pt")
    loaded = Mask.load(tmp_path / "mask.pt")
    assert all(torch.equal(loaded.tensors[n], mask.tensors[n]) for n in names)
    other = Mask.ones(model, names[:1])
    with torch.no_grad():
        other.tensors[names[0]].view(-1)[0] = False
    both = mask & other
    assert both.kept() <= mask.kept()
    assert set(both.tensors) == set(names)
