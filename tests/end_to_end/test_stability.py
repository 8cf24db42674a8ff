"""stability.enabled=true (linear mode connectivity): two retrainings with the same SGD noise are
one model and a barrier of exactly 0; with other noise the barrier is above 0; the BatchNorm
statistics are recomputed on the training split at each point, and without that the midpoint
of a path whose every point computes the same function loses accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.models import build_model, freeze_layers
from fer_lottery.store.predictions import read_predictions
from fer_lottery.store.weights import run_weights
from fer_lottery.training.connectivity import (
    error_barrier,
    evaluate_path,
    interpolate,
    recompute_batchnorm,
)
from tests.helpers import TINY_SYNTHETIC, run_cli

STABLE = ("prune.method=magnitude", "prune.ratio=0.8", "stability.enabled=true")
# A size at which the model learns something, and two retrainings that differ only in their
# SGD noise end apart.
LEARNS = (
    "data.synthetic.per_class=40",
    "data.image_size=48",
    "data.batch_size=32",
    "optim=adam",
    "optim.lr=0.001",
    "trainer.max_epochs=8",
    "retrain.epochs=3",
    "retrain.rewind=pretrained",
)


@pytest.fixture(scope="module")
def learnt(tmp_path_factory):
    """One stability job at LEARNS, in-process: (results, run dir, config)."""
    from hydra import compose, initialize_config_dir

    from fer_lottery.config import CONF_DIR, register_configs
    from fer_lottery.experiment.runner import run_experiment

    tmp = tmp_path_factory.mktemp("stability")
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose(
            "config", overrides=["debug=tiny", f"cache_dir={tmp / 'cache'}", *STABLE, *LEARNS]
        )
    return run_experiment(cfg, tmp / "job"), tmp / "job", cfg


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_same_noise_gives_one_model_and_no_barrier(tmp_path):
    # Batches of 41: the last training batch holds one image, which training drops and the
    # BatchNorm recomputation leaves out too.
    run_cli(
        "debug=tiny",
        "data.batch_size=41",
        *STABLE,
        "seed=3",
        "stability.seed=3",
        "hydra.run.dir=a",
        cwd=tmp_path,
    )
    r = _results(tmp_path / "a")
    assert r["data/train_dropped_per_epoch"] == 1
    assert r["stability/seed_b"] == 3
    assert r["stability/identical_ends"] is True
    assert r["stability/b/test/acc"] == r["test/acc"]
    assert r["stability/b/val/acc_best"] == r["val/acc_best"]
    assert len(r["stability/alphas"]) == 11
    assert r["stability/alphas"][0] == 0 and r["stability/alphas"][-1] == 1
    for split in ("val", "test"):
        assert r[f"stability/{split}/barrier"] == 0.0
        assert len(set(r[f"stability/{split}/acc"])) == 1  # every point is the same model
    # The second retraining is a stage of its own, with its curves and predictions.
    assert (tmp_path / "a" / "csv" / "stability" / "metrics.csv").is_file()
    assert (tmp_path / "a" / "predictions_stability.csv").is_file()


def test_other_noise_gives_a_barrier(learnt):
    r, run_dir, _ = learnt
    assert r["stability/identical_ends"] is False
    assert r["stability/test/barrier"] > 0
    assert r["stability/test/barrier"] == pytest.approx(error_barrier(r["stability/test/acc"]))
    assert r["stability/bn_layers_recomputed"] == 20  # every BatchNorm of ResNet-18
    assert r["prune/sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert (run_dir / "csv" / "stability" / "metrics.csv").is_file()
    # The job's weights.pt is the first retraining's model, the one its test/acc describes.
    from fer_lottery.training.stage import evaluate

    cfg = learnt[2]
    dm = FaceDataModule(cfg.data, None, seed=cfg.seed, cache_dir=cfg.cache_dir)
    dm.setup()
    model = build_model("resnet18", None, 7)
    model.load_state_dict(run_weights(run_dir))
    assert evaluate(model, dm, "test", cfg) == pytest.approx(r["test/acc"], abs=1e-6)
    # The second retraining's scores are its own model's: its predictions give them, and they
    # are not the first model's (on 42 test images two models may still tie in accuracy).
    first = read_predictions(run_dir / "predictions_retrain.csv")["test"]
    second = read_predictions(run_dir / "predictions_stability.csv")["test"]
    assert second.correct.mean() == pytest.approx(r["stability/b/test/acc"], abs=1e-6)
    assert first.correct.mean() == pytest.approx(r["test/acc"], abs=1e-6)
    assert first.items == second.items and not np.allclose(first.probs, second.probs)


def test_error_barrier_by_hand():
    assert error_barrier([0.8, 0.5, 0.6]) == pytest.approx(0.5 - 0.3)  # (1-0.5) - (0.2+0.4)/2
    assert error_barrier([0.5, 0.7, 0.5]) == 0  # better than the ends: no barrier


def _datamodule(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg(*TINY_SYNTHETIC, f"cache_dir={tmp_path / 'cache'}", *overrides)
    dm = FaceDataModule(cfg.data, None, seed=cfg.seed, cache_dir=cfg.cache_dir)
    dm.setup()
    return cfg, dm


def test_recomputed_statistics_are_the_training_split(compose_cfg, tmp_path):
    # One batch holds the whole training split: the recomputed running mean and (unbiased)
    # variance of each BatchNorm are its input's over that split, in train mode, with no
    # augmentation; the frozen stem's BatchNorm keeps its statistics.
    cfg, dm = _datamodule(compose_cfg, tmp_path, "data.batch_size=512")
    model = build_model("resnet18", None, 7)
    frozen = freeze_layers(model, "resnet18", 1)
    stem_before = model.bn1.running_var.clone()
    seen = []
    hook = model.layer1[0].bn1.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    assert recompute_batchnorm(model, frozen, dm, cfg) == 19  # 20 less the frozen stem's
    hook.remove()
    assert len(seen) == 1  # one pass, one batch
    x = seen[0]
    bn = model.layer1[0].bn1
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        bn.running_var, x.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5
    )
    assert torch.equal(model.bn1.running_var, stem_before)
    assert bn.momentum == 0.1  # put back
    assert len(x) == len(dm.labels["train"])  # the whole split, in one pass


def test_recomputed_statistics_weigh_each_image_once(compose_cfg, tmp_path):
    # Batches of 30 and 12 images: the running mean is the mean over the 42 images of what
    # each BatchNorm saw, not the mean of the two batch means.
    cfg, dm = _datamodule(compose_cfg, tmp_path, "data.batch_size=30")
    assert [len(b[0]) for b in dm.eval_loader("train")] == [30, 12]
    model = build_model("resnet18", None, 7)
    seen = []
    bn = model.layer2[0].bn2
    hook = bn.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    recompute_batchnorm(model, [], dm, cfg)
    hook.remove()
    assert [len(x) for x in seen] == [30, 12]
    pooled = torch.cat(seen).mean((0, 2, 3))
    torch.testing.assert_close(bn.running_mean, pooled, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(
        bn.running_mean, (seen[0].mean((0, 2, 3)) + seen[1].mean((0, 2, 3))) / 2, atol=1e-6
    )


def test_midpoint_needs_recomputed_statistics(learnt):
    # B computes exactly A's function: every conv's filters scaled by 8, the BatchNorm after it
    # told so (running mean x8, variance x64). Every point of the line between them is A's
    # function too, once its statistics are measured; averaging the ends' statistics instead
    # (variance (1 + 64) / 2 = 32.5 where (1 + 8)^2 / 4 = 20.25 is true) mis-scales each layer.
    _, run_dir, cfg = learnt
    dm = FaceDataModule(cfg.data, None, seed=cfg.seed, cache_dir=cfg.cache_dir)
    dm.setup()
    model = build_model("resnet18", None, 7)
    a = run_weights(run_dir)  # the retrained ticket
    model.load_state_dict(a)
    b = {k: v.clone() for k, v in a.items()}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            b[f"{_conv_before(name)}.weight"] *= 8
            b[f"{name}.running_mean"] *= 8
            b[f"{name}.running_var"] *= 64
    start, middle = evaluate_path(model, [], a, b, [0.0, 0.5], dm, cfg)
    plain_start, plain_middle, plain_end = evaluate_path(
        model, [], a, b, [0.0, 0.5, 1.0], dm, cfg, recompute_bn=False
    )
    for split in ("val", "test"):
        # recomputed: the midpoint is the start's function
        assert middle[f"{split}/acc"] == pytest.approx(start[f"{split}/acc"], abs=1e-6)
        assert middle[f"{split}/loss"] == pytest.approx(start[f"{split}/loss"], rel=1e-3)
        # B is A (its statistics told of the scaling)
        assert plain_end[f"{split}/acc"] == pytest.approx(plain_start[f"{split}/acc"], abs=1e-6)
    ends = (plain_start["val/acc"] + plain_start["test/acc"]) / 2
    assert ends > 1 / 7 + 0.1  # the model has learnt something to lose
    # Interpolated statistics: the midpoint's accuracy collapses (here to about chance).
    assert (plain_middle["val/acc"] + plain_middle["test/acc"]) / 2 < ends / 2 + 0.05
    assert plain_middle["test/loss"] > middle["test/loss"]


def _conv_before(bn_name: str) -> str:
    """The conv whose output the BatchNorm ``bn_name`` normalises (ResNet-18 naming)."""
    if bn_name == "bn1":
        return "conv1"
    if bn_name.endswith("downsample.1"):
        return bn_name[: -len("1")] + "0"
    return bn_name.replace(".bn", ".conv")


def test_interpolate_ends_are_exact():
    a = {"w": torch.randn(3), "n": torch.tensor(2)}
    b = {"w": torch.randn(3), "n": torch.tensor(5)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    np.testing.assert_allclose(
        interpolate(a, b, 0.25)["w"], 0.75 * a["w"] + 0.25 * b["w"], rtol=1e-6
    )
    assert int(interpolate(a, b, 0.25)["n"]) == 2
