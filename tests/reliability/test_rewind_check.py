"""The rewind checks itself: every surviving weight equals its target bit for bit, every pruned
one is 0, and the retraining's optimizer starts empty; a broken rewind stops the job."""

from __future__ import annotations

import pytest
import torch

from fer_lottery.models import build_model, prunable_weights
from fer_lottery.pruning import rewind
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.rewind import RewindError, check_start_weights
from fer_lottery.training.classifier import FERClassifier


@pytest.mark.parametrize("mode", ["none", "pretrained", "epoch", "random"])
def test_every_rewind_mode_passes_its_check_in_a_real_job(run_job, mode):
    results, _ = run_job(mode, "prune.ratio=0.5", "retrain.epochs=1", f"retrain.rewind={mode}")
    assert results["prune/rewind_check"] == "ok"


def test_a_rewind_that_does_not_load_its_target_stops_the_job(run_job, monkeypatch):
    """As in Lightning #13643: the rewind 'happens' on something other than the model."""
    monkeypatch.setattr(rewind, "_load", lambda model, state: None)
    with pytest.raises(RewindError, match="retrain.rewind=pretrained: the start weights"):
        run_job("broken", "prune.ratio=0.5", "retrain.epochs=1", "retrain.rewind=pretrained")


def test_a_retraining_whose_optimizer_carries_old_state_stops_the_job(run_job, monkeypatch):
    """A momentum buffer from before the retraining trips the check in the real Trainer.fit."""
    original = FERClassifier.configure_optimizers

    def stale(self):
        optimizer = original(self)
        if self.trainer.max_epochs == 1:  # the retraining (the dense stage runs 2 epochs)
            p = next(iter(self.model.parameters()))
            optimizer.state[p]["momentum_buffer"] = torch.ones_like(p)
        return optimizer

    monkeypatch.setattr(FERClassifier, "configure_optimizers", stale)
    with pytest.raises(RewindError, match="optimizer starts with the state of 1 parameter"):
        run_job("stale", "prune.ratio=0.5", "retrain.epochs=1", "retrain.rewind=pretrained")


def test_the_check_names_a_pruned_entry_left_alive_and_a_surviving_one_changed():
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    target = {k: v.clone() for k, v in model.state_dict().items()}
    mask = magnitude_mask(model, prunable_weights(model), 0.5)
    mask.apply(model)
    assert check_start_weights(model, target, mask) == "ok"
    w = model.state_dict()["layer1.0.conv1.weight"]
    pruned = (~mask.tensors["layer1.0.conv1.weight"]).nonzero()[0].tolist()
    with torch.no_grad():
        w[tuple(pruned)] = 1e-30  # one pruned entry, barely alive
    with pytest.raises(RewindError, match="layer1.0.conv1.weight"):
        check_start_weights(model, target, mask)
    mask.apply(model)
    with torch.no_grad():
        model.state_dict()["bn1.running_mean"][0] += 1e-7  # a buffer off by one ulp or so
    with pytest.raises(RewindError, match="bn1.running_mean"):
        check_start_weights(model, target, mask)
