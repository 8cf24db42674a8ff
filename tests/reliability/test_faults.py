"""Fault injection: real jobs killed (SIGKILL) or terminated (SIGTERM) at exact points, rerun,
and compared with an uninterrupted run of the same config.

``FER_LOTTERY_FAULT=<point>=<signal>`` makes the job signal itself when it reaches ``<point>``
(``fer_lottery.job.faults``). The rerun is the same command; its numbers, its per-epoch CSV rows and
its TensorBoard scalars must equal the uninterrupted run's.
"""

from __future__ import annotations

import functools
import json
import signal
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests import helpers
from tests.helpers import TINY_SYNTHETIC

# TINY_SYNTHETIC (3 training batches per epoch), 3 dense and 2 retraining epochs, a resumable
# checkpoint after every epoch.
JOB = [
    *TINY_SYNTHETIC,
    "trainer.max_epochs=3",
    "retrain.epochs=2",
    "trainer.checkpoint_every_n_epochs=1",
]

# ``python -m fer_lottery`` in ``cwd=`` with its own cache, a fault if given (``fault=``,
# ``once=``); these jobs get 900 s, not the default 600.
run_cli = functools.partial(helpers.run_cli, timeout=900)


def numbers(run_dir: Path) -> dict:
    """Every metric of a job (not timings, cache states or the config)."""
    results = json.loads((run_dir / "results.json").read_text())
    prefixes = (
        "test/",
        "val/",
        "dense/test/",
        "dense/val/",
        "prune/",
        "params/",
        "flops/",
        "data/",
    )
    return {k: v for k, v in results.items() if k.startswith(prefixes) and "cache" not in k}


def scalars(folder: Path) -> dict:
    """Each scalar curve of a stage as its (step, value) points, in step order: a curve is the
    same whichever of the stage's event files (read in name order: the name holds a per-process
    file counter, whose text order flips at 9 -> 10) holds a point. A point written twice (an
    epoch logged again after a resume) still counts twice."""
    acc = EventAccumulator(str(folder)).Reload()
    tags = [t for t in acc.Tags()["scalars"] if "time/" not in t]  # time/..., hp/time/...
    return {t: sorted((e.step, e.value) for e in acc.Scalars(t)) for t in tags}


def same_run(resumed: Path, reference: Path, stages=("dense", "retrain")) -> None:
    assert numbers(resumed) == numbers(reference)
    for stage in stages:
        csv = f"csv/{stage}/metrics.csv"
        assert (resumed / csv).read_text() == (reference / csv).read_text(), csv
        assert scalars(resumed / "tb" / stage) == scalars(reference / "tb" / stage), stage


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run: dense fine-tune, magnitude pruning at 50%, retraining."""
    cwd = tmp_path_factory.mktemp("reference")
    run_cli(*JOB, "prune.ratio=0.5", f"hydra.run.dir={cwd / 'run'}", cwd=cwd)
    return cwd / "run"


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    ["dense/epoch1/batch1", "prune", "retrain/epoch1/batch0", "results"],
)
def test_a_killed_job_resumes_to_the_same_numbers_curves_and_events(tmp_path, reference, point):
    run_dir = tmp_path / "run"
    args = (*JOB, "prune.ratio=0.5", f"hydra.run.dir={run_dir}")
    killed = run_cli(*args, cwd=tmp_path, check=False, fault=f"{point}=KILL")
    assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists()
    again = run_cli(*args, cwd=tmp_path)
    log = again.stdout + again.stderr
    if point.startswith(("dense/", "retrain/")):
        stage = point.split("/")[0]
        assert f"{stage}: resuming after epoch 0" in log  # resumed, not redone
    if point == "dense/epoch1/batch1":
        assert "dense cache resumed" in log
    if point == "results":  # killed after its last stage: that stage is not trained again
        assert "retrain: finished in an earlier attempt of this job" in log
        assert "retrain: best val/acc" not in log  # logged only by a stage that trains
    same_run(run_dir, reference)
    assert not list(run_dir.glob(".results.json.*"))  # no temp file left from the kill
    assert not (run_dir / "checkpoints" / "retrain" / "last.ckpt").exists()


@pytest.mark.slow
def test_a_sparser_checkpoint_interval_reruns_the_lost_epochs_to_the_same_numbers(
    tmp_path, reference
):
    """Checkpoints every 2 epochs: a kill in epoch 2 resumes after epoch 1 and runs epoch 2
    again, ending with the numbers, CSV rows and events of the run that saved every epoch."""
    run_dir = tmp_path / "run"
    job = [o for o in JOB if not o.startswith("trainer.checkpoint_every_n_epochs")]
    args = (*job, "trainer.checkpoint_every_n_epochs=2", "prune.ratio=0.5")
    args = (*args, f"hydra.run.dir={run_dir}")
    killed = run_cli(*args, cwd=tmp_path, check=False, fault="dense/epoch2/batch1=KILL")
    assert killed.returncode == -signal.SIGKILL
    (ckpt,) = (tmp_path / "cache" / "dense").glob("*.partial/checkpoints/dense/last.ckpt")
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == 1
    again = run_cli(*args, cwd=tmp_path)
    assert "dense: resuming after epoch 1" in again.stdout + again.stderr
    same_run(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize(("every_s", "resumes"), [(0.001, True), (300, False)])
def test_a_time_based_checkpoint_interval_resumes_exactly(tmp_path, reference, every_s, resumes):
    """``trainer.checkpoint_every_s`` alone (the default kind): with a tiny interval a kill in
    epoch 2 resumes after epoch 1; with the default 300 s these short epochs wrote none, so the
    rerun starts the stage over. Both end with the numbers, CSV rows and events of the run that
    saved every epoch."""
    run_dir = tmp_path / "run"
    job = [o for o in JOB if not o.startswith("trainer.checkpoint_every_n_epochs")]
    args = (*job, "trainer.checkpoint_every_n_epochs=0", f"trainer.checkpoint_every_s={every_s}")
    args = (*args, "prune.ratio=0.5", f"hydra.run.dir={run_dir}")
    killed = run_cli(*args, cwd=tmp_path, check=False, fault="dense/epoch2/batch1=KILL")
    assert killed.returncode == -signal.SIGKILL
    ckpts = list((tmp_path / "cache" / "dense").glob("*.partial/checkpoints/dense/last.ckpt"))
    assert len(ckpts) == int(resumes)
    again = run_cli(*args, cwd=tmp_path)
    assert ("dense: resuming after epoch 1" in again.stdout + again.stderr) == resumes
    same_run(run_dir, reference)


def _tag_as_cuda(ckpt: Path) -> None:
    """Rewrite a checkpoint as a GPU job would have saved it: every storage tagged ``cuda:0``
    (the location string in torch's pickle), the bytes unchanged."""
    import zipfile

    with zipfile.ZipFile(ckpt) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    tmp = ckpt.with_suffix(".cuda")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as out:
        for info, data in entries:
            out.writestr(
                info, data.replace(cpu, cuda) if info.filename.endswith("data.pkl") else data
            )
    tmp.replace(ckpt)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine")
def test_a_checkpoint_written_on_a_gpu_resumes_on_a_cpu_only_machine(tmp_path, reference):
    """A job pre-empted on a GPU node and requeued on a CPU-only one: its last.ckpt holds
    CUDA-tagged tensors, which a plain torch.load refuses here; the stage resumes from it."""
    run_dir = tmp_path / "run"
    args = (*JOB, "prune.ratio=0.5", f"hydra.run.dir={run_dir}")
    killed = run_cli(*args, cwd=tmp_path, check=False, fault="dense/epoch2/batch1=KILL")
    assert killed.returncode == -signal.SIGKILL
    (ckpt,) = (tmp_path / "cache" / "dense").glob("*.partial/checkpoints/dense/last.ckpt")
    _tag_as_cuda(ckpt)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(ckpt, weights_only=False)
    again = run_cli(*args, cwd=tmp_path)
    assert "dense: resuming after epoch 1" in again.stdout + again.stderr
    same_run(run_dir, reference)


# JOB with the default, time-based checkpoint interval (300 s): these short epochs write none
# unless a signal asks for one.
JOB_DEFAULT_INTERVAL = [o for o in JOB if not o.startswith("trainer.checkpoint_every_n_epochs")]


@pytest.mark.slow
def test_sigterm_finishes_the_epoch_writes_a_checkpoint_exits_143_and_the_rerun_resumes(
    tmp_path, reference
):
    """What SLURM sends on pre-emption or timeout, in a sweep job: never a silent success.
    In the middle of epoch 1 of short epochs, under the default interval (no checkpoint yet),
    the job finishes the epoch, writes a checkpoint after it, and stops; the rerun resumes
    after epoch 1 to the uninterrupted numbers, curves and events."""
    sweep = tmp_path / "sweep"
    args = ("-m", *JOB_DEFAULT_INTERVAL, "prune.ratio=0.5", f"hydra.sweep.dir={sweep}")
    terminated = run_cli(*args, cwd=tmp_path, check=False, fault="dense/epoch1/batch1=TERM")
    assert terminated.returncode == 143, terminated.stderr[-2000:]
    output = terminated.stdout + terminated.stderr
    assert "received SIGTERM: stopping at the end of this epoch" in output
    assert "wrote a checkpoint after epoch 1" in output
    (job,) = [p.parent for p in sweep.glob("*/failed.json")]  # one job: its folder is "job"
    failed = json.loads((job / "failed.json").read_text())
    assert failed["reason"] == "terminated (pre-empted)"
    assert "terminated (pre-empted)" in output
    assert not (job / "results.json").exists()
    assert list((tmp_path / "cache" / "dense").glob("*.partial/checkpoints/dense/last.ckpt"))

    again = run_cli(*args, cwd=tmp_path)
    assert "dense: resuming after epoch 1" in again.stdout + again.stderr
    assert not (job / "failed.json").exists()
    same_run(job, reference)


@pytest.mark.slow
def test_sigusr2_writes_a_checkpoint_and_training_goes_on(tmp_path, reference):
    """``sbatch --signal=USR2@120``: a checkpoint at the end of the epoch, and the job trains
    on. A kill two epochs later then resumes from that checkpoint, to the same numbers."""
    run_dir = tmp_path / "run"
    args = (*JOB_DEFAULT_INTERVAL, "prune.ratio=0.5", f"hydra.run.dir={run_dir}")
    faults = "dense/epoch0/batch1=USR2,dense/epoch2/batch0=KILL"
    killed = run_cli(*args, cwd=tmp_path, check=False, fault=faults)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "wrote a checkpoint after epoch 0" in killed.stdout + killed.stderr
    again = run_cli(*args, cwd=tmp_path)
    assert "dense: resuming after epoch 0" in again.stdout + again.stderr
    same_run(run_dir, reference)


@pytest.mark.slow
def test_ctrl_c_exits_130_says_how_to_resume_and_the_rerun_resumes(tmp_path, reference):
    """SIGINT in the middle of an epoch: status 130 (not Lightning's 1) and the resume line."""
    run_dir = tmp_path / "run"
    args = (*JOB, "prune.ratio=0.5", f"hydra.run.dir={run_dir}")
    interrupted = run_cli(*args, cwd=tmp_path, check=False, fault="dense/epoch1/batch1=INT")
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    assert "interrupted (Ctrl-C)" in interrupted.stderr
    assert "Run the same command again to resume it" in interrupted.stderr
    assert not (run_dir / "results.json").exists()
    again = run_cli(*args, cwd=tmp_path)
    assert "dense: resuming after epoch 0" in again.stdout + again.stderr
    same_run(run_dir, reference)


@pytest.mark.slow
def test_a_job_killed_while_cropping_faces_resumes_to_the_same_numbers(tmp_path, sfew_frames):
    # JOB's sizes on the SFEW-layout frames (data=sfew beats debug=tiny's data=synthetic).
    args = (*JOB, "data=sfew", f"data.root={sfew_frames}", "data.image_size=48")
    args = (*args, "trainer.max_epochs=1")
    run_cli(*args, f"hydra.run.dir={tmp_path / 'ref' / 'run'}", cwd=tmp_path / "ref")
    cwd, run_dir = tmp_path / "killed", tmp_path / "killed" / "run"
    killed = run_cli(*args, f"hydra.run.dir={run_dir}", cwd=cwd, check=False, fault="crops/5=KILL")
    assert killed.returncode == -signal.SIGKILL
    assert len(list((cwd / "cache" / "crops").glob("*.npz"))) == 5
    run_cli(*args, f"hydra.run.dir={run_dir}", cwd=cwd)
    resumed = json.loads((run_dir / "results.json").read_text())
    assert resumed["data/crop_cache_hits"] == 5
    same_run(run_dir, tmp_path / "ref" / "run", stages=("dense",))


@pytest.mark.slow
def test_a_joblib_sweep_survives_the_dense_lock_holder_being_killed(tmp_path, reference):
    """The job training the dense model (and holding its lock) is killed: no deadlock, and the
    rerun takes over the unfinished entry; one dense entry, every job's results valid."""
    sweep = tmp_path / "sweep"
    args = (
        "-m",
        *JOB,
        "prune.ratio=0.3,0.5,0.7",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=3",
        f"hydra.sweep.dir={sweep}",
    )
    once = tmp_path / "killed-once"
    first = run_cli(*args, cwd=tmp_path, check=False, fault="dense/epoch1/batch1=KILL", once=once)
    assert once.exists()  # the holder was killed while training the dense model
    # joblib's pool stops all its workers when one dies: the sweep fails fast, never hangs.
    assert first.returncode != 0
    assert "TerminatedWorkerError" in first.stdout + first.stderr
    dense = tmp_path / "cache" / "dense"
    assert list(dense.glob("*.partial"))

    run_cli(*args, cwd=tmp_path, fault="dense/epoch1/batch1=KILL", once=once)
    entries = [p for p in dense.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "metrics.json").is_file()
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    assert sorted(results) == ["prune.ratio=0.3", "prune.ratio=0.5", "prune.ratio=0.7"]
    assert sorted(r["dense/cache"] for r in results.values()).count("hit") == 2
    assert "resumed" in {r["dense/cache"] for r in results.values()}
    assert numbers(sweep / "prune.ratio=0.5") == numbers(reference)


@pytest.mark.slow
def test_submitit_requeues_a_preempted_job_which_resumes(tmp_path, reference):
    """Pre-emption under submitit: its signal (USR2), in the middle of epoch 1 under the
    default interval, waits for the epoch's end and its checkpoint; then submitit calls the
    launcher's ``checkpoint`` and requeues the job, as on SLURM. The requeued job resumes the
    dense stage after epoch 1 and ends with the uninterrupted numbers."""
    sweep = tmp_path / "sweep"
    args = (
        "-m",
        *JOB_DEFAULT_INTERVAL,
        "prune.ratio=0.5",
        "hydra/launcher=submitit_local",
        # submitit counts a signal within 10 min of the time limit as a time-out, earlier as a
        # pre-emption
        "hydra.launcher.timeout_min=30",
        f"hydra.sweep.dir={sweep}",
    )
    once = tmp_path / "preempted-once"
    run_cli(*args, cwd=tmp_path, fault="dense/epoch1/batch1=USR2", once=once)
    assert once.exists()
    log = "\n".join(p.read_text() for p in sweep.glob(".submitit/*/*_0_log.*"))
    assert "this job is preempted" in log and "Requeued job" in log
    assert "wrote a checkpoint after epoch 1" in log
    assert "dense: resuming after epoch 1" in log
    (job,) = [p.parent for p in sweep.glob("*/results.json")]
    same_run(job, reference)


def test_a_rerun_over_an_unusable_results_json_runs_the_job_again(compose_cfg, tmp_path):
    """A relaunched sweep skips finished jobs, but not one whose results.json is broken."""
    from fer_lottery.experiment.folds import run_folds

    cfg = compose_cfg(*JOB, "trainer.max_epochs=1", f"cache_dir={tmp_path / 'cache'}")
    run_dir = tmp_path / "job"
    first = run_folds(cfg, run_dir)
    text = (run_dir / "results.json").read_text()
    (run_dir / "results.json").write_text(text[: len(text) // 3])  # killed mid-copy, say
    again = run_folds(cfg, run_dir)
    assert again["test/acc"] == first["test/acc"]
    assert json.loads((run_dir / "results.json").read_text())["test/acc"] == first["test/acc"]
    assert len(list(run_dir.glob("results.json.unusable-*"))) == 1
