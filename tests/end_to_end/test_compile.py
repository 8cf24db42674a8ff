"""``trainer.compile=true``: a real job runs its stages through ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from fer_lottery.experiment.dense import cache_key
from fer_lottery.store.weights import load_weights


@pytest.mark.slow
def test_a_compiled_job_trains_prunes_and_keeps_its_mask(run_job, compose_cfg):
    torch._dynamo.reset()
    counters.clear()
    job = ("prune.ratio=0.5", "retrain.epochs=1")
    results, run_dir = run_job("compiled", *job, "trainer.compile=true")
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really captured the model's graphs
    assert results["config"]["trainer"]["compile"] is True
    # The mask held through the compiled retraining: half of the prunable weights are zero.
    assert results["prune/sparsity"] == pytest.approx(0.5, abs=0.01)
    weights = load_weights(run_dir / "weights.pt")
    eager, _ = run_job("eager", *job)
    assert weights.keys() == load_weights(run_dir.parent / "eager" / "weights.pt").keys()
    assert results["params/nonzero"] == eager["params/nonzero"]
    # Compiled kernels may round differently, so the two do not share a dense cache entry.
    keys = {cache_key(compose_cfg(f"trainer.compile={c}")) for c in ("true", "false")}
    assert len(keys) == 2
