"""Distinctiveness pruning: exact merges of duplicate units, masking, pairing rules, variants."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from fer_lottery.core.errors import ConfigError
from fer_lottery.models import build_model
from fer_lottery.pruning import distinctiveness as dist
from fer_lottery.pruning.distinctiveness import (
    distinctiveness_prune,
    honest,
    pair_units,
    paper_a,
    paper_b,
    prunable_units,
    unit_activations,
)
from fer_lottery.pruning.distinctiveness.angles import gram_rows


@pytest.fixture(scope="module")
def alexnet_base():
    torch.manual_seed(0)
    model = build_model("alexnet", None).eval()
    # Random-init fc6 units are sparse; units that fire on one image only are parallel after any
    # scale-free normalisation. A bias shift keeps every fc6 unit active, so only planted
    # duplicates are parallel.
    with torch.no_grad():
        model.classifier[1].bias += 0.2
    return model


@pytest.fixture
def alexnet(alexnet_base):
    return copy.deepcopy(alexnet_base)


@pytest.fixture(scope="module")
def resnet_base():
    torch.manual_seed(1)
    return build_model("resnet18", None).eval()


@pytest.fixture
def resnet(resnet_base):
    return copy.deepcopy(resnet_base)


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def busiest_units(model, arch: str, layer: str, x: torch.Tensor, k: int = 2) -> list[int]:
    """The k units of ``layer`` whose activations vary most (certainly not dead)."""
    unit = next(u for u in prunable_units(model, arch) if u.name == layer)
    acts = unit_activations(model, [unit], [x])[layer]
    return acts.std(0).topk(k).indices.tolist()


def dead_rows(keep: torch.Tensor) -> torch.Tensor:
    """Output units whose whole incoming row / filter is masked."""
    return ~keep.reshape(keep.shape[0], -1).any(1)


# -- exact merges of duplicates ------------------------------------------------------------------


def test_duplicate_fc6_units_merge_and_output_is_unchanged(alexnet):
    x = images(24, 64)
    i, j = 3, 17
    fc6, fc7 = alexnet.classifier[1], alexnet.classifier[4]
    with torch.no_grad():
        fc6.weight[j] = fc6.weight[i]
        fc6.bias[j] = fc6.bias[i]
        before = alexnet(x)
    old_out = fc7.weight.detach().clone()

    result = distinctiveness_prune(
        alexnet, "alexnet", [x[:10], x[10:]], angle=1.0, layers=["classifier.1"]
    )
    assert result.units_removed == {"classifier.1": 1}
    assert result.similar_pairs == 1 and result.complementary_pairs == 0
    keep = result.mask.tensors
    assert not keep["classifier.1.weight"][j].any() and not keep["classifier.1.bias"][j]
    assert not keep["classifier.4.weight"][:, j].any()
    assert keep["classifier.1.weight"][i].all() and keep["classifier.4.weight"][:, i].all()
    # merged before the mask is applied: i's outgoing column now carries j's too
    torch.testing.assert_close(fc7.weight[:, i], old_out[:, i] + old_out[:, j])

    result.mask.apply(alexnet)
    with torch.no_grad():
        after = alexnet(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_duplicate_resnet_channel_merges_through_conv2_and_masks_bn(resnet):
    x = images(16, 32)
    block = resnet.layer1[1]
    i, j = busiest_units(resnet, "resnet18", "layer1.1.conv1", x)
    with torch.no_grad():
        block.conv1.weight[j] = block.conv1.weight[i]
        for t in ("weight", "bias", "running_mean", "running_var"):
            getattr(block.bn1, t)[j] = getattr(block.bn1, t)[i]
        before = resnet(x)

    result = distinctiveness_prune(resnet, "resnet18", [x], angle=1.0, layers=["layer1.1.conv1"])
    assert result.units_removed == {"layer1.1.conv1": 1}
    keep = result.mask.tensors
    gone = max(i, j)  # the pair's higher index goes
    assert dead_rows(keep["layer1.1.conv1.weight"]).nonzero().flatten().tolist() == [gone]
    assert not keep["layer1.1.bn1.weight"][gone] and not keep["layer1.1.bn1.bias"][gone]
    assert keep["layer1.1.bn1.weight"].sum() == 63
    assert not keep["layer1.1.conv2.weight"][:, gone].any()
    assert keep["layer1.1.conv2.weight"].sum() == keep["layer1.1.conv2.weight"].numel() - 64 * 9

    result.mask.apply(resnet)
    with torch.no_grad():
        after = resnet(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_duplicate_conv5_channel_merges_into_its_36_fc6_columns(alexnet):
    x = images(24, 64, seed=1)
    i, j = busiest_units(alexnet, "alexnet", "features.10", x)
    conv5, fc6 = alexnet.features[10], alexnet.classifier[1]
    with torch.no_grad():
        conv5.weight[j] = conv5.weight[i]
        conv5.bias[j] = conv5.bias[i]
        before = alexnet(x)
    old = fc6.weight.detach().clone()

    result = distinctiveness_prune(alexnet, "alexnet", [x], angle=1.0, layers=["features.10"])
    assert result.units_removed == {"features.10": 1}
    keep = result.mask.tensors
    gone, kept = max(i, j), min(i, j)
    assert dead_rows(keep["features.10.weight"]).nonzero().flatten().tolist() == [gone]
    cols = keep["classifier.1.weight"]
    assert not cols[:, gone * 36 : (gone + 1) * 36].any()
    assert cols.sum() == cols.numel() - 36 * 4096
    block = slice(kept * 36, (kept + 1) * 36)
    other = slice(gone * 36, (gone + 1) * 36)
    torch.testing.assert_close(fc6.weight[:, block], old[:, block] + old[:, other])

    result.mask.apply(alexnet)
    with torch.no_grad():
        after = alexnet(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


# -- complementary pairs and variants ------------------------------------------------------------


def plant_complementary_fc6(model, i: int, j: int) -> None:
    """fc6 units i and j with pre-activations 1 + s and 1 - s, |s| < 1: both always active, so
    a_i + a_j = 2 on every image: anti-parallel once centred, nearly parallel when raw."""
    fc6 = model.classifier[1]
    with torch.no_grad():
        fc6.weight[i] *= 0.5
        fc6.weight[j] = -fc6.weight[i]
        fc6.bias[i] = fc6.bias[j] = 1.0


@pytest.mark.parametrize("normalize", ["center", "minmax"])
def test_complementary_pairs_fire_only_on_centred_activations(alexnet_base, normalize):
    x = images(24, 64, seed=2)
    i, j = 5, 9
    model = copy.deepcopy(alexnet_base)
    plant_complementary_fc6(model, i, j)
    old_out = model.classifier[4].weight.detach().clone()
    result = distinctiveness_prune(
        model,
        "alexnet",
        [x],
        angle=5.0,
        complementary=True,
        normalize=normalize,
        layers=["classifier.1"],
    )
    pairing = result.pairings["classifier.1"]
    assert result.complementary_pairs >= 1
    assert pairing.removed[i] and pairing.removed[j]
    assert pairing.into[i] == -1 and pairing.into[j] == -1  # removed, not merged
    # nothing was added to the removed pair's columns
    torch.testing.assert_close(model.classifier[4].weight[:, [i, j]], old_out[:, [i, j]])

    # without the option the same pair stays
    model = copy.deepcopy(alexnet_base)
    plant_complementary_fc6(model, i, j)
    result = distinctiveness_prune(
        model, "alexnet", [x], angle=5.0, normalize=normalize, layers=["classifier.1"]
    )
    assert result.complementary_pairs == 0
    assert not result.pairings["classifier.1"].removed[[i, j]].any()


def test_paper_a_merges_the_lower_index_into_the_higher_on_raw_outputs():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(50, generator=g) * 0.2 - 0.1
    # 1 + t and 1 - t: opposite once centred, a few degrees apart raw
    acts = torch.stack([1 + t, *torch.rand(2, 50, generator=g), 1 - t], dim=1)

    pairing = pair_units(acts, 15.0, variant="paper_a", complementary=True, normalize="center")
    assert pairing.complementary_pairs == 0
    assert pairing.removed.nonzero().flatten().tolist() == [0]  # the lower index goes
    assert pairing.into[0] == 3

    honest = pair_units(acts, 15.0, complementary=True, normalize="center")
    assert honest.complementary_pairs == 1 and honest.removed[[0, 3]].all()


def test_paper_b_merges_a_complementary_pair_instead_of_removing_both():
    t = torch.rand(50, generator=torch.Generator().manual_seed(0))
    other = torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    # global min 0 and max 1 over the matrix, so the whole-matrix min-max centres t and 1 - t
    acts = torch.cat([t[:, None], (1 - t)[:, None], other], dim=1)
    acts[0, 0], acts[0, 1] = 0.0, 1.0

    pairing = pair_units(acts, 10.0, variant="paper_b")
    assert pairing.complementary_pairs == 1
    assert pairing.removed.nonzero().flatten().tolist() == [1]
    assert pairing.into[1] == 0  # the second vector's weights are added to the first

    honest = pair_units(acts, 10.0, complementary=True, normalize="minmax")
    assert honest.complementary_pairs == 1
    assert honest.removed[:2].all() and (honest.into[:2] == -1).all()

    # the weight-level consequence: unit 1's incoming weights are added to unit 0's
    w = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    merged = w.clone()
    paper_b.merge(merged, pairing)
    torch.testing.assert_close(merged[0], w[0] + w[1])
    assert not merged[1].any()
    torch.testing.assert_close(merged[2:], w[2:])


def test_paper_b_on_alexnet_merges_a_complementary_pair_into_an_fc7_row(alexnet):
    x = images(2, 64, seed=3)
    units = {u.name: u for u in prunable_units(alexnet, "alexnet")}
    acts = unit_activations(alexnet, [units["classifier.1"], units["classifier.4"]], [x])
    h1, h2 = acts["classifier.1"]  # fc7's input for the two images
    top = 10 * float(acts["classifier.4"].max())
    fc7 = alexnet.classifier[4]
    with torch.no_grad():  # unit 0 outputs (0, top), unit 1 outputs (top, 0): opposite
        w = (h2 - h1) * top / (h2 - h1).square().sum()
        fc7.weight[0], fc7.bias[0] = w, -(w @ h1)
        fc7.weight[1], fc7.bias[1] = -w, top + (w @ h1)
    before = {n: t.clone() for n, t in alexnet.state_dict().items()}

    result = distinctiveness_prune(
        alexnet, "alexnet", [x], angle=10.0, variant="paper_b", layers=["classifier.4"]
    )
    pairing = result.pairings["classifier.4"]
    assert result.complementary_pairs == 1  # the planted pair; the rest sit near 90 degrees
    assert pairing.removed[1] and not pairing.removed[0] and pairing.into[1] == 0
    old = before["classifier.4.weight"]
    torch.testing.assert_close(fc7.weight[0], old[0] + old[1])
    assert not fc7.weight[1].any() and not result.mask.tensors["classifier.4.weight"][1].any()
    # fc8 and every bias are untouched, and only fc7's weight is masked
    for name, tensor in alexnet.state_dict().items():
        if name != "classifier.4.weight":
            assert torch.equal(tensor, before[name]), name
    assert set(result.mask.tensors) == {"classifier.4.weight"}


def test_norm_std_filter_restricts_the_compared_units():
    g = torch.Generator().manual_seed(3)
    acts = torch.rand(40, 30, generator=g)
    acts[:, :3] *= 10  # three outliers by norm
    p = pair_units(acts, 30.0, norm_std=1.0)
    assert p.compared.nonzero().flatten().tolist() == [0, 1, 2]
    assert set(p.removed.nonzero().flatten().tolist()) <= {0, 1, 2}


# -- invariants ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
@pytest.mark.parametrize("complementary", [False, True])
def test_honest_layers_keep_a_unit_logits_untouched_counts_match(
    arch, complementary, alexnet_base, resnet_base
):
    model = copy.deepcopy(alexnet_base if arch == "alexnet" else resnet_base)
    x = images(12, 64 if arch == "alexnet" else 32, seed=4)
    head = "classifier.6" if arch == "alexnet" else "fc"
    old_head = model.get_submodule(head).weight.detach().clone()
    old_head_bias = model.get_submodule(head).bias.detach().clone()

    result = distinctiveness_prune(
        model,
        arch,
        [x],
        angle=90.0,
        complementary=complementary,
        normalize="center",
    )
    keep = result.mask.tensors
    assert f"{head}.bias" not in keep
    torch.testing.assert_close(model.get_submodule(head).bias, old_head_bias, rtol=0, atol=0)
    if f"{head}.weight" in keep:  # AlexNet: fc7's merges land in fc8's columns, rows stay
        cols = keep[f"{head}.weight"]
        assert (cols == cols[:1]).all()
        pairing = result.pairings["classifier.4"]
        expected = old_head.clone()
        for j in (pairing.into >= 0).nonzero().flatten().tolist():
            expected[:, pairing.into[j]] += old_head[:, j]
        torch.testing.assert_close(model.get_submodule(head).weight, expected)
    else:
        torch.testing.assert_close(model.get_submodule(head).weight, old_head, rtol=0, atol=0)

    removed_total = 0
    for unit in prunable_units(model, arch):
        pairing = result.pairings[unit.name]
        rows = dead_rows(keep[f"{unit.name}.weight"])
        assert rows.sum() == result.units_removed[unit.name] == pairing.removed.sum()
        assert torch.equal(rows, pairing.removed)
        assert result.units_removed[unit.name] < result.units_total[unit.name]
        if pairing.compared.any():
            assert (pairing.compared & ~pairing.removed).any()  # a compared unit survives
        assert not (pairing.removed & pairing.flagged).any()
        removed_total += int(pairing.removed.sum())
        if not complementary:
            targets = pairing.into[pairing.into >= 0]
            assert not pairing.removed[targets].any()  # nothing merges into a removed unit
    assert removed_total == result.similar_pairs + 2 * result.complementary_pairs


@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
@pytest.mark.parametrize("variant", ["paper_a", "paper_b"])
def test_paper_rules_move_rows_within_a_layer_and_touch_nothing_else(
    arch, variant, alexnet_base, resnet_base
):
    model = copy.deepcopy(alexnet_base if arch == "alexnet" else resnet_base)
    x = images(12, 64 if arch == "alexnet" else 32, seed=4)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    rule = paper_a if variant == "paper_a" else paper_b
    result = distinctiveness_prune(model, arch, [x], angle=30.0, variant=variant)

    if variant == "paper_a":  # every Conv2d and Linear, the logits layer included
        layers = paper_a.layers(model)
        assert "fc" in layers or "classifier.6" in layers
    else:
        layers = [u.name for u in prunable_units(model, arch)]
    assert list(result.pairings) == layers
    assert set(result.mask.tensors) == {f"{n}.weight" for n in layers}
    assert sum(result.units_removed.values()) > 0
    removed_total = 0
    for name, tensor in model.state_dict().items():
        layer = name.removesuffix(".weight")
        if layer not in result.pairings:  # biases, BN, buffers, other layers: untouched
            assert torch.equal(tensor, before[name]), name
            continue
        pairing = result.pairings[layer]
        new, old = tensor.flatten(1).double(), before[name].flatten(1).double()
        # rows only move within the layer: every input's total weight is kept
        torch.testing.assert_close(new.sum(0), old.sum(0), rtol=1e-5, atol=1e-4)
        zeroed = rule.zeroed(pairing)
        assert not new[zeroed].any()
        assert torch.equal(dead_rows(result.mask.tensors[name]), zeroed)
        assert result.units_removed[layer] == int(pairing.removed.sum())
        # paper A removes the lower index of a pair, paper B the higher one
        assert not pairing.removed[-1 if variant == "paper_a" else 0]
        if variant == "paper_b":  # revived rows hold another unit's weights
            assert torch.equal(pairing.removed & ~zeroed, pairing.revived)
            assert new[pairing.revived].any(1).all()
            assert result.units_revived[layer] == int(pairing.revived.sum())
        removed_total += int(pairing.removed.sum())
    assert removed_total == result.similar_pairs + result.complementary_pairs


def test_train_eval_modes_are_restored(resnet):
    resnet.train()
    resnet.layer1.eval()  # e.g. a frozen group with BN kept in eval
    distinctiveness_prune(resnet, "resnet18", [images(4, 32)], angle=5.0)
    assert resnet.training and resnet.layer2.training
    assert not resnet.layer1.training and not resnet.layer1[0].bn1.training


def test_bad_settings_fail_with_the_key_named(resnet):
    x = [images(4, 32)]
    with pytest.raises(ConfigError, match="prune.distinctiveness.angle"):
        distinctiveness_prune(resnet, "resnet18", x, angle=120.0)
    with pytest.raises(ConfigError, match="prune.distinctiveness.variant"):
        distinctiveness_prune(resnet, "resnet18", x, angle=5.0, variant="paper_c")
    with pytest.raises(ConfigError, match="layer9"):
        distinctiveness_prune(resnet, "resnet18", x, angle=5.0, layers=["layer9.0.conv1"])


# -- pairing against a brute-force reference -----------------------------------------------------


def structured_acts(n: int, units: int, rank: int, noise: float, seed: int) -> torch.Tensor:
    """ReLU of a low-rank signal: many near-parallel units; a shifted, negated half gives
    anti-parallel ones; a few dead units."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, rank, generator=g) @ torch.randn(rank, units, generator=g)
    x += noise * torch.randn(n, units, generator=g)
    half = units // 3
    x[:, half : 2 * half] = 3.0 - x[:, :half] + 0.2 * torch.randn(n, half, generator=g)
    acts = torch.relu(x)
    acts[:, -2:] = 0.0
    return acts


def brute_force(acts, angle, complementary, normalize, norm_std):
    """The honest rule as a plain loop over pairs, on the module's own normalised Gram matrix."""
    z, flagged = honest.normalise(acts, normalize)
    compared = ~flagged
    if norm_std is not None:
        compared &= honest.norm_filter(acts, norm_std)
    idx = compared.nonzero().flatten().tolist()
    gram = gram_rows(z[:, idx], 0, len(idx)).numpy()
    c = np.float32(math.cos(math.radians(angle)))
    w = torch.randn(4, acts.shape[1], dtype=torch.float64, generator=torch.Generator())
    out = w.clone()
    gone = [False] * len(idx)
    pairs = sorted(
        (-abs(gram[j, i]), i, j)
        for j in range(len(idx))
        for i in range(j)
        if gram[j, i] > c or (complementary and gram[j, i] < -c)
    )
    left = len(idx)
    for _, i, j in pairs:
        if gone[i] or gone[j]:
            continue
        if gram[j, i] < 0:
            if left >= 3:
                gone[i] = gone[j] = True
                left -= 2
        else:
            out[:, idx[i]] += out[:, idx[j]]
            gone[j] = True
            left -= 1
    removed = {idx[k] for k, g in enumerate(gone) if g}
    for r in removed:
        out[:, r] = 0.0
    return w, out, removed


CASES = [
    ("minmax", False, None),
    ("minmax", True, None),
    ("center", True, None),
    ("center", True, 0.5),
]


@pytest.mark.parametrize(("normalize", "complementary", "norm_std"), CASES)
@pytest.mark.parametrize("angle", [5.0, 25.0, 90.0])
def test_honest_pairing_matches_brute_force(normalize, complementary, norm_std, angle, monkeypatch):
    # tiny sorted blocks, so the block-by-block path runs as it does for millions of pairs
    monkeypatch.setattr(honest, "BLOCK_PER_UNIT", 1)
    monkeypatch.setattr(honest, "BLOCK_MIN", 4)
    for seed, rank in [(0, 1), (1, 3), (2, 12)]:
        acts = structured_acts(30, 45, rank, 0.3, seed)
        w, expected, removed = brute_force(acts, angle, complementary, normalize, norm_std)
        for chunk in (7, 1024):
            p = pair_units(
                acts,
                angle,
                complementary=complementary,
                normalize=normalize,
                norm_std=norm_std,
                chunk=chunk,
            )
            assert set(p.removed.nonzero().flatten().tolist()) == removed
            got = w.clone()
            src = (p.into >= 0).nonzero().flatten()
            got.index_add_(1, p.into[src], w[:, src])
            got[:, p.removed] = 0.0
            torch.testing.assert_close(got, expected)


def test_angle_step_at_4096_units():
    """Functional check of the fc7-sized angle step (timing is reported, not asserted)."""
    acts = structured_acts(500, 4096, 2, 0.3, seed=5)
    for angle in (5.0, 30.0):
        plain = pair_units(acts, angle)
        both = pair_units(acts, angle, complementary=True)
        for p in (plain, both):
            assert p.removed.sum() == p.similar_pairs + 2 * p.complementary_pairs
            assert (p.compared & ~p.removed).any()
        targets = plain.into[plain.into >= 0]
        assert not plain.removed[targets].any()
        if both.complementary_pairs == 0:
            assert torch.equal(both.removed, plain.removed) and torch.equal(both.into, plain.into)
    assert plain.similar_pairs > 1000 and both.complementary_pairs > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_angles_are_degrees_between_columns(dtype):
    """The whole matrix: every pair of columns, symmetric, zero on the diagonal."""
    atol = 1e-3 if dtype == torch.float32 else 1e-6
    # acos is ill-conditioned at 1: a rounding error e in a unit's dot product with itself gives
    # about sqrt(2e) rad, 0.02 deg in float32 (1e-6 deg in float64).
    diag_atol = 0.05 if dtype == torch.float32 else 1e-5
    known = torch.tensor([[1.0, 0.0, -1.0, 1.0], [0.0, 1.0, 0.0, 1.0]], dtype=dtype)
    known_angles = [
        [0.0, 90.0, 180.0, 45.0],
        [90.0, 0.0, 90.0, 45.0],
        [180.0, 90.0, 0.0, 135.0],
        [45.0, 45.0, 135.0, 0.0],
    ]
    # Random columns against numpy in float64: arccos of the normalized dot products.
    rand = np.random.default_rng(0).standard_normal((5, 7))
    rand /= np.linalg.norm(rand, axis=0)
    rand_angles = np.degrees(np.arccos(np.clip(rand.T @ rand, -1.0, 1.0)))
    for z, expected in (
        (known / known.norm(dim=0), torch.tensor(known_angles, dtype=dtype)),
        (torch.from_numpy(rand).to(dtype), torch.from_numpy(rand_angles).to(dtype)),
    ):
        angles = dist.pairwise_angles(z, chunk=3)  # rows in chunks: 4 = 3 + 1, 7 = 3 + 3 + 1
        assert angles.shape == expected.shape and angles.dtype == dtype
        off = ~torch.eye(len(expected), dtype=torch.bool)
        torch.testing.assert_close(angles[off], expected[off], atol=atol, rtol=0)
        torch.testing.assert_close(angles, angles.T, atol=atol, rtol=0)
        zeros = torch.zeros(len(expected), dtype=dtype)
        torch.testing.assert_close(angles.diagonal(), zeros, atol=diag_atol, rtol=0)
