"""optim.scheduler and retrain.lr: the learning rates a real fit logs (LearningRateMonitor's
``lr-SGD`` scalars, in the CSV and in TensorBoard) follow the schedule; ``restart`` replays it in
the retraining, ``final`` stays at the dense stage's last rate."""

from __future__ import annotations

import csv
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer_lottery.config import validate
from fer_lottery.core.errors import ConfigError
from fer_lottery.training.schedule import last_lr


def _csv_lrs(run_dir, stage):
    with open(run_dir / "csv" / stage / "metrics.csv") as f:
        return [float(r["lr-SGD"]) for r in csv.DictReader(f) if r.get("lr-SGD")]


def _tb_lrs(run_dir, stage):
    found = []
    for events in sorted((run_dir / "tb" / stage).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events)).Reload()
        if "lr-SGD" in acc.Tags()["scalars"]:
            found += [(e.step, e.value) for e in acc.Scalars("lr-SGD")]
    return [v for _, v in sorted(found)]


def cosine(epochs, lr=0.02):
    return [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]


@pytest.mark.parametrize("mode", ["restart", "final"])
def test_restart_replays_the_cosine_schedule_and_final_stays_at_its_last_rate(run_job, mode):
    results, run_dir = run_job(
        mode,
        "trainer.max_epochs=3",
        "optim.scheduler=cosine",
        "prune.ratio=0.5",
        "retrain.epochs=4",
        f"retrain.lr={mode}",
    )
    dense = cosine(3)
    assert _csv_lrs(run_dir, "dense") == pytest.approx(dense, rel=1e-6)
    expected = cosine(4) if mode == "restart" else [dense[-1]] * 4
    assert _csv_lrs(run_dir, "retrain") == pytest.approx(expected, rel=1e-6)
    assert _tb_lrs(run_dir, "retrain") == pytest.approx(expected, rel=1e-6)
    assert results["config"]["retrain"]["lr"] == mode


def test_step_schedule_and_its_last_rate(compose_cfg):
    cfg = compose_cfg("optim.scheduler=step", "optim.step_size=2", "optim.step_gamma=0.5")
    assert last_lr(cfg.optim, 1) == pytest.approx(0.02)
    assert last_lr(cfg.optim, 3) == pytest.approx(0.01)  # epochs 0,1 at 0.02; epoch 2 at 0.01
    assert last_lr(cfg.optim, 5) == pytest.approx(0.005)
    assert last_lr(compose_cfg().optim, 50) == 0.02  # none: constant
    with pytest.raises(ConfigError, match="optim.step_gamma=0"):
        validate(compose_cfg("optim.scheduler=step", "optim.step_gamma=0"))


def test_the_report_does_not_split_restart_from_final_at_a_constant_rate():
    from fer_lottery.report.conditions import applicable

    row = {"prune.method": "magnitude", "prune.ratio": 0.5, "retrain.lr": "final"}
    assert applicable({**row, "optim.scheduler": "none"})["retrain.lr"] is None
    assert applicable({**row, "optim.scheduler": "cosine"})["retrain.lr"] == "final"
