"""Finished jobs keep their final weights sparse, exactly, and nothing heavy besides."""

from __future__ import annotations

import pytest
import torch

from fer_lottery.job.clean import main as clean_main
from fer_lottery.models import build_model, prunable_weights
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask import Mask
from fer_lottery.store.weights import load_weights, pack, run_weights, save_weights, unpack


def test_a_90_percent_pruned_resnet18_round_trips_exactly_in_under_10_mb(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    magnitude_mask(model, prunable_weights(model), 0.9, "global").apply(model)
    state = model.state_dict()
    save_weights(tmp_path / "weights.pt", state)
    loaded = load_weights(tmp_path / "weights.pt")
    assert loaded.keys() == state.keys()
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
    dense = tmp_path / "dense.pt"
    torch.save(state, dense)
    size = (tmp_path / "weights.pt").stat().st_size
    assert size < 10e6 and size < dense.stat().st_size / 4


def test_mostly_zero_tensors_are_packed_and_others_kept():
    sparse = torch.zeros(40, 30)
    sparse[3, 7], sparse[39, 29] = 1.5, -2.0
    packed = pack(sparse)
    assert isinstance(packed, dict) and packed["values"].tolist() == [1.5, -2.0]
    assert torch.equal(unpack(packed), sparse)
    dense = torch.randn(40, 30)
    assert torch.equal(unpack(pack(dense)), dense) and torch.is_tensor(pack(dense))
    counts = torch.tensor(7)
    assert torch.equal(unpack(pack(counts)), counts)


def test_a_pruned_job_keeps_sparse_final_weights_and_no_checkpoints(run_job):
    results, run_dir = run_job("job", "prune.ratio=0.9", "retrain.epochs=1")
    assert not (run_dir / "checkpoints").exists()
    weights = run_weights(run_dir)
    mask = Mask.load(run_dir / "mask.pt")
    for name, keep in mask.tensors.items():
        assert not bool(weights[name][~keep].any()), name  # pruned entries are exactly zero
    assert (
        sum(
            int(torch.count_nonzero(v))
            for k, v in weights.items()
            if k.endswith(("weight", "bias")) and v.is_floating_point()
        )
        == results["params/nonzero"]
    )
    total = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert total < 10e6


def test_a_dense_only_job_points_at_its_cache_entry(run_job, tmp_path):
    results, run_dir = run_job("dense", "trainer.max_epochs=1")
    assert not (run_dir / "weights.pt").exists()
    weights = run_weights(run_dir)
    entry = tmp_path / "cache" / "dense" / results["dense/cache_key"]
    best = torch.load(entry / "best.pt", weights_only=True)
    assert all(torch.equal(weights[k], best[k]) for k in best)


def test_clean_checkpoints_removes_only_finished_jobs_checkpoints(tmp_path, capsys):
    finished, running = tmp_path / "sweep" / "a", tmp_path / "sweep" / "b"
    for job in (finished, running):
        (job / "checkpoints" / "retrain").mkdir(parents=True)
        (job / "checkpoints" / "retrain" / "last.ckpt").write_bytes(b"x" * 1000)
    (finished / "results.json").write_text("{}")
    assert clean_main([str(tmp_path / "sweep")]) == 0
    assert not (finished / "checkpoints").exists()
    assert (running / "checkpoints" / "retrain" / "last.ckpt").is_file()  # needed to resume
    assert "removed 1 checkpoints folder(s)" in capsys.readouterr().out


def test_a_mask_is_saved_one_bit_per_entry_and_loads_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    mask = magnitude_mask(model, prunable_weights(model), 0.9, "global")
    mask.save(tmp_path / "mask.pt")
    loaded = Mask.load(tmp_path / "mask.pt")
    assert loaded.tensors.keys() == mask.tensors.keys()
    assert all(torch.equal(loaded.tensors[n], mask.tensors[n]) for n in mask.tensors)
    assert (tmp_path / "mask.pt").stat().st_size < mask.numel() / 8 * 1.05 + 100_000
    torch.save(mask.state_dict(), tmp_path / "plain.pt")  # not a mask file: refused, named
    with pytest.raises(ValueError, match="plain.pt is not a fer_lottery mask file"):
        Mask.load(tmp_path / "plain.pt")
