"""The report: statistics, condition keys, paper columns, and a real preset sweep with failures."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fer_lottery import report
from fer_lottery.report.conditions import applicable
from fer_lottery.report.papers import paper_values
from fer_lottery.report.stats import Stat
from tests.helpers import TINY_SYNTHETIC_BATCH32, run_cli


def test_t_interval_over_repeats():
    stat = Stat.of([0.5, 0.6, 0.7])
    assert stat.n == 3 and math.isclose(stat.mean, 0.6) and math.isclose(stat.std, 0.1)
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, df=2)
    assert math.isclose(stat.ci_low, 0.6 - half, rel_tol=1e-5)
    assert math.isclose(stat.ci_high, 0.6 + half, rel_tol=1e-5)


def test_single_run_gets_the_binomial_interval_of_its_test_split():
    stat = Stat.of([0.5], n_test=100)
    assert math.isnan(stat.std)
    assert math.isclose(stat.ci_low, 0.4038, abs_tol=1e-3)  # Wilson, 50/100
    assert math.isclose(stat.ci_high, 0.5962, abs_tol=1e-3)
    wide = Stat.of([0.5], n_test=20)
    assert wide.ci_high - wide.ci_low > stat.ci_high - stat.ci_low
    assert Stat.of([0.0], n_test=7).ci_low == 0.0


def test_keys_that_do_not_apply_to_a_method_are_blanked():
    base = {
        "prune.method": "magnitude",
        "prune.ratio": 0.9,
        "prune.distinctiveness.angle": 15.0,
        "prune.distinctiveness.norm_std": None,
        "prune.distinctiveness.variant": "honest",
        "retrain.rewind": "none",
        "retrain.rewind_epoch": 1,
        "seed": 1,
    }
    magnitude = applicable(base)
    assert magnitude["prune.ratio"] == 0.9 and magnitude["prune.distinctiveness.angle"] is None
    assert magnitude["retrain.rewind_epoch"] is None
    dense = applicable({**base, "prune.ratio": 0.0})
    assert all(v is None for k, v in dense.items() if k.startswith("prune."))
    distinct = applicable(
        {**base, "prune.method": "distinctiveness", "prune.distinctiveness.variant": "paper_a"}
    )
    assert distinct["prune.ratio"] is None and distinct["prune.distinctiveness.angle"] == 15.0
    assert distinct["prune.distinctiveness.variant"] == "paper_a" and distinct["seed"] == 1


def test_paper_values_match_the_row_keys():
    block = {
        "match": ["prune.ratio"],
        "rows": [{"at": [0.5], "test/acc": 66.14}, {"at": [0.999], "test/acc": 25.94}],
    }
    assert paper_values(block, {"prune.ratio": 0.999}) == {"test/acc": 25.94}
    assert paper_values(block, {"prune.ratio": 0.99}) == {}


def _hparams(folder) -> dict:
    for events in folder.glob("events.out.tfevents.*"):
        try:
            tags = EventAccumulator(str(events)).Reload().PluginTagToContent("hparams")
        except KeyError:  # the scalars' events file
            continue
        data = plugin_data_pb2.HParamsPluginData.FromString(tags["_hparams_/session_start_info"])
        return dict(data.session_start_info.hparams)
    return {}


@pytest.mark.slow
def test_report_of_a_preset_sweep_with_failed_and_missing_jobs(tmp_path):
    """paper_a_table2 on synthetic faces, 2 seeds; one swept ratio is invalid, one job deleted."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "experiment=paper_a_table2",
        *TINY_SYNTHETIC_BATCH32,  # after the preset: its 50 epochs, batch 64 and weights give way
        "retrain.epochs=1",
        "seed=1,2",
        "prune.ratio=0.5,0.9,1.5",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=False,
    )
    log = proc.stdout + proc.stderr
    # The invalid ratio fails its two jobs; the other four finish; the sweep then exits 1.
    assert proc.returncode == 1, log[-3000:]
    assert "2 job(s) of the sweep" in log and "prune.ratio=1.5,seed=1" in log
    assert "2 jobs (prune.ratio=1.5,seed=1, prune.ratio=1.5,seed=2)" in log  # one error, twice
    assert "4 of the sweep's 6 jobs finished." in log
    failed = json.loads((sweep / "prune.ratio=1.5,seed=2" / "failed.json").read_text())
    assert "prune.ratio=1.5" in failed["error"] and "ConfigError" in failed["error"]
    # The hparams tab: the job's swept keys with its final metrics.
    hp = _hparams(sweep / "prune.ratio=0.9,seed=2" / "tb" / "retrain")
    assert hp["prune.ratio"].number_value == 0.9 and hp["seed"].number_value == 2
    assert hp["prune.method"].string_value == "magnitude"
    # A job that never started (e.g. a sweep killed early) is listed too.
    shutil.rmtree(sweep / "prune.ratio=0.9,seed=1")

    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Paper A, Table 2" in md and "paper: test acc %" in md
    comparison = md.split("## Paper A, Table 2")[1].split("##")[0]
    row_05 = next(ln for ln in comparison.splitlines() if ln.startswith("| 0.5 |"))
    cells = [c.strip() for c in row_05.strip("|").split("|")]
    assert cells[2] == "2" and cells[4] == "66.14"  # n over seeds, the paper's number
    assert " ± " in cells[1] and cells[3].startswith("[")
    row_09 = next(ln for ln in comparison.splitlines() if ln.startswith("| 0.9 |"))
    assert row_09.split("|")[3].strip() == "1" and "63.17" in row_09
    assert "3 job(s) without results" in md
    assert "prune.ratio=1.5,seed=1`: failed: ConfigError" in md
    assert "prune.ratio=0.9,seed=1`: never started" in md
    assert "| dense |" in md

    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_ratio = {r["prune.ratio"]: r for r in rows}
    assert set(by_ratio) == {"dense", "0.5", "0.9"}
    r05 = by_ratio["0.5"]
    assert r05["test/acc/n"] == "2" and float(r05["paper/test/acc"]) == 66.14
    low, mean, high = (float(r05[f"test/acc/{k}"]) for k in ("ci95_low", "mean", "ci95_high"))
    assert low <= mean <= high
    assert abs(float(r05["prune/sparsity/mean"]) - 0.5) < 1e-3

    for name in ("accuracy_vs_remaining", "convergence", "per_class", "confusion"):
        with Image.open(out / f"{name}.png") as image:
            assert image.size[0] > 300 and image.size[1] > 200, name

    # The same folder twice, or a folder and one of its jobs: each job counts once.
    twice = tmp_path / "twice"
    job = str(sweep / "prune.ratio=0.5,seed=1")
    assert report.main([str(sweep), str(sweep), job, "--out", str(twice)]) == 0
    md_twice = (twice / "report.md").read_text()
    assert "3 finished job(s), 3 without usable results" in md
    assert "3 finished job(s), 3 without usable results" in md_twice
    assert md_twice.count("prune.ratio=1.5,seed=1`: failed") == 1


def test_a_crashed_job_is_named_with_its_exception(tmp_path, monkeypatch):
    # A job that raised: the report gives the exception's own line, from failed.json, or from
    # the job's log where an older version wrote no failed.json for a single run.
    from fer_lottery.experiment import runner

    runs = tmp_path / "runs"
    run_cli(
        *TINY_SYNTHETIC_BATCH32,
        "trainer.max_epochs=1",
        f"hydra.run.dir={runs / 'ok'}",
        cwd=tmp_path,
    )

    def crash(*_args, **_kwargs):
        raise RuntimeError("the dense stage ran out of cheese")

    monkeypatch.setattr(runner, "dense_stage", crash)
    for name in ("crashed", "crashed_older"):
        proc = run_cli(
            *TINY_SYNTHETIC_BATCH32, f"hydra.run.dir={runs / name}", cwd=tmp_path, check=False
        )
        assert proc.returncode == 1 and "out of cheese" in proc.stderr
    failed = json.loads((runs / "crashed" / "failed.json").read_text())
    assert failed["error"] == "RuntimeError: the dense stage ran out of cheese"
    (runs / "crashed_older" / "failed.json").unlink()
    out = tmp_path / "report"
    assert report.main([str(runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "crashed`: failed: RuntimeError: the dense stage ran out of cheese" in md
    assert (
        "crashed_older`: failed: the job failed: RuntimeError: the dense stage ran out of cheese"
        in md
    )


def test_folds_and_seeds_are_repeats_of_one_condition(tmp_path):
    from fer_lottery.report.collect import Job
    from fer_lottery.report.conditions import condition_keys, rows_of

    jobs = []
    for seed in (1, 2):
        for fold in (0, 1, 2):
            for ratio in (0.5, 0.9):
                config = {"seed": seed, "data.fold": fold, "data.folds": 3, "prune.ratio": ratio}
                config |= {"prune.method": "magnitude", "prune.distinctiveness.angle": 15.0}
                acc = 0.5 + 0.01 * fold + 0.02 * seed - 0.1 * (ratio == 0.9)
                results = {"test/acc": acc, "prune/sparsity": ratio, "data/n_test": 100}
                jobs.append(Job(tmp_path / f"{seed}{fold}{ratio}", results, config))
    keys = condition_keys(jobs)
    assert keys == ["prune.ratio"]
    rows = rows_of(jobs, keys)
    assert [r.values["prune.ratio"] for r in rows] == [0.5, 0.9]
    assert [r.stats["test/acc"].n for r in rows] == [6, 6]
    assert math.isclose(rows[0].stats["test/acc"].mean, 0.5 + 0.01 + 0.03)
