"""What SLURM and submitit wrote about one job array task, read from ``<sweep>/.submitit/``.

A task's folder, ``.submitit/<array id>_<task>/``, holds submitit's pickles and the task's
stdout and stderr, which SLURM appends to across requeues. Three kinds of line there say what
happened to the task, whether or not the cluster keeps accounting (``sacct``):

- submitit's ``Requeued job 17_1 (2 remaining timeouts)``, once per requeue, and its
  ``Job not requeued because: timed-out too many times.``;
- slurmstepd's ``*** JOB 18 ON node01 CANCELLED AT 2026-12-01T17:53:31 DUE TO TIME LIMIT ***``
  (``DUE TO PREEMPTION``, ``DUE TO NODE FAILURE``, ``DUE TO JOB REQUEUE``; no ``DUE TO``: a
  ``scancel``);
- the launcher's own record, ``outcome.json``, of the state it saw in the queue when the task
  ended (``CANCELLED``, ``TIMEOUT``, ``NODE_FAIL``, ...), which covers a task cancelled before it
  ever ran and so wrote no log.

The launcher also writes ``.submitit/<array id>/jobs.json``, from task to job folder, so that
``python -m fer_lottery.report`` can name the reason beside the job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from fer_lottery.store.atomic import write_json_atomic

FOLDER = ".submitit"
# in .submitit/<array id>/: {"launch": <the sweep's launch stamp>, "tasks": {"<array id>_<task>":
# "<job folder>", ...}}
JOBS = "jobs.json"
OUTCOME = "outcome.json"  # in .submitit/<array id>_<task>/: the state the launcher saw

_STEPD = re.compile(
    r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT (?P<at>\S+)(?: DUE TO (?P<why>[A-Z ]+?))?"
    r"(?:,[^*]*)? \*\*\*"
)
_START = "Starting with JobEnvironment("  # submitit, at the start of each attempt
_WHY = {None: "cancelled", "TIME LIMIT": "time limit", "PREEMPTION": "pre-empted",
        "NODE FAILURE": "node failure"}  # fmt: skip
# SLURM job states that end a task, in words (squeue %T, sacct State).
STATE_WORDS = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "time limit",
    "PREEMPTED": "pre-empted",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failure (boot)",
    "OUT_OF_MEMORY": "out of memory",
    "DEADLINE": "deadline",
    "FAILED": "failed",
}


@dataclass(frozen=True)
class TaskLog:
    """What one task's folder says: how it ended on the scheduler's side, and its requeues."""

    task: str  # "<array id>_<task>"
    ended: str | None  # "cancelled", "time limit", "pre-empted", "node failure", ... or None
    requeues: int
    state: str | None  # the queue's last state, as the launcher saw it (outcome.json)
    launch: str | None = None  # the launch that submitted it (failures.launch_id)

    def reason(self) -> str | None:
        """One line for the report: "cancelled on SLURM (task 17_1, requeued 1 time)", or None
        when the scheduler said nothing (the job's own failed.json then speaks)."""
        if self.ended is None and not self.requeues:
            return None
        what = self.ended or "requeued"
        extra = [f"task {self.task}"]
        if self.requeues:
            extra.append(f"requeued {self.requeues} time{'s' if self.requeues > 1 else ''}")
        return f"{what} on SLURM ({', '.join(extra)})"


def _text(folder: Path, pattern: str) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(folder.glob(pattern)) if p.is_file()
    )


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _last_start(out: str) -> datetime | None:
    """When submitit started the task's last attempt (its own log line), to the second."""
    starts = re.findall(r"^submitit INFO \((\S+ \d\d:\d\d:\d\d)[^)]*\) - " + re.escape(_START),
                        out, re.MULTILINE)  # fmt: skip
    return _time(starts[-1]) if starts else None


def read_task(folder: Path) -> TaskLog:
    """Read ``.submitit/<array id>_<task>/``: its logs and the launcher's ``outcome.json``."""
    folder = Path(folder)
    out, err = _text(folder, "*_log.out"), _text(folder, "*_log.err")
    # submitit's own handler prints each line once in this form (Hydra's may print it again)
    requeues = len(re.findall(r"^submitit INFO \([^)]*\) - Requeued job ", out, re.MULTILINE))
    ended = None
    # SLURM appends across requeues: how the task ended is told after its last attempt started.
    last_out = out.rsplit(_START, 1)[-1]
    started = _last_start(out)
    for match in _STEPD.finditer(err + "\n" + out):
        at = _time(match["at"])
        if started is not None and at is not None and at < started:
            continue  # an earlier attempt's end (a pre-emption that requeued it)
        if match["why"] != "JOB REQUEUE":
            why = match["why"]
            ended = _WHY[why] if why in _WHY else why.lower()
    if "timed-out too many times" in last_out:
        ended = "time limit, requeued until hydra.launcher.max_num_timeout ran out"
    state = None
    try:
        state = json.loads((folder / OUTCOME).read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        pass
    if ended is None and state in STATE_WORDS:
        ended = STATE_WORDS[state]
    return TaskLog(folder.name, ended, requeues, state)


def write_outcome(folder: Path, state: str | None, detail: str = "") -> None:
    """Record the queue's last state of a task that ended without a result."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / OUTCOME, {"state": state, "detail": detail})


def write_job_map(
    submitit_dir: Path, array_id: str, job_dirs: dict[str, str], launch: str | None
) -> None:
    """``.submitit/<array id>/jobs.json``: task id -> job folder (relative to the sweep), and
    the launch that submitted them."""
    folder = submitit_dir / array_id
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / JOBS, {"launch": launch, "tasks": job_dirs})


def task_logs(sweep_dir: Path) -> dict[str, TaskLog]:
    """Each job folder of the sweep (relative to it) that ran as a SLURM task: its last task's
    log (a relaunched sweep submits a job again, as a new task: the latest counts)."""
    found: dict[str, TaskLog] = {}
    root = Path(sweep_dir) / FOLDER
    maps = sorted(root.glob(f"*/{JOBS}"), key=lambda p: _array_number(p.parent.name))
    for path in maps:
        try:
            record = json.loads(path.read_text())
            launch, tasks = record.get("launch"), dict(record["tasks"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        for task, job_dir in tasks.items():
            found[str(job_dir)] = replace(read_task(root / task), launch=launch)
    return found


def _array_number(name: str) -> int:
    return int(name) if name.isdigit() else -1
