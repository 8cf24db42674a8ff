"""A job folder never claims a config that it did not run: a relaunch into a finished job's
folder with a changed setting runs it again (the old results kept beside, named stale), and a
killed job relaunched with a changed setting does not resume from its old checkpoints."""

from __future__ import annotations

import json

import pytest

from fer_lottery.experiment import runner
from fer_lottery.experiment.folds import run_folds
from tests.helpers import TINY_SFEW_UNCROPPED, TINY_SYNTHETIC, run_cli


def test_a_relaunch_with_a_changed_setting_runs_again_and_keeps_the_old_results(
    compose_cfg, tmp_path, monkeypatch, caplog
):
    run_dir, cache = tmp_path / "run", f"cache_dir={tmp_path / 'cache'}"
    first = run_folds(compose_cfg(*TINY_SYNTHETIC, cache, "trainer.max_epochs=1"), run_dir)
    assert first["config"]["trainer"]["max_epochs"] == 1
    again = run_folds(compose_cfg(*TINY_SYNTHETIC, cache, "trainer.max_epochs=2"), run_dir)
    assert again["config"]["trainer"]["max_epochs"] == 2
    recorded = json.loads((run_dir / "results.json").read_text())
    assert recorded["config"]["trainer"]["max_epochs"] == 2  # the record is the new run's
    (stale,) = run_dir.glob("results.json.stale-*")
    assert json.loads(stale.read_text())["config"]["trainer"]["max_epochs"] == 1
    assert "trainer.max_epochs: 1 -> 2" in caplog.text
    # The old per-image predictions go with the old results; the folder holds the new run's.
    assert list(run_dir.glob("predictions_dense.csv.stale-*"))
    assert (run_dir / "predictions_dense.csv").is_file()
    # The same config, or one that differs only in what changes no number, is skipped.

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished job with the same config was run again")

    monkeypatch.setattr(runner, "run_experiment", no_training)
    for extra in ("trainer.max_epochs=2", "trainer.enable_progress_bar=true"):
        assert run_folds(compose_cfg(*TINY_SYNTHETIC, cache, extra), run_dir) == recorded


@pytest.mark.slow
def test_a_killed_job_relaunched_with_another_setting_does_not_resume_its_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    job = [*TINY_SYNTHETIC, "trainer.max_epochs=1", "prune.ratio=0.5", "retrain.epochs=2"]
    job += ["trainer.checkpoint_every_n_epochs=1", f"hydra.run.dir={run_dir}"]
    killed = run_cli(*job, cwd=tmp_path, check=False, fault="retrain/epoch1/batch0=KILL")
    assert killed.returncode != 0 and (run_dir / "checkpoints" / "retrain" / "last.ckpt").exists()
    again = run_cli(*job, "optim.lr=0.01", cwd=tmp_path)
    log = again.stdout + again.stderr
    assert "holds checkpoints of another config" in log and "optim.lr: 0.02 -> 0.01" in log
    assert "retrain: resuming" not in log
    assert list((run_dir / "quarantine").glob("checkpoints.stale-*"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["optim"]["lr"] == 0.01


def test_a_k_fold_job_relaunched_with_a_changed_setting_is_not_summarised_from_stale_folds(
    compose_cfg, tmp_path
):
    run_dir, cache = tmp_path / "run", f"cache_dir={tmp_path / 'cache'}"
    job = (*TINY_SYNTHETIC, cache, "data.folds=2")
    run_folds(compose_cfg(*job, "trainer.max_epochs=1"), run_dir)
    run_folds(compose_cfg(*job, "trainer.max_epochs=2"), run_dir)
    for fold in ("fold=0", "fold=1"):
        results = json.loads((run_dir / fold / "results.json").read_text())
        assert results["config"]["trainer"]["max_epochs"] == 2
        assert list((run_dir / fold).glob("results.json.stale-*"))
    summary = json.loads((run_dir / "folds.json").read_text())
    tests = [
        json.loads((run_dir / f / "results.json").read_text())["test/acc"]
        for f in ("fold=0", "fold=1")
    ]
    assert summary["test/acc"] == tests


def test_a_relaunch_after_the_images_changed_runs_again(compose_cfg, tmp_path, sfew_root, caplog):
    """Same config, other images under data.root (one added): the old results are stale."""
    run_dir, cache = tmp_path / "run", f"cache_dir={tmp_path / 'cache'}"
    job = (f"data.root={sfew_root}", *TINY_SFEW_UNCROPPED, "trainer.enable_progress_bar=false")
    first = run_folds(compose_cfg(*job, cache), run_dir)
    assert first["data/images_found"] == 21
    assert run_folds(compose_cfg(*job, cache), run_dir) == first  # nothing changed: skipped
    angry = next(p for p in sfew_root.iterdir() if p.name.lower() == "angry")
    frame = next(p for p in sfew_root.iterdir() if p.name.lower() == "happy").glob("*.png")
    (angry / "new.png").write_bytes(next(frame).read_bytes()[:-1] + b"\0")
    again = run_folds(compose_cfg(*job, cache), run_dir)
    assert again["data/images_found"] == 22
    assert "the files under data.root" in caplog.text
    assert list(run_dir.glob("results.json.stale-*"))
