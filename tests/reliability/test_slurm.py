"""The SLURM launcher against a real scheduler (#17): ``make slurm-up`` brings up a one-node
cluster on this machine (``tools/slurm_local.sh``), and these tests submit real sweeps to it
with ``sbatch``, through submitit. Skipped where ``sinfo`` finds no cluster.

- A request that no node of the partition can fit is refused in one line before anything is
  submitted (it would wait in the queue for ever).
- A sweep runs as one job array; its jobs share the dense cache (one trains it, the other hits
  it), and each job's numbers equal the same sweep run by the basic launcher.
- Pre-emption (``scancel --signal=USR2`` of a running task) and a time limit (SLURM's own USR2,
  ``signal_delay_s`` before it) requeue the task, which resumes from its checkpoint and ends
  with the uninterrupted numbers; its log shows the requeue.
- A cancelled task (``scancel``) and a failing one (a bad config value): the sweep ends
  non-zero, names both with their reasons, the other task finishes, and the report lists both.

To signal a task for certain in the middle of an epoch, the task waits there for a signal
(the fault ``dense/epoch1/batch1=PAUSE``, ``fer_lottery.job.faults``) and names itself in the
fault's once-file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import TINY_SYNTHETIC, cli_env, run_cli


def _partition() -> str | None:
    """The cluster's default partition, or None when no SLURM controller answers."""
    if shutil.which("sinfo") is None:
        return None
    proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    names = proc.stdout.split()
    if proc.returncode != 0 or not names:
        return None
    default = [n for n in names if n.endswith("*")]
    return (default or names)[0].rstrip("*")


PARTITION = _partition()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(PARTITION is None, reason="no SLURM cluster here (make slurm-up)"),
]


# The tests' jobs have a name of their own, so that cleaning up cancels nothing else.
NAME = f"fer_lottery_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _no_task_left_behind():
    """A test that fails half-way leaves no task of its sweep running on the cluster."""
    yield
    subprocess.run(["scancel", f"--name={NAME}"], check=False, timeout=60)


# A job the one-node cluster can run: 1 CPU, 2 GB, no GPU, 10 minutes. Asking for no GPU is
# all a CPU partition needs (the preset's setup then demands none).
FITS = (
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.timeout_min=10",
    f"hydra.launcher.name={NAME}",
)


def _largest(field: str) -> int:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", PARTITION, "-o", field], capture_output=True, text=True
    ).stdout
    return max(int(v.split("(")[0]) for v in out.split())


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("hydra.launcher.mem_gb=100000", "hydra.launcher.mem_gb=100000 asks 100000 GB"),
        ("hydra.launcher.cpus_per_task=4096", "hydra.launcher.cpus_per_task=4096 asks 4096 CPUs"),
        ("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node=1: no node of partition"),
        ("hydra.launcher.partition=no_such_partition", "no such partition (sinfo lists: "),
    ],
)
def test_a_request_no_node_fits_is_refused_in_one_line(tmp_path, override, says):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        *TINY_SYNTHETIC,
        *FITS,
        override,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], proc.stderr
    if "mem_gb" in override:
        assert f"offers {_largest('%m') / 1024:.1f} GB".replace(".0 GB", " GB") in lines[0]
    assert not list(sweep.glob(".submitit/*"))  # nothing was submitted


def _numbers(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    keep = ("test/", "val/", "dense/test/", "dense/val/", "prune/", "params/", "data/")
    return {k: v for k, v in results.items() if k.startswith(keep)}


# Three dense epochs, so that a signal in epoch 1 leaves an epoch to resume; two retraining.
JOB = (*TINY_SYNTHETIC, "trainer.max_epochs=3", "retrain.epochs=2", "threads=1")
PAUSE = "dense/epoch1/batch1=PAUSE"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The sweep JOB at prune.ratio=0.5,0.9, uninterrupted, by the basic launcher (its folder)."""
    cwd = tmp_path_factory.mktemp("reference")
    run_cli("-m", *JOB, "prune.ratio=0.5,0.9", f"hydra.sweep.dir={cwd / 'sweep'}", cwd=cwd)
    return cwd / "sweep"


@pytest.mark.slow
def test_a_sweep_runs_as_one_job_array_sharing_the_dense_cache(tmp_path, reference):
    """Two prune ratios through sbatch: one array of two tasks; the dense model is trained once
    and hit once; every job's numbers equal the basic launcher's."""
    sweep = tmp_path / "slurm"
    proc = run_cli(
        "-m", *JOB, "prune.ratio=0.5,0.9", *FITS, f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    # The sweep command says how far it has come as it collects the tasks.
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("sweep slurm: ")]
    assert lines and "2 of 2 jobs done" in lines[-1] and "nothing left" in lines[-1], proc.stdout
    tasks = sorted(p.name for p in sweep.glob(".submitit/[0-9]*_[0-9]*"))  # <array id>_<task>
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1, tasks  # one array
    script = next(sweep.glob(".submitit/[0-9]*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%" in script
    assert "export FER_LOTTERY_ACCELERATOR=auto" in script  # no GPU asked: none demanded
    caches = sorted(
        json.loads((sweep / r / "results.json").read_text())["dense/cache"]
        for r in ("prune.ratio=0.5", "prune.ratio=0.9")
    )
    assert caches == ["hit", "miss"]
    for ratio in ("prune.ratio=0.5", "prune.ratio=0.9"):
        _same_numbers(sweep / ratio, reference / ratio)


def _start(tmp_path: Path, *args: str, once: Path) -> subprocess.Popen:
    """A SLURM sweep in the background whose first job to reach epoch 1 of the dense stage
    waits there for a signal."""
    return subprocess.Popen(
        [sys.executable, "-m", "fer_lottery", "-m", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, fault=PAUSE, once=once),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _paused_task(once: Path, sweep: subprocess.Popen, timeout_s: float = 240) -> str:
    """The array task ("<array id>_<task>") waiting in the middle of its epoch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = once.read_text() if once.exists() else ""
        if "slurm_task=" in text:
            return text.split("slurm_task=")[1].split()[0]
        assert sweep.poll() is None, sweep.communicate()
        time.sleep(0.5)
    sweep.kill()
    raise AssertionError(f"no task paused within {timeout_s} s: {sweep.communicate()}")


def _finish(sweep: subprocess.Popen, timeout_s: float = 300) -> tuple[int, str]:
    out, err = sweep.communicate(timeout=timeout_s)
    return sweep.returncode, out + err


def _task_log(sweep_dir: Path, task: str) -> str:
    return "\n".join(p.read_text() for p in sorted(sweep_dir.glob(f".submitit/{task}/*_log.*")))


def _same_numbers(job: Path, reference: Path) -> None:
    assert _numbers(job) == _numbers(reference)
    for stage in ("dense", "retrain"):
        csv = f"csv/{stage}/metrics.csv"
        assert (job / csv).read_text() == (reference / csv).read_text(), csv


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "launcher", "signal_task", "log_says"),
    [
        # scancel --signal=USR2, more than 10 min before the limit: submitit calls it a
        # pre-emption (it requeues without counting a time-out).
        ("pre-emption", ("hydra.launcher.timeout_min=30",), True, "this job is preempted"),
        # A 2-minute limit and signal_delay_s=60. SLURM checks time limits every 30 s and
        # sends the signal at the first check within signal_delay_s + 30 s of the limit: here
        # 30-60 s after the start, while the task waits mid-epoch (an earlier signal could come
        # before Python has started, and be lost). submitit calls it a time-out and requeues
        # (one of max_num_timeout); the next attempt finishes before its own signal.
        (
            "time limit",
            ("hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60"),
            False,
            "this job is timed-out",
        ),
    ],
)
def test_a_signalled_task_is_requeued_resumes_and_ends_with_the_uninterrupted_numbers(
    tmp_path, reference, case, launcher, signal_task, log_says
):
    sweep_dir, once = tmp_path / "sweep", tmp_path / "paused"
    fits = [o for o in FITS if not o.startswith("hydra.launcher.timeout_min")]
    args = (*JOB, "prune.ratio=0.5", *fits, *launcher, f"hydra.sweep.dir={sweep_dir}")
    start = time.monotonic()
    sweep = _start(tmp_path, *args, once=once)
    task = _paused_task(once, sweep)
    if signal_task:
        subprocess.run(["scancel", "--signal=USR2", task], check=True)
    status, output = _finish(sweep)
    took = time.monotonic() - start
    assert status == 0, output[-3000:]
    log = _task_log(sweep_dir, task)
    assert "received SIGUSR2: stopping at the end of this epoch" in log
    assert "wrote a checkpoint after epoch 1" in log
    assert log_says in log and f"Requeued job {task}" in log
    assert log.count("Starting with JobEnvironment") == 2  # two attempts of one task
    assert "dense: resuming after epoch 1" in log
    _same_numbers(sweep_dir / "job", reference / "prune.ratio=0.5")
    assert took < 180, f"{case}: {took:.0f} s"


@pytest.mark.slow
def test_a_cancelled_task_and_a_failing_task_end_the_sweep_non_zero_and_are_reported(
    tmp_path, reference
):
    """Three tasks: one is cancelled mid-epoch (scancel), one fails (prune.ratio=1.5), one
    finishes. The sweep exits 1 and names both; the report gives each its reason."""
    sweep_dir, once = tmp_path / "sweep", tmp_path / "paused"
    args = (*JOB, "prune.ratio=0.5,0.9,1.5", *FITS, f"hydra.sweep.dir={sweep_dir}")
    sweep = _start(tmp_path, *args, once=once)
    task = _paused_task(once, sweep)
    subprocess.run(["scancel", task], check=True)
    status, output = _finish(sweep)
    assert status == 1, output[-3000:]
    jobs = json.loads(next(sweep_dir.glob(".submitit/*/jobs.json")).read_text())["tasks"]
    cancelled = jobs[task]
    (finished,) = {"prune.ratio=0.5", "prune.ratio=0.9"} - {cancelled}
    assert "2 job(s) of the sweep" in output and "1 of the sweep's 3 jobs finished" in output
    assert f"{cancelled}: cancelled on SLURM (task {task}); its log: " in output
    assert "prune.ratio=1.5: ConfigError: prune.ratio=1.5 must be in [0, 1)" in output
    failed = json.loads((sweep_dir / "prune.ratio=1.5" / "failed.json").read_text())
    assert failed["reason"] == "error" and "ConfigError" in failed["error"]
    assert json.loads((sweep_dir / cancelled / "failed.json").read_text())["reason"] == "cancelled"
    assert (sweep_dir / finished / "results.json").is_file()
    _same_numbers(sweep_dir / finished, reference / finished)

    report = subprocess.run(
        [sys.executable, "-m", "fer_lottery.report", str(sweep_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    text = (sweep_dir / "report.md").read_text()
    assert f"`{sweep_dir / cancelled}`: cancelled on SLURM (task {task})" in text, report.stdout
    assert f"`{sweep_dir / 'prune.ratio=1.5'}`: failed: ConfigError" in text
