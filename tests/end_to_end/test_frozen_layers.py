"""Frozen layers stay exactly as loaded through a real Trainer.fit: parameters and BN buffers.

Lightning keeps each submodule's train/eval mode through ``fit`` and never calls the module's
``train()``, so these tests run the real pipeline and look at the weights it leaves behind.
"""

from __future__ import annotations

import torch

from fer_lottery.models import build_model, freeze_layers, prunable_weights
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.rewind import frozen_state_names, set_start_weights
from fer_lottery.store.dense_cache import load_state
from fer_lottery.store.weights import load_weights


def _frozen_names(k: int) -> set[str]:
    model = build_model("resnet18", None)
    return frozen_state_names(model, freeze_layers(model, "resnet18", k))


def test_frozen_groups_are_bit_identical_after_dense_training_and_retraining(run_job, tmp_path):
    results, run_dir = run_job(
        "job",
        "model.frozen_layers=2",
        "prune.ratio=0.5",
        "retrain.rewind=pretrained",
        "retrain.epochs=1",
    )
    (entry,) = [p for p in (tmp_path / "cache" / "dense").iterdir() if p.is_dir()]
    theta0, dense_best = load_state(entry / "theta0.pt"), load_state(entry / "best.pt")
    names = _frozen_names(2)
    buffers = [n for n in names if "running_" in n or "num_batches_tracked" in n]
    assert buffers and any(n.startswith("layer1.") for n in buffers)
    # Dense training moved what trains ...
    assert not torch.equal(dense_best["fc.weight"], theta0["fc.weight"])
    assert not torch.equal(
        dense_best["layer2.0.bn1.running_mean"], theta0["layer2.0.bn1.running_mean"]
    )
    # ... and left every parameter and buffer of the stem and layer1 as it was.
    for n in names:
        assert torch.equal(dense_best[n], theta0[n]), f"dense training changed frozen {n}"

    # Retraining starts from theta0 with the mask applied; frozen groups must stay there.
    retrained = load_weights(run_dir / "weights.pt")  # the retrained model, best epoch
    mask = Mask.load(run_dir / "mask.pt")
    for n in names:
        expected = theta0[n] * mask.tensors[n] if n in mask else theta0[n]
        assert torch.equal(retrained[n], expected), f"retraining changed frozen {n}"
    assert not torch.equal(retrained["fc.weight"], theta0["fc.weight"] * mask.tensors["fc.weight"])


def test_rewind_random_reinitialises_only_what_trains(compose_cfg):
    cfg = compose_cfg("retrain.rewind=random", "prune.ratio=0.5")
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    frozen = freeze_layers(model, "resnet18", 3)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # stand-in for fine-tuning what trains
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    names = frozen_state_names(model, frozen)
    assert {n.split(".")[0] for n in names} == {"conv1", "bn1", "layer1", "layer2"}
    mask = magnitude_mask(model, prunable_weights(model), 0.5, "global")
    set_start_weights(cfg, model, {"theta0": theta0}, mask, names)
    state = model.state_dict()
    for n in names:  # frozen: the loaded weights (masked), not a fresh draw
        expected = theta0[n] * mask.tensors[n] if n in mask else theta0[n]
        assert torch.equal(state[n], expected), n
    for n in ("layer3.0.conv1.weight", "fc.weight"):  # trainable: re-initialised
        kept = mask.tensors[n]
        assert not torch.equal(state[n][kept], theta0[n][kept]), n
