"""prune.score_at=pretrained: the criterion scores theta0, and the masked theta0 is what trains
(pruning before fine-tuning, paper A's future work (d)); the dense model still trains, and the
per-layer profile (prune/sparsity/<layer>) and layer-collapse count are written."""

from __future__ import annotations

import pytest
import torch

from fer_lottery.config import validate
from fer_lottery.core.errors import ConfigError
from fer_lottery.models import build_model, prunable_weights
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask import Mask
from fer_lottery.store.dense_cache import read_state


def _theta0(tmp_path):
    (entry,) = [p for p in (tmp_path / "cache" / "dense").iterdir() if p.is_dir()]
    return read_state(entry / "theta0.pt")


def test_pretrained_scores_mask_theta0_and_finetuned_the_dense_model(run_job, tmp_path):
    common = ("prune.ratio=0.8", "retrain.epochs=1", "retrain.rewind=pretrained")
    before, before_dir = run_job("before", *common, "prune.score_at=pretrained")
    after, after_dir = run_job("after", *common)
    assert before["dense/cache"] == "miss" and after["dense/cache"] == "hit"  # one dense model
    assert before["dense/test/acc"] == after["dense/test/acc"]
    model = build_model("resnet18", None)
    model.load_state_dict(_theta0(tmp_path))
    names = prunable_weights(model)
    expected = magnitude_mask(model, names, 0.8, "global")
    got = Mask.load(before_dir / "mask.pt")
    assert all(torch.equal(got.tensors[n], expected.tensors[n]) for n in names)
    other = Mask.load(after_dir / "mask.pt")
    assert any(not torch.equal(other.tensors[n], expected.tensors[n]) for n in names)
    assert before["prune/rewind_check"] == "ok"
    # The per-layer profile: one key per prunable layer, which weighted give the total.
    state = model.state_dict()
    layers = {n.removesuffix(".weight"): state[n].numel() for n in names}
    profile = {k: before[f"prune/sparsity/{k}"] for k in layers}
    total = sum(profile[k] * layers[k] for k in layers) / sum(layers.values())
    assert total == pytest.approx(before["prune/sparsity"], abs=1e-9)
    assert len({round(v, 3) for v in profile.values()}) > 1  # global: layers differ
    near = sum(1 - v < 0.01 for v in profile.values())
    assert before["prune/layers_near_collapse"] == near


def test_gradient_scores_theta0_too(run_job):
    results, _ = run_job(
        "snip",
        "prune.method=gradient",
        "prune.ratio=0.8",
        "retrain.epochs=1",
        "retrain.rewind=pretrained",
        "prune.score_at=pretrained",
        "prune.min_layer_density=0.5",
    )
    assert results["prune/sparsity"] == pytest.approx(0.8, abs=1e-4)
    profile = [v for k, v in results.items() if k.startswith("prune/sparsity/")]
    assert results["prune/layers_near_collapse"] == sum(1 - v < 0.5 for v in profile) > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["retrain.rewind=epoch"], "prune.score_at=pretrained prunes before fine-tuning"),
        (["retrain.rewind=none"], "use retrain.rewind=pretrained"),
        (["retrain.rewind=pretrained", "prune.iterations=3"], "pruning before fine-tuning is one"),
        (["retrain.rewind=pretrained", "prune.method=distinctiveness"], "only magnitude, gradient"),
    ],
)
def test_combinations_that_make_no_sense_are_refused(compose_cfg, overrides, message):
    cfg = compose_cfg("prune.ratio=0.5", "prune.score_at=pretrained", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_min_layer_density_is_a_fraction(compose_cfg):
    with pytest.raises(ConfigError, match="prune.min_layer_density=2"):
        validate(compose_cfg("prune.min_layer_density=2"))
