"""A setting recorded is a setting applied (#29, class 1).

Every setting that reaches ``results.json`` changed the run, was refused in one line, or is
declared not to apply, and then splits nothing. This file takes each setting that applies only in
some configurations (``config.settings``: its own ``applies``, a criterion's option, or a key of
``prune``, ``retrain`` or ``stability`` in a job that does not prune) and shows, with real jobs,
that where it is declared not to apply, setting it otherwise changes no number and no weight,
shares the dense model, and is no report condition; or that the combination is refused in one
line before any work. A conditional key that no case covers fails the test.
"""

from __future__ import annotations

import json

import pytest

from fer_lottery.config import flatten, resolved, settings, validate
from fer_lottery.config.declaration import NOTHING
from fer_lottery.config.settings import PRUNING_SECTIONS
from fer_lottery.core.errors import ConfigError
from fer_lottery.report.collect import collect
from fer_lottery.report.conditions import condition_keys
from tests.helpers import TINY_SFEW_UNCROPPED

PRUNED = ("prune.ratio=0.5", "retrain.epochs=1")

# case: (the job, {key: another value of a key that does not apply to that job})
CASES = {
    "magnitude": (
        PRUNED,
        {
            "prune.distinctiveness.angle": "40",
            "prune.distinctiveness.complementary": "true",
            "prune.distinctiveness.normalize": "center",
            "prune.distinctiveness.norm_std": "2.0",
            "prune.distinctiveness.variant": "paper_b",
            "prune.distinctiveness.layers": "[fc]",
            "prune.gradual.start": "1",
            "prune.gradual.end": "1",
            "retrain.rewind_epoch": "2",
            "retrain.lr": "final",  # optim.scheduler=none: one constant rate either way
            "stability.seed": "5",
            "stability.points": "5",
            "optim.betas": "[0.5,0.9]",
            "optim.step_size": "3",
            "optim.step_gamma": "0.5",
            "data.root": "no/such/folder",
            "data.official_val_fraction": "0.3",
            "data.crop": "none",
            "data.crop_fallback": "full",
            "data.crops_csv": "no/such/crops.csv",
            "data.duplicates": "drop",
            "data.face_margin": "0.3",
            "data.detect_max_side": "128",
        },
    ),
    "distinctiveness, paper A's rule": (
        (
            "prune.method=distinctiveness",
            "prune.distinctiveness.variant=paper_a",
            "prune.distinctiveness.angle=45",
            "retrain.epochs=1",
        ),
        {
            "prune.ratio": "0.9",
            "prune.scope": "layer",
            "prune.granularity": "unit",
            "prune.distinctiveness.complementary": "true",
            "prune.distinctiveness.normalize": "center",
            "prune.distinctiveness.norm_std": "1.0",
        },
    ),
    "dense": (
        (),
        {
            "prune.method": "random",
            "prune.scope": "layer",
            "prune.include": "[layer4*]",
            "prune.granularity": "unit",
            "prune.seed": "3",
            "prune.min_layer_density": "0.5",
            "prune.schedule": "gradual",
            "prune.iterations": "3",
            "retrain.rewind": "random",
            "retrain.epochs": "5",
            "stability.enabled": "true",
        },
    ),
    "gradual, cosine schedule": (
        ("optim.scheduler=cosine", "prune.schedule=gradual", "prune.ratio=0.5", "retrain.epochs=2"),
        # The false "+0.00" condition of an earlier round: a gradual stage has no retraining.
        {"retrain.lr": "final", "retrain.rewind_epoch": "2"},
    ),
    "Adam": (("optim=adam", *PRUNED), {"optim.momentum": "0.5", "optim.nesterov": "true"}),
    "SFEW": (
        ("data=sfew", "data.root={sfew}", *TINY_SFEW_UNCROPPED, *PRUNED),
        {"data.synthetic.per_class": "3", "data.synthetic.seed": "7"},
    ),
}

# Combinations refused in one line, before any work, instead of being recorded and ignored.
REFUSED = {
    "data.fold": (("data.fold=0",), "data.fold=0 is set but data.folds is null"),
    "prune.score_at": (
        ("prune.method=distinctiveness", "prune.score_at=pretrained"),
        "prune.score_at=pretrained with prune.method=distinctiveness",
    ),
    "stability.enabled": (
        ("stability.enabled=true", "prune.schedule=gradual", "prune.ratio=0.5"),
        "stability.enabled=true with prune.schedule=gradual",
    ),
}

# Keys that always apply where they are set (the switches of the cases above, by how they are
# read): they change the run, which the other tests show.
SWITCHES = {"prune.method", "prune.ratio", "retrain.rewind", "retrain.epochs", "prune.include"}


def _conditional() -> set[str]:
    table = settings.table()
    return {
        key
        for key, s in table.items()
        if s.changes != NOTHING and (s.applies is not None or key.split(".")[0] in PRUNING_SECTIONS)
    }


def test_every_conditional_setting_has_a_case():
    covered = {k for _, varied in CASES.values() for k in varied} | set(REFUSED)
    assert sorted(_conditional() - covered - SWITCHES) == []


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_combination_that_cannot_be_honoured_is_refused_in_one_line(compose_cfg, key):
    overrides, message = REFUSED[key]
    with pytest.raises(ConfigError, match=message) as info:
        validate(compose_cfg("debug=tiny", *overrides))
    assert "\n" not in str(info.value)


def _numbers(results: dict) -> dict:
    skip = ("time/", "config", "dense/cache", "gpu/", "data/root_digest", "data/crop_cache_hits")
    return {k: v for k, v in results.items() if not k.startswith(skip)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_setting_that_does_not_apply_changes_nothing_and_splits_nothing(
    case, compose_cfg, run_job, tmp_path, sfew_frames
):
    job, varied = CASES[case]
    job = tuple(o.format(sfew=sfew_frames) for o in job)
    others = [f"{k}={v}" for k, v in varied.items()]
    base = flatten(resolved(compose_cfg("debug=tiny", *job)))
    flat = flatten(resolved(compose_cfg("debug=tiny", *job, *others)))
    # Each value is another than the job's, and declared not to apply here.
    assert [k for k in varied if flat[k] == base[k]] == []
    assert [k for k in varied if settings.applies(k, flat)] == []
    first, run_a = run_job("a", *job)
    second, run_b = run_job("b", *job, *others)
    assert second["dense/cache"] == "hit" and first["dense/cache_key"] == second["dense/cache_key"]
    assert _numbers(first) == _numbers(second)
    for name in ("weights.pt", "mask.pt"):
        if (run_a / name).is_file():
            assert (run_a / name).read_bytes() == (run_b / name).read_bytes(), name
    # The record keeps what was set (it is no lie: the report reads that it did not apply).
    recorded = flatten(json.loads((run_b / "results.json").read_text())["config"])
    assert {k: recorded[k] for k in varied} == {k: flat[k] for k in varied}
    # One condition in the report: none of these keys splits a row.
    jobs, _ = collect([tmp_path / "a", tmp_path / "b"])
    assert len(jobs) == 2
    assert [k for k in condition_keys(jobs) if k in varied] == []


def test_the_false_retrain_lr_condition_of_a_gradual_sweep_is_gone(tmp_path):
    # The hostile run's row 1, through the CLI and the report: retrain.lr=restart,final under
    # gradual pruning ran the same job twice and the report showed "retrain_lr: final - restart
    # +0.00, McNemar p=1". Both jobs still record what was set, but the report holds one
    # condition and no contrast on retrain.lr.
    from fer_lottery import report
    from tests.helpers import TINY_SYNTHETIC_BATCH32, run_cli

    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        *TINY_SYNTHETIC_BATCH32,
        "trainer.max_epochs=3",
        "optim.scheduler=cosine",
        "prune.ratio=0.5",
        "prune.schedule=gradual",
        "retrain.lr=restart,final",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    jobs = sorted(sweep.glob("*/results.json"))
    recorded = [json.loads(p.read_text()) for p in jobs]
    assert sorted(r["config"]["retrain"]["lr"] for r in recorded) == ["final", "restart"]
    assert (
        jobs[0].with_name("weights.pt").read_bytes() == jobs[1].with_name("weights.pt").read_bytes()
    )
    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "grouped by nothing (one condition)" in md
    assert "retrain.lr" not in md.split("## Paired comparisons")[-1]
