"""Structured export: slimmed models compute what the masked ones compute, load without
fer_lottery, and a real run's final weights are found and exported."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fer_lottery.export.loader as loader_module
from fer_lottery.export.__main__ import main as export_main
from fer_lottery.export.run import ExportError, masked_model
from fer_lottery.export.slim import slim
from fer_lottery.models import build_model
from fer_lottery.pruning.distinctiveness import distinctiveness_prune
from fer_lottery.pruning.mask import Mask
from fer_lottery.store.weights import run_weights, run_weights_path, save_weights

TOL = 1e-5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def trained_like(arch: str, seed: int = 0) -> torch.nn.Module:
    """A random-init torchvision model with BN statistics and a head scale like a trained one.

    Fresh BN layers (mean 0, var 1, gamma 1, beta 0) would hide a slicing error in the running
    statistics and make every paper-rule constant output 0; logits of order 1 make the 1e-5
    tolerance mean something.
    """
    torch.manual_seed(seed)
    g = gen(seed)
    model = build_model(arch, None).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
            m.bias.copy_(0.2 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1 + torch.rand(n, generator=g))
    if arch == "alexnet":
        model.classifier[1].bias += 0.2  # keep fc6 units active (see test_distinctiveness)
        model.classifier[6].weight *= 30
    return model


def pruned(arch: str, size: int, variant: str, layers=None, angle: float = 60.0):
    """A model pruned by distinctiveness on random batches, mask applied, and its result."""
    model = trained_like(arch)
    x = torch.randn(32, 3, size, size, generator=gen(1))
    result = distinctiveness_prune(
        model, arch, [x[:16], x[16:]], angle, variant=variant, layers=layers
    )
    result.mask.apply(model)
    return model, result


@torch.no_grad()
def max_diff(a: torch.nn.Module, b: torch.nn.Module, size: int) -> tuple[float, float]:
    """Max abs difference of two models' eval outputs on a random batch, and the output scale."""
    x = torch.randn(8, 3, size, size, generator=gen(2))
    ya, yb = a.eval()(x), b.eval()(x)
    return float((ya - yb).abs().max()), float(ya.abs().max())


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_honest_export_is_exact_and_slimmer():
    model, result = pruned("resnet18", 32, "honest")
    export = slim(model, "resnet18", result.mask.tensors)
    diff, scale = max_diff(model, export.model, 32)
    assert scale > 0.1 and diff <= TOL
    s = export.summary()
    removed = sum(result.units_removed.values())
    assert removed > 0 and s["units_sliced"] == removed and s["units_kept_constant"] == 0
    for name, n in result.units_removed.items():
        block = export.model.get_submodule(name.removesuffix(".conv1"))
        assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels
        assert block.conv1.out_channels == export.arch["widths"][name] == s["layers"][name]["width"]
        assert export.arch["widths"][name] == export.arch["dense_widths"][name] - n
    assert s["params_export"] == params(export.model) < params(model) == s["params_dense"]


def test_alexnet_honest_export_is_exact_across_conv5_to_fc6():
    model, result = pruned("alexnet", 64, "honest")
    export = slim(model, "alexnet", result.mask.tensors)
    diff, scale = max_diff(model, export.model, 64)
    assert scale > 0.1 and diff <= TOL
    conv5 = export.arch["widths"]["features.10"]
    assert conv5 < 256 and result.units_removed["features.10"] == 256 - conv5
    assert export.model.classifier[1].in_features == 36 * conv5  # 6x6 columns per channel
    assert export.model.classifier[4].in_features == export.arch["widths"]["classifier.1"]
    assert params(export.model) < params(model)


def test_alexnet_paper_b_fc7_folds_the_live_bias_of_removed_units_into_fc8():
    model, result = pruned("alexnet", 64, "paper_b", layers=["classifier.4"], angle=30.0)
    export = slim(model, "alexnet", result.mask.tensors)
    diff, scale = max_diff(model, export.model, 64)
    assert scale > 0.1 and diff <= TOL
    s = export.summary()
    revived = result.units_revived["classifier.4"]
    assert s["units_sliced"] == result.units_removed["classifier.4"] - revived
    assert export.arch["widths"] == {
        **export.arch["dense_widths"],
        "classifier.4": 4096 - s["units_sliced"],
    }
    assert s["units_folded"] > 0
    # Without the fold the removed units' ReLU(bias) would be lost: far beyond the tolerance.
    with torch.no_grad():
        export.model.classifier[6].bias.copy_(model.classifier[6].bias)
    assert max_diff(model, export.model, 64)[0] > 100 * TOL


@pytest.mark.parametrize("variant", ["paper_a", "paper_b"])
def test_paper_rules_on_resnet_keep_units_whose_constant_output_feeds_a_conv(variant):
    model, result = pruned("resnet18", 32, variant)
    export = slim(model, "resnet18", result.mask.tensors)
    diff, scale = max_diff(model, export.model, 32)
    assert scale > 0.1 and diff <= TOL
    s = export.summary()
    assert s["units_kept_constant"] > 0 and s["units_sliced"] > 0 and s["units_folded"] == 0
    assert s["units_kept_constant"] + s["units_sliced"] == s["units_masked"]
    if variant == "paper_a":  # residual convs and logits lose rows that cannot be sliced
        assert export.unsliceable["layer1.0.conv2"] == result.units_removed["layer1.0.conv2"]
        assert export.model.layer1[0].conv2.out_channels == 64
    # The kept units matter: treating their output as 0 (slicing them) would not be exact.
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name, keep in result.mask.tensors.items():
            if name.startswith("layer") and name.endswith(".conv1.weight"):
                bn = zeroed.get_submodule(name.removesuffix("conv1.weight") + "bn1")
                rows = ~keep.flatten(1).any(1)
                bn.weight[rows] = 0
                bn.bias[rows] = 0
    assert max_diff(model, zeroed, 32)[0] > 100 * TOL


def test_alexnet_paper_a_folds_conv5_into_fc6_keeps_convs_and_logits():
    model, result = pruned("alexnet", 64, "paper_a", angle=30.0)
    export = slim(model, "alexnet", result.mask.tensors)
    diff, scale = max_diff(model, export.model, 64)
    assert scale > 0.1 and diff <= TOL
    layers = {x.name: x for x in export.layers}
    assert layers["features.10"].folded > 0  # a constant conv5 map meets 36 fc6 columns each
    assert sum(layers[f"features.{i}"].kept_constant for i in (0, 3, 6, 8)) > 0
    assert export.unsliceable == {"classifier.6": result.units_removed["classifier.6"]}
    assert export.model.classifier[6].out_features == 7


def test_a_layer_masked_whole_keeps_one_unit_and_folds_the_rest():
    model = trained_like("alexnet")
    keep = torch.ones_like(model.classifier[4].weight, dtype=torch.bool)
    keep[:] = False  # every fc7 row, as the paper rules mask: bias left alive
    mask = Mask({"classifier.4.weight": keep})
    mask.apply(model)
    export = slim(model, "alexnet", mask.tensors)
    diff, scale = max_diff(model, export.model, 64)
    assert scale > 0.1 and diff <= TOL
    s = export.summary()
    assert export.arch["widths"]["classifier.4"] == 1 and s["units_kept_last"] == 1
    assert s["units_folded"] == int((model.classifier[4].bias[1:] > 0).sum()) > 0


# -- a run folder ---------------------------------------------------------------------------------


def fake_run(root: Path, method: str = "distinctiveness", ratio: float = 0.0) -> Path:
    root.mkdir()
    prune = {"method": method, "ratio": ratio}
    config = {"model": {"name": "resnet18", "num_classes": 7}, "prune": prune}
    (root / "results.json").write_text(json.dumps({"config": config}))
    return root


def _with_dense_entry(run, cache):
    """Let the fake run name a dense cache entry that holds a best.pt, as a real job does."""
    entry = cache / "dense" / "abc"
    entry.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.tensor(2.0)}, entry / "best.pt")
    results = json.loads((run / "results.json").read_text())
    results["config"]["cache_dir"] = str(cache)
    results["dense/cache_key"] = "abc"
    (run / "results.json").write_text(json.dumps(results))
    return entry / "best.pt"


def test_final_weights_are_weights_pt_or_a_dense_only_jobs_cache_entry(tmp_path):
    # A pruned job's final weights are its weights.pt, never the dense model's.
    run = fake_run(tmp_path / "run")
    _with_dense_entry(run, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="a pruned job without its weights.pt"):
        run_weights_path(run)
    with pytest.raises(ExportError, match="no final weights"):
        masked_model(run)
    save_weights(run / "weights.pt", {"w": torch.tensor(-1.0)})
    assert run_weights(run) == {"w": torch.tensor(-1.0)}
    # A dense-only job's weights are its dense cache entry's best.pt, as results.json names it.
    dense = fake_run(tmp_path / "dense", "none")
    with pytest.raises(FileNotFoundError, match="no dense cache entry"):
        run_weights_path(dense)
    best = _with_dense_entry(dense, tmp_path / "cache")
    assert run_weights_path(dense) == best
    assert run_weights(dense) == {"w": torch.tensor(2.0)}


def test_export_refuses_runs_it_cannot_slim(tmp_path, capsys):
    assert export_main([str(fake_run(tmp_path / "magnitude", "magnitude", 0.5))]) == 2
    assert "only distinctiveness pruning and prune.granularity=unit" in capsys.readouterr().err
    # A dense-only run never pruned: said so, not refused as if magnitude pruning had run.
    assert export_main([str(fake_run(tmp_path / "dense", "magnitude", 0.0))]) == 2
    err = capsys.readouterr().err
    assert "a dense run (prune.method=magnitude, prune.ratio=0.0), never pruned" in err
    assert "only distinctiveness" not in err
    assert export_main([str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


STANDALONE = """
import json, sys, importlib.util, torch
spec = importlib.util.spec_from_file_location("exported_loader", sys.argv[1])
loader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loader)
model = loader.load_exported(sys.argv[2])
with torch.no_grad():
    y = model(torch.load(sys.argv[3]))
torch.save(y, sys.argv[4])
heavy = ("fer_lottery", "pytorch_lightning", "lightning", "hydra", "omegaconf", "torchmetrics")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


RUNS = {
    "distinctiveness_imp": (
        "prune.method=distinctiveness",
        "prune.distinctiveness.angle=45",
        "prune.iterations=2",
    ),
    "unit_magnitude_rewind": (
        "prune.granularity=unit",
        "prune.ratio=0.5",
        "retrain.rewind=pretrained",
        "model=alexnet",
        "data.image_size=64",
    ),
}


@pytest.mark.parametrize("kind", list(RUNS))
def test_cli_exports_a_real_run_that_loads_with_torch_and_torchvision_alone(
    run_job, tmp_path, kind
):
    results, run_dir = run_job("run", *RUNS[kind], "retrain.epochs=1", "trainer.max_epochs=1")
    size = 64 if "model=alexnet" in RUNS[kind] else 32
    assert run_weights_path(run_dir).name == "weights.pt"  # the last round's best, sparse
    out = tmp_path / "slim.pt"
    assert export_main([str(run_dir), "--out", str(out)]) == 0
    model, arch, _ = masked_model(run_dir)
    dense_file = tmp_path / "dense.pt"
    torch.save(model.state_dict(), dense_file)
    assert out.stat().st_size < dense_file.stat().st_size
    saved = torch.load(out, weights_only=True)
    assert saved["summary"]["units_sliced"] == results["prune/units_removed"] > 0
    assert saved["summary"]["params_export"] < results["params/total"]

    x = torch.randn(8, 3, size, size, generator=gen(3))
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(STANDALONE),
            loader_module.__file__,
            str(out),
            str(tmp_path / "x.pt"),
            str(tmp_path / "y.pt"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    with torch.no_grad():
        expected = model(x)
    assert float((torch.load(tmp_path / "y.pt") - expected).abs().max()) <= TOL
