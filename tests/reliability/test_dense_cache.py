"""The dense cache: complete entries only, keys by what settings resolve to, a bounded wait."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
from filelock import FileLock

from fer_lottery.core.errors import CacheError
from fer_lottery.experiment.dense import cache_key
from fer_lottery.models import build_model
from fer_lottery.store.dense_cache import DenseEntry, load_state, save_state


def _epochs(run_dir, stage="dense") -> list[dict]:
    rows = list(csv.DictReader((run_dir / "csv" / stage / "metrics.csv").open()))
    return [r for r in rows if r.get("val/acc")]


def test_rewind_epoch_keeps_theta_k_when_the_best_epoch_comes_before_k(run_job, tmp_path):
    """Testing the best checkpoint (epoch 0) restores callback state; theta_k must survive it."""
    job = (
        "trainer.max_epochs=3",
        "optim.lr=1e-12",  # nothing learns: epoch 0 stays the best (ties keep the first)
        "prune.ratio=0.5",
        "retrain.rewind=epoch",
        "retrain.rewind_epoch=2",
        "retrain.epochs=1",
    )
    first, run_dir = run_job("first", *job)
    val = [float(r["val/acc"]) for r in _epochs(run_dir)]
    assert len(val) == 3 and max(val) == val[0]  # the best epoch is before k
    (entry,) = [p for p in (tmp_path / "cache" / "dense").iterdir() if p.is_dir()]
    theta0, theta_k = load_state(entry / "theta0.pt"), load_state(entry / "theta_k.pt")
    assert theta_k.keys() == theta0.keys()
    # After exactly k=2 epochs: BatchNorm counted 2 epochs of batches (4 per epoch here).
    n_train = first["data/n_train"]
    batches = -(-n_train // 16)
    assert int(theta_k["bn1.num_batches_tracked"]) == 2 * batches
    # A second job with the same key loads the published entry and runs.
    second, _ = run_job("second", *[o for o in job if o != "prune.ratio=0.5"], "prune.ratio=0.9")
    assert second["dense/cache"] == "hit"


def test_an_entry_missing_a_promised_file_is_not_published(tmp_path):
    entry = DenseEntry(tmp_path, "k", snapshot_epoch=2)  # it promises theta_k.pt too
    assert entry.start({"w": torch.zeros(2)}) == "miss"
    torch.save(None, entry.theta_k_path)  # what a lost snapshot used to leave
    with pytest.raises(CacheError, match="theta_k.pt"):
        entry.publish({"test/acc": 0.5}, {"w": torch.ones(2)})
    (entry.theta_k_path).unlink()
    with pytest.raises(CacheError, match="theta_k.pt"):
        entry.publish({"test/acc": 0.5}, {"w": torch.ones(2)})
    assert not entry.check() and not entry.final.exists()
    assert entry.start({"w": torch.full((2,), 9.0)}) == "resumed"  # theta0 is kept, not rewritten
    save_state(entry.theta_k_path, {"w": torch.ones(2)})
    entry.publish({"test/acc": 0.5}, {"w": torch.ones(2)})
    assert entry.check() and entry.metrics() == {"test/acc": 0.5}
    assert torch.equal(entry.start_weights()["theta0"]["w"], torch.zeros(2))
    assert json.loads((entry.final / "metrics.json").read_text())["files"] == entry.files


def test_rewind_epoch_0_publishes_theta0_as_theta_k(tmp_path):
    entry = DenseEntry(tmp_path, "k", snapshot_epoch=0)
    entry.start({"w": torch.zeros(2)})
    entry.publish({"test/acc": 0.5}, {"w": torch.ones(2)})
    weights = entry.start_weights()
    assert torch.equal(weights["theta_k"]["w"], weights["theta0"]["w"])


def test_weights_file_is_keyed_by_content_not_path(compose_cfg, tmp_path):
    torch.manual_seed(0)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(build_model("resnet18", None).state_dict(), a)
    b.write_bytes(a.read_bytes())
    key_a = cache_key(compose_cfg(f"model.weights={a}"))
    assert cache_key(compose_cfg(f"model.weights={b}")) == key_a  # same content, other path
    torch.save(build_model("resnet18", None).state_dict(), a)  # same path, new content
    assert cache_key(compose_cfg(f"model.weights={a}")) != key_a


def test_named_weights_are_keyed_by_the_state_they_resolved_to(compose_cfg):
    """model.weights=imagenet may be a download here and a packaged port there: two theta0."""
    from fer_lottery.models import build

    _, loaded = build("mobilenet_v2", "imagenet")
    cfg = compose_cfg("model=mobilenet_v2")
    named = cache_key(cfg, "", loaded.sha256)
    assert named == cache_key(cfg, "", loaded.sha256)
    assert named != cache_key(cfg, "", "0" * 64) and named != cache_key(cfg)
    # A random init (no hash) keeps the key it always had.
    null = compose_cfg("model.weights=null")
    assert cache_key(null, "", None) == cache_key(null)


DATASETS = ("synthetic", "sfew")


def test_synthetic_data_is_keyed_without_a_root_and_sfew_by_its_resolved_root(
    compose_cfg, tmp_path, monkeypatch
):
    """A run from another working directory reuses the synthetic dense model; SFEW's relative
    root names another folder there, so it does not."""
    keys = {}
    for cwd in ("a", "b"):
        (tmp_path / cwd).mkdir()
        monkeypatch.chdir(tmp_path / cwd)
        keys[cwd] = [cache_key(compose_cfg(f"data={d}", "data.root=SFEW")) for d in DATASETS]
    assert keys["a"][0] == keys["b"][0]  # synthetic
    assert keys["a"][1] != keys["b"][1]  # sfew


def test_null_precision_and_auto_accelerator_are_keyed_as_resolved(compose_cfg):
    resolved = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    device = "gpu" if torch.cuda.is_available() else "cpu"
    null = cache_key(compose_cfg("trainer.precision=null"))
    assert null == cache_key(compose_cfg(f"trainer.precision={resolved}"))
    assert null == cache_key(compose_cfg(f"trainer.accelerator={device}"))
    assert null != cache_key(compose_cfg("trainer.precision=64-true"))


def test_cpu_thread_count_is_part_of_the_key(compose_cfg):
    if torch.cuda.is_available():
        pytest.skip("the thread count is keyed on CPU runs only")
    assert cache_key(compose_cfg("threads=1")) != cache_key(compose_cfg("threads=2"))


def test_waiting_for_the_lock_times_out_naming_the_lock_and_its_holder(tmp_path):
    holder = DenseEntry(tmp_path, "key")
    holder.acquire(10, job="outputs/job-that-trains")
    try:
        waiter = DenseEntry(tmp_path, "key")
        waiter.lock = FileLock(str(waiter.lock_path))  # a second handle, as another job has
        with pytest.raises(CacheError) as err:
            waiter.acquire(1.5, job="outputs/other")
        message = str(err.value)
        assert str(waiter.lock_path) in message
        assert "outputs/job-that-trains" in message and "pid" in message
        assert "cache_lock_timeout_s" in message
        info = json.loads(holder.holder_path.read_text())
        assert info["job"] == "outputs/job-that-trains"
    finally:
        holder.release()
    assert not holder.holder_path.exists()


def _finished(tmp_path, snapshot_epoch: int | None = None) -> DenseEntry:
    """A published entry with real state dicts (a small model's), as ``publish`` leaves it."""
    entry = DenseEntry(tmp_path, "k", snapshot_epoch)
    state = {"w": torch.randn(8, 4), "b": torch.zeros(8)}
    entry.start(state)
    if snapshot_epoch:
        save_state(entry.theta_k_path, state)
    entry.publish({"test/acc": 0.5}, state)
    return entry


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda e: _truncate(e.final / "best.pt"), "best.pt"),
        (lambda e: _truncate(e.final / "theta_k.pt"), "theta_k.pt"),
        (lambda e: (e.final / "theta0.pt").unlink(), "theta0.pt is missing"),
        (lambda e: _truncate(e.final / "metrics.json"), "metrics.json"),
        (lambda e: (e.final / "metrics.json").write_text('{"test/acc": 0.5}'), "metrics.json"),
        (lambda e: torch.save({"w": torch.ones(2)}, e.final / "best.pt"), "best.pt holds other"),
        (lambda e: torch.save([1, 2], e.final / "best.pt"), "best.pt holds a list"),
    ],
    ids=[
        "truncated_best",
        "truncated_theta_k",
        "missing_theta0",
        "truncated_metrics",
        "metrics_without_files",
        "best_of_another_model",
        "best_not_a_state_dict",
    ],
)
def test_a_broken_finished_entry_is_moved_aside_with_one_warning(tmp_path, caplog, damage, named):
    entry = _finished(tmp_path, snapshot_epoch=1)
    assert entry.check()
    damage(entry)
    with caplog.at_level(logging.WARNING):
        assert not entry.check()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and named in warned[0] and str(entry.final) in warned[0], warned
    assert not entry.final.exists()
    (moved,) = (entry.root / "quarantine").iterdir()
    assert moved.name.startswith("k.") and (moved / "theta0.pt").exists() != ("theta0" in named)
    # What the caller does next: a fresh entry is trained and published under the same key.
    caplog.clear()
    fresh = _finished(tmp_path / "again")
    assert fresh.check() and not caplog.records


def test_a_truncated_dense_file_is_retrained_to_the_same_numbers(run_job, tmp_path, caplog):
    """A truncated best.pt in a finished entry: one warning naming it, the entry is moved aside,
    the dense model is trained again (a cache miss), and the job's numbers are the original's."""
    first, _ = run_job("first", "prune.ratio=0.5", "retrain.epochs=1")
    (entry,) = [p for p in (tmp_path / "cache" / "dense").iterdir() if p.is_dir()]
    best = entry / "best.pt"
    _truncate(best)
    with caplog.at_level(logging.WARNING):
        again, _ = run_job("again", "prune.ratio=0.5", "retrain.epochs=1")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in warned if "dense cache" in m] == [m for m in warned if str(best) in m]
    assert len([m for m in warned if str(best) in m]) == 1, warned
    assert first["dense/cache"] == "miss" and again["dense/cache"] == "miss"  # trained again
    numbers = [k for k in first if k.startswith(("test/", "val/", "dense/test/", "dense/val/"))]
    assert {k: again[k] for k in numbers} == {k: first[k] for k in numbers}
    assert load_state(best)  # the new entry is whole
    (moved,) = (tmp_path / "cache" / "dense" / "quarantine").iterdir()
    assert (moved / "best.pt").stat().st_size < best.stat().st_size
    third, _ = run_job("third", "prune.ratio=0.5", "retrain.epochs=1")
    assert third["dense/cache"] == "hit"
