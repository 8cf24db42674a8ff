"""Sweeps under other Hydra launchers and the Optuna sweeper, as real small runs.

- joblib and submitit_local: two jobs of a preset at once share one dense fine-tune;
- the SLURM preset (conf/hydra/launcher/slurm.yaml): composed, and its sbatch script rendered by
  submitit itself (no cluster here, so nothing is submitted);
- hparams_search=lr_optuna: a 3-trial search writes optimization_results.yaml.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fer_lottery.config import CONF_DIR, register_configs
from tests.helpers import run_cli

register_configs()

# Two small jobs of paper A's Table 2 preset: prune.ratio=0.5,seed=1 and prune.ratio=0.9,seed=1;
# debug=tiny shrinks the preset (its batch size of 64 stays), 1 epoch per stage.
PRESET_SWEEP = [
    "-m",
    "experiment=paper_a_table2",
    "debug=tiny",
    "trainer.max_epochs=1",
    "retrain.epochs=1",
    "seed=1",
    "prune.ratio=0.5,0.9",
]
JOBS = ["prune.ratio=0.5,seed=1", "prune.ratio=0.9,seed=1"]


def job_results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def assert_one_dense_run(sweep: Path, cache: Path) -> None:
    results = job_results(sweep)
    assert sorted(results) == JOBS
    assert sorted(r["dense/cache"] for r in results.values()) == ["hit", "miss"]
    assert len({r["dense/test/acc"] for r in results.values()}) == 1
    assert len(list((cache / "dense").glob("*/best.pt"))) == 1
    for name, r in results.items():
        assert abs(r["prune/sparsity"] - float(name.split(",")[0].split("=")[1])) < 0.001


@pytest.mark.slow
def test_joblib_runs_preset_jobs_in_parallel_with_one_dense_run(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        *PRESET_SWEEP,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        process=True,  # joblib's workers outlive a call, keeping its environment
    )
    assert_one_dense_run(sweep, tmp_path / "cache")
    # Each worker says how far the sweep has come when its job ends.
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("sweep sweep: ")]
    assert len(lines) == 2, proc.stdout[-3000:]
    assert any("2 of 2 jobs done" in ln and "nothing left" in ln for ln in lines)

    # A joblib worker gives the numbers the same job gives alone (same thread count, same
    # seeds), whichever of the two workers trained the dense model.
    alone_dir = tmp_path / "alone"
    single = [o for o in PRESET_SWEEP if o not in ("-m", "prune.ratio=0.5,0.9")]
    run_cli(*single, "prune.ratio=0.9", f"hydra.run.dir={alone_dir}", cwd=alone_dir.parent)
    alone = json.loads((alone_dir / "results.json").read_text())
    worker = job_results(sweep)["prune.ratio=0.9,seed=1"]
    assert worker["torch/threads"] == alone["torch/threads"]
    for key in ("test/acc", "test/confusion", "val/acc_best", "dense/test/acc"):
        assert worker[key] == alone[key], key


@pytest.mark.slow
def test_submitit_local_runs_preset_jobs_at_once_with_one_dense_run(tmp_path):
    """submitit's local executor starts every job of the array at once, as its own process."""
    sweep = tmp_path / "sweep"
    run_cli(
        *PRESET_SWEEP,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert_one_dense_run(sweep, tmp_path / "cache")

    # submitit_folder defaults to <sweep dir>/.submitit/%j: one folder per job, named by its pid.
    logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2, logs
    texts = [log.read_text() for log in logs]
    assert all("Job completed successfully" in t for t in texts)
    assert sum("dense cache miss" in t for t in texts) == 1

    def stamp(text: str, event: str) -> str:
        found = re.search(rf"submitit INFO \(([^)]+)\) - {event}", text)
        assert found, event
        return found.group(1)

    starts = [stamp(t, "Starting with JobEnvironment") for t in texts]
    ends = [stamp(t, "Job completed successfully") for t in texts]
    assert max(starts) < min(ends)  # both jobs ran at the same time


def compose_slurm(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["experiment=paper_a_table2", "hydra/launcher=slurm", *overrides],
            return_hydra_config=True,
        )


def test_slurm_preset_composes_to_submitit_slurm_launcher(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_PARTITION", raising=False)
    cfg = compose_slurm(f"hydra.sweep.dir={tmp_path}")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # submitit's SlurmLauncher, after a check that the partition fits the request (sinfo).
    assert launcher["_target_"] == "hydra_plugins.fer_lottery_slurm.FittedSlurmLauncher"
    expected = {
        "partition": "gpu",
        "gpus_per_node": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 8,
        "mem_gb": 32,
        "timeout_min": 240,
        "array_parallelism": 16,
        "setup": ["export FER_LOTTERY_ACCELERATOR=gpu"],
        "additional_parameters": {},
        "name": "fer_lottery",
        "submitit_folder": f"{tmp_path}/.submitit/%j",
    }
    assert {k: launcher[k] for k in expected} == expected
    # The preset's sweep is untouched: 5 seeds x 5 ratios.
    assert set(cfg.hydra.sweeper.params) == {"seed", "prune.ratio"}

    monkeypatch.setenv("SLURM_PARTITION", "a100")
    assert compose_slurm().hydra.launcher.partition == "a100"
    cfg = compose_slurm("hydra.launcher.partition=debug", "hydra.launcher.timeout_min=120")
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.timeout_min) == ("debug", 120)


def test_slurm_preset_renders_sbatch_lines(monkeypatch, tmp_path):
    """The sbatch script submitit would submit for paper_a_table2's 25 jobs, not submitted.

    submitit's SlurmExecutor refuses to start where no ``srun`` is on PATH; a stand-in that is
    never run satisfies that check. The parameters go to submitit as the launcher's ``launch``
    passes them.
    """
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_PARTITION", "gpu-long")

    cfg = compose_slurm(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "FittedSlurmLauncher"
    params = dict(launcher.params)

    # As SlurmLauncher.launch builds its executor.
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    slurm = executor._executor
    slurm.parameters["map_count"] = 25  # the preset's 5 seeds x 5 ratios, as one job array
    sbatch = slurm._make_submission_file_text("python -m submitit.core._submit", "uid")

    lines = set(sbatch.splitlines())
    for line in (
        "#SBATCH --partition=gpu-long",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=240",
        "#SBATCH --array=0-24%16",
        "#SBATCH --job-name=fer_lottery",
    ):
        assert line in lines, f"{line} not in\n{sbatch}"
    assert f"{tmp_path / 'sweep'}/.submitit/%A_%a/%A_%a_0_log.out" in sbatch
    # Before srun: the jobs ask for a GPU, so one that finds none fails instead of crawling.
    assert sbatch.index("export FER_LOTTERY_ACCELERATOR=gpu") < sbatch.index("srun")


@pytest.mark.slow
def test_optuna_lr_search_writes_best_params(tmp_path):
    """3 Optuna trials (1 or 2 epochs); the best value is the best trial's val/acc_best."""
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        "hparams_search=lr_optuna",
        "debug=tiny",
        "trainer.enable_progress_bar=true",  # debug=tiny turns it off; these trials show it
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=range(1,2)",  # narrows the preset's range; Optuna includes the end
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optim.lr", "trainer.max_epochs"}
    assert 1e-4 <= best["best_params"]["optim.lr"] <= 1e-1
    assert best["best_params"]["trainer.max_epochs"] in (1, 2)
    assert 0.0 <= best["best_value"] <= 1.0

    results = list(job_results(sweep).values())
    assert len(results) == 3
    lrs = [r["config"]["optim"]["lr"] for r in results]
    assert len(set(lrs)) == 3 and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    assert {r["config"]["trainer"]["max_epochs"] for r in results} <= {1, 2}
    # The objective is val/acc_best (never a test metric), and the best trial is reported.
    assert best["best_value"] == pytest.approx(max(r["val/acc_best"] for r in results))
    chosen = [r for r in results if r["config"]["optim"]["lr"] == best["best_params"]["optim.lr"]]
    assert len(chosen) == 1
    assert chosen[0]["val/acc_best"] == pytest.approx(best["best_value"])
    # Trial folders name the searched keys only (Optuna writes no multirun.yaml of its own).
    names = sorted(p.name for p in sweep.iterdir() if (p / "results.json").is_file())
    assert all(n.startswith("optim.lr=") and "trainer.max_epochs=" in n for n in names), names
    assert not any("data.image_size" in n for n in names), names
