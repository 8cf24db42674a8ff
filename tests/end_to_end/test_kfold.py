"""k-fold cross-validation: the fold split, its config checks, the data module and run_folds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fer_lottery.config import validate
from fer_lottery.core.errors import ConfigError
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.data.split import kfold_split
from tests.helpers import TINY_SYNTHETIC_BATCH32, run_cli

SFEW_LABELS = [0] * 100 + [1] * 75 + [2] * 100 + [3] * 100 + [4] * 100 + [5] * 100 + [6] * 100
VAL_FRACTION = 0.15 / 0.85

# The k-fold jobs: TINY_SYNTHETIC_BATCH32 with 10 faces per class, 1 epoch.
KFOLD_JOB = (*TINY_SYNTHETIC_BATCH32, "data.synthetic.per_class=10", "trainer.max_epochs=1")


def _all_folds(labels, k, seed=1):
    return [kfold_split(labels, k, i, VAL_FRACTION, seed) for i in range(k)]


# -- kfold_split -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, 10])
def test_test_folds_are_disjoint_and_cover_every_item_once(k):
    tests = [s["test"] for s in _all_folds(SFEW_LABELS, k)]
    assert sorted(i for t in tests for i in t) == list(range(len(SFEW_LABELS)))
    sizes = [len(t) for t in tests]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("k", [3, 5])
def test_test_folds_are_stratified(k):
    per_fold = [Counter(SFEW_LABELS[i] for i in s["test"]) for s in _all_folds(SFEW_LABELS, k)]
    for cls in range(7):
        counts = [c[cls] for c in per_fold]
        assert max(counts) - min(counts) <= 1, (cls, counts)


def test_each_fold_partitions_the_data_and_val_fraction_is_right():
    for split in _all_folds(SFEW_LABELS, 5):
        train, val, test = (set(split[n]) for n in ("train", "val", "test"))
        assert not (train & val or train & test or val & test)
        assert sorted(train | val | test) == list(range(len(SFEW_LABELS)))
        assert abs(len(val) / (len(train) + len(val)) - VAL_FRACTION) < 0.02
        assert set(Counter(SFEW_LABELS[i] for i in split["val"])) == set(range(7))
        assert all(split[n] == sorted(split[n]) for n in ("train", "val", "test"))


def test_kfold_is_reproducible_from_the_seed():
    assert _all_folds(SFEW_LABELS, 5, seed=1) == _all_folds(SFEW_LABELS, 5, seed=1)
    assert _all_folds(SFEW_LABELS, 5, seed=1)[0]["test"] != _all_folds(SFEW_LABELS, 5, 2)[0]["test"]


def test_kfold_rejects_bad_arguments():
    for folds, fold in [(1, 0), (3, 3), (3, -1)]:
        with pytest.raises(ValueError, match="folds"):
            kfold_split(SFEW_LABELS, folds, fold, VAL_FRACTION, 1)
    with pytest.raises(ValueError, match="cannot fill"):
        kfold_split([0, 1], 3, 0, VAL_FRACTION, 1)


# -- validate() ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.folds=1"], "data.folds=1"),
        (["data.folds=0"], "at least 2 folds"),
        (["data.fold=0"], "data.folds is null"),
        (["data.folds=5", "data.fold=5"], "use 0..4"),
        (["data.folds=5", "data.fold=-1"], "data.fold=-1"),
    ],
)
def test_validate_rejects_bad_folds(compose_cfg, overrides, message):
    cfg = compose_cfg("data=synthetic", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_validate_accepts_good_folds(compose_cfg):
    validate(compose_cfg("data.folds=5"))
    validate(compose_cfg("data=synthetic", "data.folds=5", "data.fold=4"))
    assert compose_cfg().data.folds is None and compose_cfg().data.fold is None


# -- data module -----------------------------------------------------------------------------


def test_datamodule_loads_one_fold_and_records_it(compose_cfg, tmp_path):
    cfg = compose_cfg(*KFOLD_JOB, "data.folds=3", "data.fold=1")
    dm = FaceDataModule(cfg.data, tmp_path / "run", seed=0, cache_dir=tmp_path / "cache")
    dm.setup()
    assert dm.stats["data/folds"] == 3 and dm.stats["data/fold"] == 1
    assert sum(dm.stats[f"data/n_{n}"] for n in ("train", "val", "test")) == 70
    assert dm.stats["data/n_test"] in (23, 24)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["folds"] == 3 and split["fold"] == 1


def test_datamodule_needs_a_fold_when_folds_is_set(compose_cfg, tmp_path):
    cfg = compose_cfg(*KFOLD_JOB, "data.folds=3")
    dm = FaceDataModule(cfg.data, None, seed=0, cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="data.fold=0..2"):
        dm.setup()


# -- run_folds, end to end -------------------------------------------------------------------


def _check_fold_runs(run_dir: Path, k: int) -> None:
    """Each fold ran with its own data.fold, and the test folds partition the dataset."""
    assert not (run_dir / "results.json").exists()  # the report would count it as a run
    tests = []
    for i in range(k):
        results = json.loads((run_dir / f"fold={i}" / "results.json").read_text())
        assert results["config"]["data"]["fold"] == i and results["config"]["data"]["folds"] == k
        assert results["data/fold"] == i
        split = json.loads((run_dir / f"fold={i}" / "split.json").read_text())
        assert split["fold"] == i
        tests.append(set(split["test"]))
        everything = set(split["train"]) | set(split["val"]) | set(split["test"])
    assert sum(map(len, tests)) == len(set().union(*tests)) == len(everything) == 70
    folds = json.loads((run_dir / "folds.json").read_text())
    assert folds["k"] == k and folds["fold_dirs"] == [f"fold={i}" for i in range(k)]
    mean = sum(folds["test/acc"]) / k
    assert folds["summary"]["test/acc"] == pytest.approx(mean)
    assert folds["summary"]["data/n_test"] == 70


def test_run_folds_runs_every_fold_and_skips_finished_ones(compose_cfg, tmp_path, monkeypatch):
    from fer_lottery.experiment import runner as pipeline
    from fer_lottery.experiment.folds import run_folds

    cfg = compose_cfg(*KFOLD_JOB, "data.folds=3", f"cache_dir={tmp_path / 'cache'}")
    validate(cfg)
    run_dir = tmp_path / "run"
    summary = run_folds(cfg, run_dir)
    assert summary["folds"] == 3 and summary["data/n_test"] == 70
    assert 0.0 <= summary["test/acc"] <= 1.0 and "val/acc_best" in summary
    assert cfg.data.fold is None  # the caller's config is left alone
    _check_fold_runs(run_dir, 3)

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(pipeline, "run_experiment", no_training)
    assert run_folds(cfg, run_dir) == summary  # folds.json exists: skipped
    (run_dir / "folds.json").unlink()
    assert run_folds(cfg, run_dir) == summary  # every fold's results.json exists: rebuilt


def test_run_folds_with_one_fold_is_one_experiment(compose_cfg, tmp_path, monkeypatch):
    from fer_lottery.experiment import runner as pipeline
    from fer_lottery.experiment.folds import run_folds

    calls = []

    def fake(cfg, run_dir):
        calls.append((cfg.data.fold, Path(run_dir)))
        return {"test/acc": 0.5}

    monkeypatch.setattr(pipeline, "run_experiment", fake)
    cfg = compose_cfg(*KFOLD_JOB, "data.folds=3", "data.fold=2")
    assert run_folds(cfg, tmp_path / "a") == {"test/acc": 0.5}
    assert run_folds(compose_cfg(*KFOLD_JOB), tmp_path / "b") == {"test/acc": 0.5}
    assert calls == [(2, tmp_path / "a"), (None, tmp_path / "b")]


@pytest.mark.slow
def test_cli_runs_all_folds(tmp_path):
    run_dir = tmp_path / "run"
    run_cli(*KFOLD_JOB, "data.folds=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    _check_fold_runs(run_dir, 3)


@pytest.mark.slow
def test_cli_runs_one_fold(tmp_path):
    run_dir = tmp_path / "run"
    run_cli(*KFOLD_JOB, "data.folds=3", "data.fold=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["data"]["fold"] == 1 and results["data/folds"] == 3
    assert not (run_dir / "folds.json").exists()
