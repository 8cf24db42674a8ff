"""prune.granularity=unit: whole neurons and channels go (filter, bias, BN gamma and beta), every
layer keeps one, the counts are exact, and the export slices them out exactly."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from fer_lottery.core import criteria
from fer_lottery.export.slim import slim
from fer_lottery.models import build_model, prunable_weights
from fer_lottery.models.units import prunable_units
from fer_lottery.pruning.strategy import Request
from tests.end_to_end.test_export import TOL, max_diff, trained_like


def _request(model, arch, method_ratio, scope="global", include=("*",), previous=None):
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 7
    options = OmegaConf.create({"scope": scope, "granularity": "unit", "include": list(include)})
    return Request(
        model=model,
        names=prunable_weights(model),
        ratio=method_ratio,
        previous=previous,
        options=options,
        arch=arch,
        seed=3,
        batches=lambda d: iter([x]),
        examples=lambda d: iter([(x, y)]),
        device=torch.device("cpu"),
    )


def _removed_rows(mask, layer, n):
    return ~mask.tensors[f"{layer}.weight"].reshape(n, -1).any(1)


@pytest.mark.parametrize("method", ["magnitude", "gradient", "random"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unit_masks_remove_whole_units_and_every_layer_keeps_one(method, scope):
    model = trained_like("alexnet")
    units = prunable_units(model, "alexnet")
    pruned = criteria.get(method).prune(_request(model, "alexnet", 0.7, scope))
    state = model.state_dict()
    total = sum(state[f"{u.name}.weight"].shape[0] for u in units)
    gone = 0
    for u in units:
        n = state[f"{u.name}.weight"].shape[0]
        removed = pruned.units_removed[u.name]
        rows = _removed_rows(pruned.mask, u.name, n)
        assert torch.equal(rows, removed)  # a removed unit's whole filter goes, nothing else
        keep = pruned.mask.tensors[f"{u.name}.weight"].reshape(n, -1)
        assert bool(keep[~removed].all())
        assert torch.equal(pruned.mask.tensors[f"{u.name}.bias"], ~removed)
        assert int((~removed).sum()) >= 1
        if scope == "layer":
            assert int(removed.sum()) == min(round(0.7 * n), n - 1)
        gone += int(removed.sum())
    assert gone == pruned.metrics["prune/units_removed"]
    if scope == "global":
        assert gone == round(0.7 * total)
    assert pruned.metrics["prune/units_total"] == total
    # The logits layer is never touched.
    assert bool(pruned.mask.tensors["classifier.6.weight"].all())


def test_magnitude_ranks_units_by_the_l1_norm_of_their_filter():
    model = trained_like("resnet18")
    pruned = criteria.get("magnitude").prune(_request(model, "resnet18", 0.5, "layer"))
    w = model.state_dict()["layer2.0.conv1.weight"]
    l1 = w.abs().reshape(len(w), -1).sum(1)
    removed = pruned.units_removed["layer2.0.conv1"]
    assert float(l1[removed].max()) <= float(l1[~removed].min())
    bn = pruned.mask.tensors
    assert torch.equal(bn["layer2.0.bn1.weight"], ~removed)
    assert torch.equal(bn["layer2.0.bn1.bias"], ~removed)


def test_at_a_ratio_that_would_empty_layers_each_keeps_its_best_unit():
    model = trained_like("resnet18")
    pruned = criteria.get("magnitude").prune(_request(model, "resnet18", 0.999, "global"))
    for layer, removed in pruned.units_removed.items():
        assert int((~removed).sum()) == 1, layer


@pytest.mark.parametrize("arch, size", [("resnet18", 32), ("alexnet", 64)])
def test_the_export_of_unit_pruned_models_is_smaller_and_exact(arch, size):
    model = trained_like(arch)
    pruned = criteria.get("magnitude").prune(_request(model, arch, 0.6, "global"))
    pruned.mask.apply(model)
    export = slim(model, arch, pruned.mask.tensors)
    diff, scale = max_diff(model, export.model, size)
    assert diff <= TOL * max(1.0, scale), (diff, scale)
    summary = export.summary()
    assert summary["units_sliced"] == pruned.metrics["prune/units_removed"] > 0
    assert summary["params_export"] < summary["params_dense"]


def test_include_narrows_the_unit_layers_and_one_matching_none_is_refused():
    model = build_model("alexnet", None)
    pruned = criteria.get("magnitude").prune(
        _request(model, "alexnet", 0.5, include=["classifier.*"])
    )
    assert set(pruned.units_removed) == {"classifier.1", "classifier.4"}
    with pytest.raises(ValueError, match="matches none of the unit layers"):
        criteria.get("magnitude").prune(_request(model, "alexnet", 0.5, include=["nothing"]))
