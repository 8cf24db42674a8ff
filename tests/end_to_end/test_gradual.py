"""prune.schedule=gradual: magnitude pruning while theta0 fine-tunes, on Zhu & Gupta's cubic
schedule; the per-epoch sparsity a real fit logs follows it and ends exactly at prune.ratio."""

from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer_lottery.config import validate
from fer_lottery.core.errors import ConfigError
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.mask_callbacks import cubic_sparsity
from fer_lottery.store.weights import load_weights
from tests.helpers import TINY_SYNTHETIC


def test_the_cubic_schedule():
    assert cubic_sparsity(0, 0.9, 1, 4) == 0.0
    assert cubic_sparsity(1, 0.9, 1, 4) == 0.0
    assert cubic_sparsity(2, 0.9, 1, 4) == pytest.approx(0.9 * (1 - (2 / 3) ** 3))
    assert cubic_sparsity(3, 0.9, 1, 4) == pytest.approx(0.9 * (1 - (1 / 3) ** 3))
    assert cubic_sparsity(4, 0.9, 1, 4) == cubic_sparsity(9, 0.9, 1, 4) == 0.9
    assert cubic_sparsity(3, 0.5, 3, 3) == 0.5  # one step straight to the target


def _logged(run_dir, key):
    with open(run_dir / "csv" / "gradual" / "metrics.csv") as f:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def test_a_gradual_stage_follows_the_schedule_and_ends_exactly_at_the_ratio(run_job):
    results, run_dir = run_job(
        "gmp",
        "trainer.max_epochs=2",
        "prune.schedule=gradual",
        "prune.ratio=0.9",
        "retrain.epochs=5",
        "prune.gradual.start=1",
        "prune.gradual.end=3",
    )
    sparsity = _logged(run_dir, "prune/sparsity")
    assert list(sparsity) == [0, 1, 2, 3, 4]
    for epoch, value in sparsity.items():  # exact to one weight, as a float32 scalar
        assert value == pytest.approx(cubic_sparsity(epoch, 0.9, 1, 3), abs=1e-6)
    assert sparsity[2] == pytest.approx(0.9 * 0.875, abs=1e-6)
    mask = Mask.load(run_dir / "mask.pt")
    assert mask.numel() - mask.kept() == round(0.9 * mask.numel())  # exactly the ratio
    assert results["prune/sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert "prune/acc_before_retrain" not in results  # nothing was pruned and untrained
    assert results["prune/rewind_check"] == "ok" and results["dense/cache"] == "miss"
    # The best epoch is one at the final sparsity: the tested weights are 90% zero.
    weights = load_weights(run_dir / "weights.pt")
    zeros = sum(int((weights[n] == 0).sum()) for n in mask.tensors)
    assert zeros >= mask.numel() - mask.kept()
    # TensorBoard holds the same curve.
    steps = []
    for events in (run_dir / "tb" / "gradual").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events)).Reload()
        if "prune/sparsity" in acc.Tags()["scalars"]:
            steps += [e.value for e in acc.Scalars("prune/sparsity")]
    assert steps == pytest.approx(list(sparsity.values()), abs=1e-6)
    # The logged best follows the stage's rule: only epochs at the final sparsity (3 and 4)
    # count, so the curve starts at epoch 3 and ends at results.json's val/acc_best.
    val, best = _logged(run_dir, "val/acc"), _logged(run_dir, "val/acc_best")
    assert list(best) == [3, 4]
    assert best[4] == pytest.approx(max(val[3], val[4])) == results["val/acc_best"]
    tb_best = []
    for events in (run_dir / "tb" / "gradual").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events)).Reload()
        if "val/acc_best" in acc.Tags()["scalars"]:
            tb_best += [e.value for e in acc.Scalars("val/acc_best")]
    assert tb_best == pytest.approx([best[3], best[4]])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["prune.method=gradient"], "use prune.method=magnitude"),
        (["retrain.rewind=pretrained"], "use retrain.rewind=none"),
        (["prune.granularity=unit"], "use prune.granularity=weight"),
        (["prune.gradual.end=9"], "need 0 <= start <= end < 2"),
        (["prune.gradual.start=1", "prune.gradual.end=0"], "prune.gradual.start=1"),
    ],
)
def test_gradual_combinations_that_make_no_sense_are_refused(compose_cfg, overrides, message):
    cfg = compose_cfg(
        "prune.ratio=0.5", "prune.schedule=gradual", "trainer.max_epochs=2", *overrides
    )
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_a_gradual_stage_killed_after_its_last_pruning_step_resumes_to_the_same_run(tmp_path):
    """The restored final mask is recomputed once, to itself: numbers, CSV and TensorBoard
    curves equal those of an uninterrupted run."""
    import signal

    from tests.reliability.test_faults import run_cli, same_run

    job = (
        *TINY_SYNTHETIC,
        "trainer.max_epochs=2",
        "prune.schedule=gradual",
        "prune.ratio=0.8",
        "retrain.epochs=3",
        "prune.gradual.end=1",
        "trainer.checkpoint_every_n_epochs=1",
    )
    reference = tmp_path / "reference"
    run_cli(*job, f"hydra.run.dir={reference / 'run'}", cwd=reference)
    cwd = tmp_path / "killed"
    args = (*job, f"hydra.run.dir={cwd / 'run'}")
    killed = run_cli(*args, cwd=cwd, check=False, fault="gradual/epoch2/batch1=KILL")
    assert killed.returncode == -signal.SIGKILL
    again = run_cli(*args, cwd=cwd)
    assert "gradual: resuming after epoch 1" in again.stdout + again.stderr
    same_run(cwd / "run", reference / "run", stages=("dense", "gradual"))
