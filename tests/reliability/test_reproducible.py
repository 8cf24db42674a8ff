"""The same config and seed give the same numbers whatever the cache state and launcher.

Each job here runs the real pipeline in-process; the numbers compared are what it writes.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from fer_lottery.core.seeding import available_cpus, derived_seed
from fer_lottery.pruning.mask import Mask

# The metrics that must not depend on how a job got its dense model.
METRICS = ("test/acc", "test/confusion", "val/acc_best", "dense/test/acc", "dense/val/acc_best")


def _numbers(results: dict) -> dict:
    keys = [k for k in results if k.startswith(("test/", "val/", "dense/test/", "dense/val/"))]
    return {k: results[k] for k in keys}


def _same_masks(a, b) -> bool:
    ma, mb = Mask.load(a / "mask.pt"), Mask.load(b / "mask.pt")
    return ma.tensors.keys() == mb.tensors.keys() and all(
        torch.equal(ma.tensors[n], mb.tensors[n]) for n in ma.tensors
    )


# Each criterion and mode, on top of the job (magnitude pruning at 0.5, retrained one epoch).
METHODS = {
    "magnitude": (),
    "gradient": ("prune.method=gradient",),
    "unit_magnitude_rewind": ("prune.granularity=unit", "retrain.rewind=pretrained"),
    "gradient_before_finetune": (
        "prune.method=gradient",
        "prune.score_at=pretrained",
        "retrain.rewind=pretrained",
    ),
    "gradual": ("prune.schedule=gradual", "retrain.epochs=2", "prune.gradual.end=1"),
    "lr_final_cosine": ("optim.scheduler=cosine", "retrain.lr=final"),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_a_job_gives_the_same_numbers_whichever_job_trained_the_dense_model(
    run_job, tmp_path, method
):
    """Cache off, cache miss (this job trains), cache hit (another job trained): one result."""
    job = ("prune.ratio=0.5", "retrain.epochs=1", "data.augment.rotation=30")
    other = ("prune.ratio=0.8", "retrain.epochs=1", "data.augment.rotation=30")
    job, other = (*job, *METHODS[method]), (*other, *METHODS[method])
    off, off_dir = run_job("off", *job, "cache_dense=false")
    miss, miss_dir = run_job("miss", *job, cache=tmp_path / "cache_a")
    run_job("other", *other, cache=tmp_path / "cache_b")  # trains cache_b's dense model
    hit, hit_dir = run_job("hit", *job, cache=tmp_path / "cache_b")
    assert (off["dense/cache"], miss["dense/cache"], hit["dense/cache"]) == ("off", "miss", "hit")
    assert _numbers(off) == _numbers(miss) == _numbers(hit)
    assert all(k in _numbers(off) for k in METRICS)
    assert _same_masks(off_dir, miss_dir) and _same_masks(off_dir, hit_dir)
    # Retraining really drew random numbers (augmentation) and moved the weights.
    assert off["test/acc"] != off.get("prune/acc_before_retrain") or off["val/acc_best"] > 0


def test_a_resumed_dense_entry_keeps_theta0_written_by_the_job_that_started_it(run_job, tmp_path):
    """theta0 is written once, on the cache miss; a later job never rewrites it."""
    _, _ = run_job("first", "prune.ratio=0.5", "retrain.epochs=1")
    (entry,) = [p for p in (tmp_path / "cache" / "dense").iterdir() if p.is_dir()]
    theta0 = entry / "theta0.pt"
    before = theta0.read_bytes()
    # Turn the entry back into an unfinished one, as a killed job leaves it.
    partial = entry.with_name(entry.name + ".partial")
    shutil.move(entry, partial)
    (partial / "metrics.json").unlink()
    mark = partial / "theta0.pt"
    stamp = mark.stat().st_mtime_ns
    resumed, _ = run_job("second", "prune.ratio=0.5", "retrain.epochs=1")
    assert resumed["dense/cache"] == "resumed"
    assert (entry / "theta0.pt").read_bytes() == before
    assert (entry / "theta0.pt").stat().st_mtime_ns == stamp


def test_cold_and_warm_crop_cache_give_the_same_numbers(run_job, tmp_path, sfew_frames):
    """MTCNN is built (and draws random numbers) only on a cold crop cache."""
    job = (f"data.root={sfew_frames}", "data=sfew", "cache_dense=false", "trainer.max_epochs=1")
    cold, _ = run_job("cold", *job, cache=tmp_path / "crops")
    warm, _ = run_job("warm", *job, cache=tmp_path / "crops")
    assert cold["data/crop_cache_hits"] == 0 and warm["data/crop_cache_hits"] == 21
    assert _numbers(cold) == _numbers(warm)


def test_thread_count_is_a_recorded_setting(run_job):
    results, _ = run_job("one", "threads=1", "trainer.max_epochs=1")
    assert results["torch/threads"] == 1 == torch.get_num_threads()
    default, _ = run_job("default", "trainer.max_epochs=1")
    assert default["torch/threads"] == available_cpus() == torch.get_num_threads()


def test_derived_seeds_differ_by_point_and_by_seed():
    seeds = {derived_seed(s, w) for s in (1, 2) for w in ("model", "dense", "retrain")}
    assert len(seeds) == 6 and all(0 <= s < 2**31 for s in seeds)
    assert derived_seed(1, "dense") == derived_seed(1, "dense")
