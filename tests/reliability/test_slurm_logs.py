"""Reading what SLURM and submitit leave in ``.submitit/`` (``fer_lottery.job.slurm_logs``), on
task folders laid out as submitit lays them out, with lines in the words slurmstepd and submitit
write them (copied from the local cluster's tasks, ``make slurm-up``). The end-to-end cases
(a real cancel, a real time limit, a real requeue) are in tests/reliability/test_slurm.py;
node failure and a time limit that ran out of requeues are here, since the local cluster cannot
lose its node."""

from __future__ import annotations

import json

import pytest

from fer_lottery.job.slurm_logs import read_task, task_logs, write_job_map, write_outcome
from fer_lottery.report.collect import collect

START = (
    "submitit INFO (2026-12-01 18:07:10,120) - Starting with JobEnvironment(job_id=28_1, "
    "hostname=vm, local_rank=0(1), node=0(1), global_rank=0(1))\n"
)
REQUEUED = (
    "submitit INFO (2026-12-01 18:07:40,862) - Requeued job 28_1 (2 remaining timeouts)\n"
    "[2026-12-01 18:07:40,862][submitit][INFO] - Requeued job 28_1 (2 remaining timeouts)\n"
)


def stepd(why: str = "") -> str:
    due = f" DUE TO {why}" if why else ""
    return f"slurmstepd-vm: error: *** JOB 31 ON vm CANCELLED AT 2026-12-01T18:09:02{due} ***\n"


def task(tmp_path, name="28_1", out="", err=""):
    folder = tmp_path / ".submitit" / name
    folder.mkdir(parents=True)
    (folder / f"{name}_0_log.out").write_text(out)
    (folder / f"{name}_0_log.err").write_text(err)
    return folder


@pytest.mark.parametrize(
    ("err", "ended"),
    [
        (stepd(), "cancelled"),
        (stepd("TIME LIMIT"), "time limit"),
        (stepd("PREEMPTION"), "pre-empted"),
        (stepd("NODE FAILURE, SEE SLURMCTLD LOG FOR DETAILS"), "node failure"),
        (stepd("JOB REQUEUE"), None),  # a requeue, not an end
        ("Traceback (most recent call last):\nValueError: x\n", None),  # the job's own error
    ],
)
def test_slurmstepd_says_how_a_task_ended(tmp_path, err, ended):
    assert read_task(task(tmp_path, out=START, err=err)).ended == ended


def test_requeues_are_counted_once_each_though_hydra_prints_them_twice(tmp_path):
    log = read_task(task(tmp_path, out=START + REQUEUED + START + REQUEUED + START))
    assert log.requeues == 2
    assert log.reason() == "requeued on SLURM (task 28_1, requeued 2 times)"


def test_a_time_limit_that_ran_out_of_requeues_says_so(tmp_path):
    out = START + REQUEUED + START
    out += "submitit INFO (2026-12-01 18:09:40,001) - Job not requeued because: timed-out too "
    out += "many times.\n"
    log = read_task(task(tmp_path, out=out, err=stepd("TIME LIMIT")))
    assert log.ended.startswith("time limit, requeued until hydra.launcher.max_num_timeout")
    assert "requeued 1 time)" in log.reason()


def test_a_task_cancelled_before_it_ran_has_only_the_launchers_record(tmp_path):
    folder = tmp_path / ".submitit" / "28_2"
    write_outcome(folder, "CANCELLED")
    assert read_task(folder).reason() == "cancelled on SLURM (task 28_2)"


def test_the_report_gives_the_schedulers_reason_beside_the_job(tmp_path):
    """A job that started (.hydra, the job's own failed.json after SIGTERM) and one that never
    did (only the launcher's failed.json): the report names each with the scheduler's word."""
    sweep = tmp_path / "sweep"
    started = sweep / "prune.ratio=0.5"
    (started / ".hydra").mkdir(parents=True)
    (started / "failed.json").write_text(
        json.dumps({"reason": "terminated (pre-empted)", "error": "terminated (pre-empted)"})
    )
    never = sweep / "prune.ratio=0.9"
    never.mkdir()
    (never / "failed.json").write_text(json.dumps({"reason": "cancelled", "error": "x"}))
    task(sweep, "40_0", out=START + REQUEUED + START, err=stepd("NODE FAILURE"))
    write_outcome(sweep / ".submitit" / "40_1", "CANCELLED")
    tasks = {"40_0": started.name, "40_1": never.name}
    write_job_map(sweep / ".submitit", "40", tasks, launch=None)
    assert set(task_logs(sweep)) == {started.name, never.name}
    _, problems = collect([sweep])
    reasons = {p.name: p.reason for p in problems}
    assert reasons == {
        str(started): "node failure on SLURM (task 40_0, requeued 1 time)",
        str(never): "cancelled on SLURM (task 40_1)",
    }


def test_an_earlier_attempts_end_does_not_decide_how_the_task_ended(tmp_path):
    """Pre-empted and requeued (PreemptMode=REQUEUE) at 18:09:02, started again at 18:09:30,
    then failed with its own error: the scheduler has no word on that last attempt."""
    again = START.replace("18:07:10", "18:09:30")
    log = read_task(task(tmp_path, out=START + again, err=stepd("PREEMPTION")))
    assert log.ended is None and log.reason() is None
    later = stepd("TIME LIMIT").replace("18:09:02", "18:11:00")
    assert read_task(task(tmp_path, "28_2", out=START + again, err=later)).ended == "time limit"
