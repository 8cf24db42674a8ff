"""End-to-end runs of `python -m fer_lottery` (its entry function, in-process, or a real process
where a launcher's workers need one), at small sizes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer_lottery import report
from fer_lottery.core.classes import CLASSES
from fer_lottery.job.progress import duration
from tests.helpers import TINY_SFEW, TINY_SYNTHETIC, TINY_SYNTHETIC_BATCH32, run_cli


def tb_tags(folder: Path) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {"scalars": [], "images": [], "tensors": []}
    for events in folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events)).Reload().Tags()
        for kind in tags:
            tags[kind] += acc.get(kind, [])
    return tags


def test_synthetic_run_writes_results_and_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        *TINY_SYNTHETIC_BATCH32,
        "data.synthetic.per_class=12",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert "Held-out test accuracy" in proc.stdout
    results = json.loads((run_dir / "results.json").read_text())
    # One model line of our own, with the counts results.json has; no Lightning table, no advert.
    (line,) = [ln for ln in proc.stdout.splitlines() if "] - model: " in ln]
    assert f"{results['params/total'] / 1e6:.2f} M parameters" in line
    assert f"{results['flops/total'] / 1e6:.1f} M MACs per 32 px image" in line
    assert "Total FLOPs" not in proc.stdout and "Tip:" not in proc.stdout + proc.stderr
    for key in (
        "test/acc",
        "val/acc_best",
        "dense/test/acc",
        "dense/val/acc_best",
        "time/dense_s",
        "params/total",
        "data/n_test",
    ):
        assert key in results, key
    assert 0.0 <= results["test/acc"] <= 1.0
    # This job trained the dense stage (a fresh cache), so it ran its test pass.
    assert results["dense/cache"] == "miss" and 0 < results["time/test_s"] < results["time/total_s"]
    for name in CLASSES:
        for kind in ("precision", "recall", "specificity"):
            assert 0.0 <= results[f"test/{kind}/{name}"] <= 1.0
    confusion = results["test/confusion"]
    assert len(confusion) == 7 and all(len(row) == 7 for row in confusion)
    assert sum(map(sum, confusion)) == results["data/n_test"] == 14 and results["data/n_train"] > 0
    # The test accuracy is the confusion matrix's diagonal: the test really ran on that split.
    diag = sum(confusion[i][i] for i in range(7))
    assert abs(results["test/acc"] - diag / results["data/n_test"]) < 1e-6
    assert results["config"]["data"]["name"] == "synthetic"
    assert results["model/init"] == "random"

    split = json.loads((run_dir / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])

    tags = tb_tags(run_dir / "tb" / "dense")
    assert {"train/loss", "val/acc", "val/acc_best"} <= set(tags["scalars"])
    assert "test/confusion" in tags["images"]
    assert (run_dir / "tb" / "dense" / "hparams.yaml").is_file()
    assert (run_dir / "csv" / "dense" / "metrics.csv").read_text().startswith("epoch")
    assert (run_dir / "confusion_dense.png").stat().st_size > 1000


def test_lightning_s_model_summary_is_behind_a_setting(tmp_path):
    proc = run_cli(
        *TINY_SYNTHETIC,
        "trainer.max_epochs=1",
        "trainer.enable_model_summary=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert "Trainable params" in proc.stdout and "Tip:" not in proc.stdout


def test_same_seed_gives_same_results_on_cpu(tmp_path):
    accs = []
    for name in ("a", "b"):
        run_cli(
            *TINY_SYNTHETIC_BATCH32,
            "cache_dense=false",  # train twice, do not reuse the first run
            "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path / name}",
            cwd=tmp_path,
        )
        accs.append(json.loads((tmp_path / name / "results.json").read_text()))
    assert accs[0]["test/confusion"] == accs[1]["test/confusion"]
    assert accs[0]["val/acc_best"] == accs[1]["val/acc_best"]
    assert (tmp_path / "a/split.json").read_text() == (tmp_path / "b/split.json").read_text()


def test_missing_root_is_one_clear_message(tmp_path):
    missing = tmp_path / "no_such_SFEW"
    proc = run_cli(
        f"data.root={missing}",
        *TINY_SFEW,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert str(missing) in out and "data=synthetic" in out
    assert "Traceback" not in out


def test_out_of_range_config_fails_before_work(tmp_path):
    proc = run_cli(
        "model=alexnet",
        "model.frozen_layers=9",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "model.frozen_layers=9" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "r" / "results.json").exists()


def test_sfew_layout_real_frames_then_cached_crops(tmp_path, sfew_frames):
    """Real 720x576 frames through real MTCNN; the second identical run detects nothing."""
    args = (f"data.root={sfew_frames}", *TINY_SFEW, "data.image_size=64", "trainer.max_epochs=1")
    first = run_cli(*args, f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    r1 = json.loads((tmp_path / "first" / "results.json").read_text())
    assert r1["data/faces_detected"] == 17 and r1["data/faces_fallback"] == 4
    assert r1["data/faces_manual"] == 0 and r1["data/unreadable"] == 0
    assert r1["data/crop_cache_hits"] == 0
    assert "detected 17" in first.stdout + first.stderr

    second = run_cli(*args, f"hydra.run.dir={tmp_path / 'second'}", cwd=tmp_path)
    r2 = json.loads((tmp_path / "second" / "results.json").read_text())
    assert r2["data/crop_cache_hits"] == 21
    assert "no face detection needed" in second.stdout + second.stderr
    assert (r2["data/faces_detected"], r2["data/faces_fallback"]) == (17, 4)
    split_1, split_2 = (tmp_path / run / "split.json" for run in ("first", "second"))
    assert split_1.read_text() == split_2.read_text()


def test_alexnet_on_sfew_layout(tmp_path, sfew_frames, crop_cache):
    """AlexNet end to end on the same frames (crops from the shared cache), with freezing."""
    run_cli(
        f"data.root={sfew_frames}",
        "model=alexnet",
        "model.frozen_layers=5",
        *TINY_SFEW,
        "data.image_size=64",
        "trainer.max_epochs=1",
        f"cache_dir={crop_cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["model"]["name"] == "alexnet"
    assert results["params/trainable"] < results["params/total"]
    assert results["data/n_train"] + results["data/n_val"] + results["data/n_test"] == 21


@pytest.mark.slow
def test_prune_ratio_multirun_trains_dense_once(tmp_path, capsys):
    """`-m prune.ratio=0.5,0.9`: one dense fine-tune, two pruned jobs with exact sparsity."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        *TINY_SYNTHETIC_BATCH32,
        "data.synthetic.per_class=10",
        "prune.ratio=0.5,0.9",
        "retrain.rewind=pretrained",
        "retrain.epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.startswith("prune"))
    assert [p.name for p in jobs] == ["prune.ratio=0.5", "prune.ratio=0.9"]
    results = [json.loads((p / "results.json").read_text()) for p in jobs]
    assert [r["dense/cache"] for r in results] == ["miss", "hit"]
    for ratio, r in zip((0.5, 0.9), results, strict=True):
        assert abs(r["prune/sparsity"] - ratio) < 0.001
        assert r["params/nonzero"] < r["params/total"]
        assert r["flops/nonzero"] < r["flops/total"]
        assert r["dense/test/acc"] == results[0]["dense/test/acc"]
        assert (p := sweep / f"prune.ratio={ratio}" / "tb" / "dense").is_dir(), p
        job = sweep / f"prune.ratio={ratio}"
        assert (job / "weights.pt").is_file() and not (job / "checkpoints").exists()
        assert {"val/acc"} <= set(
            tb_tags(sweep / f"prune.ratio={ratio}" / "tb" / "retrain")["scalars"]
        )
    assert "dense cache hit" in proc.stdout + proc.stderr
    split = {(p / "split.json").read_text() for p in jobs}
    assert len(split) == 1
    # After each job, how far the sweep has come, estimated from the finished jobs' own times:
    # the first trained the dense model, the second found it in the cache.
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("sweep sweep: ")]
    assert len(lines) == 2, proc.stdout[-2000:]
    assert (
        lines[0].startswith("sweep sweep: 1 of 2 jobs done; ")
        and "left (a dense training ~" in lines[0]
    )
    assert lines[1].startswith("sweep sweep: 2 of 2 jobs done; ") and "nothing left" in lines[1]

    # The table: a dense row, one row per ratio, and a job that died listed, not dropped.
    (sweep / "prune.ratio=0.99" / ".hydra").mkdir(parents=True)
    assert report.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| dense |" in out and "\n| 0.5 | " in out and "\n| 0.9 | " in out
    total = sum(r["time/total_s"] for r in results)
    assert f"Sweep `{sweep}`: started " in out and f"took {duration(total)} of compute" in out
    assert "1 job(s) without results" in out and "prune.ratio=0.99`: no results.json" in out


@pytest.mark.slow
def test_imp_rewind_epoch_and_distinctiveness_share_one_dense_run(tmp_path):
    """IMP with rewind to epoch 1, then distinctiveness, on the same cached dense model."""
    base = (*TINY_SYNTHETIC_BATCH32, "data.synthetic.per_class=10", "retrain.epochs=1")
    run_cli(
        *base,
        "prune.ratio=0.9",
        "prune.iterations=2",
        "retrain.rewind=epoch",
        "retrain.rewind_epoch=1",
        f"hydra.run.dir={tmp_path / 'imp'}",
        cwd=tmp_path,
    )
    imp = json.loads((tmp_path / "imp" / "results.json").read_text())
    assert abs(imp["round1/prune/sparsity"] - (1 - 0.1**0.5)) < 0.001
    assert (
        abs(imp["round2/prune/sparsity"] - 0.9) < 0.001 and abs(imp["prune/sparsity"] - 0.9) < 0.001
    )
    assert imp["test/acc"] == imp["round2/test/acc"]
    assert (tmp_path / "imp" / "tb" / "retrain1").is_dir() and (
        tmp_path / "imp" / "tb" / "retrain2"
    ).is_dir()

    run_cli(
        *base,
        "prune.method=distinctiveness",
        "prune.distinctiveness.angle=60",
        f"hydra.run.dir={tmp_path / 'dist'}",
        cwd=tmp_path,
    )
    dist = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert dist["dense/cache"] == "miss"  # rewind=epoch above keyed its own dense run (theta_k)
    assert 0 < dist["prune/units_removed_frac"] < 1
    removed = sum(v for k, v in dist.items() if k.startswith("prune/units_removed/"))
    assert removed == dist["prune/units_removed"]
    assert dist["prune/sparsity"] > 0 and "prune/acc_before_retrain" in dist


@pytest.mark.slow
def test_parallel_jobs_wait_for_one_dense_run(tmp_path):
    """Two jobs at once (joblib launcher): one trains the dense model, the other waits for it."""
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY_SYNTHETIC_BATCH32,
        "data.synthetic.per_class=10",
        "prune.ratio=0.5,0.9",
        "retrain.epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        process=True,  # joblib's workers outlive a call, keeping its environment
    )
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert sorted(r["dense/cache"] for r in results) == ["hit", "miss"]
    assert len({r["dense/test/acc"] for r in results}) == 1
    assert len(list((tmp_path / "cache" / "dense").glob("*/best.pt"))) == 1


def test_an_in_process_cli_run_leaves_no_job_state_behind(tmp_path):
    """run_cli in-process puts back what a job sets process-wide, so the next test's job does not
    inherit its launcher, overrides, signal handlers or thread count."""
    import signal

    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    before = (
        signal.getsignal(signal.SIGTERM),
        signal.getsignal(signal.SIGINT),
        torch.get_num_threads(),
        os.getcwd(),
    )
    run_cli(
        "-m",
        *TINY_SYNTHETIC_BATCH32,
        "trainer.max_epochs=1",
        "threads=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert len(list((tmp_path / "sweep").glob("*/results.json"))) == 1
    assert not HydraConfig.initialized() and not GlobalHydra.instance().is_initialized()
    after = (
        signal.getsignal(signal.SIGTERM),
        signal.getsignal(signal.SIGINT),
        torch.get_num_threads(),
        os.getcwd(),
    )
    assert after == before
    assert os.environ.get("FER_LOTTERY_CACHE") != str(tmp_path / "cache")  # the job's env


def test_a_relaunched_sweep_counts_only_its_own_jobs(tmp_path):
    # A job folder of an earlier launch with another value is no job of this sweep: it neither
    # fails the relaunch nor counts in its progress, and a job whose old results are about to
    # be replaced (another setting) counts only once it has run again.
    sweep = tmp_path / "sweep"
    job = ("-m", *TINY_SYNTHETIC, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}")
    first = run_cli(*job, "prune.ratio=0.5,1.5", "retrain.epochs=0", cwd=tmp_path, check=False)
    assert first.returncode == 1 and (sweep / "prune.ratio=1.5" / "failed.json").is_file()
    again = run_cli(*job, "prune.ratio=0.5,0.9", "retrain.epochs=0", cwd=tmp_path)
    lines = [ln for ln in again.stdout.splitlines() if ln.startswith("sweep sweep: ")]
    assert [ln.split(";")[0] for ln in lines] == [
        "sweep sweep: 1 of 2 jobs done",  # prune.ratio=0.5, finished before: skipped
        "sweep sweep: 2 of 2 jobs done",
    ]
    changed = run_cli(*job, "prune.ratio=0.5,0.9", "retrain.epochs=1", cwd=tmp_path)
    lines = [ln for ln in changed.stdout.splitlines() if ln.startswith("sweep sweep: ")]
    assert lines[0].startswith("sweep sweep: 1 of 2 jobs done"), lines


def test_a_tracker_option_without_its_tracker_is_one_line(tmp_path):
    proc = run_cli("debug=tiny", "logger.mlflow.experiment_name=mine", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fer_lottery: logger.mlflow.experiment_name is set, but logger=tensorboard,csv does not "
        "add mlflow: add it, e.g. logger=[tensorboard,csv,mlflow], or drop "
        "logger.mlflow.experiment_name"
    ]
