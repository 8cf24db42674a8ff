"""Waiting for a sweep's job array on SLURM, with or without accounting.

submitit learns that a task has ended from ``sacct``. On a cluster without accounting
(``AccountingStorageType=accounting_storage/none``, as on a small local cluster) ``sacct``
fails, submitit warns "Bypassing sacct error" at every poll, and a task that ended without a
result (cancelled, killed at its time limit, lost with its node) keeps the state UNKNOWN: the
sweep would wait for it for ever. ``wait_for_tasks`` asks ``squeue`` instead, which lists every
task the controller holds (finished ones for ``MinJobAge`` seconds), and then ``sacct`` where it
works; a task that no longer appears in either has ended. ``final_state`` says how.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# States in which a task may still produce its result.
ACTIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
# A pre-empted task is requeued (PreemptMode=REQUEUE: it shows PENDING next) or has ended
# (CANCEL): it counts as ended once the queue has shown it PREEMPTED this many polls in a row.
PREEMPTED_POLLS = 3
POLL_S = 5.0

log = logging.getLogger(__name__)


def _run(command: list[str]) -> tuple[int, str, str] | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.returncode, proc.stdout, proc.stderr


def queue_states(array_ids: Iterable[str]) -> dict[str, str] | None:
    """``{"<array id>_<task>": state}`` for the tasks the controller still holds (``squeue``),
    or None when ``squeue`` did not answer (the controller busy or restarting). An array the
    controller no longer knows ("Invalid job id") has no tasks there."""
    states: dict[str, str] = {}
    for array_id in sorted(set(array_ids)):
        ran = _run(["squeue", "-h", "-r", "--states=all", "-j", array_id, "-o", "%i|%T"])
        if ran is None:
            return None
        status, out, err = ran
        if status != 0:
            if "Invalid job id" in err:
                continue
            return None
        for line in out.splitlines():
            task, _, state = line.strip().partition("|")
            if task and state:
                states[task] = state.split()[0]
    return states


def accounting_state(task: str) -> str | None:
    """The task's state in SLURM's accounting (``sacct``), or None where there is none."""
    ran = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", task])
    if ran is None or ran[0] != 0:
        return None
    for line in ran[1].splitlines():
        job, _, state = line.partition("|")
        if job.strip() == task and state:
            return state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return None


def final_state(task: str, states: dict[str, str]) -> str | None:
    """How a task that ended without a result ended: accounting's word, else the queue's last."""
    return accounting_state(task) or states.get(task)


def _ended(state: str | None, preempted_polls: int) -> bool:
    if state == "PREEMPTED":
        return preempted_polls >= PREEMPTED_POLLS
    return state not in ACTIVE


def wait_for_tasks(
    tasks: dict[str, Path], poll_s: float = POLL_S, on_done: Callable[[], None] | None = None
) -> dict[str, str]:
    """Wait until every task (id -> its result pickle) has a result or has ended; return the
    last queue states seen; ``on_done`` is called after each poll in which some task ended.
    A task has ended when the queue shows it in a state outside
    ``ACTIVE`` (PREEMPTED: for ``PREEMPTED_POLLS`` polls), or no longer shows it and
    accounting (if any) does not call it active. While ``squeue`` does not answer, only the
    result files are checked, and a warning says so once."""
    waiting = dict(tasks)
    states: dict[str, str] = {}
    preempted: dict[str, int] = {}
    warned = False
    while waiting:
        seen = queue_states(t.split("_")[0] for t in waiting)
        if seen is None and not warned:
            log.warning("squeue does not answer; waiting for the tasks' result files meanwhile")
            warned = True
        if seen is not None:
            states.update(seen)
        before = len(waiting)
        for task, result in list(waiting.items()):
            if result.exists():
                del waiting[task]
                continue
            if seen is None:
                continue
            state = seen.get(task) or accounting_state(task)
            preempted[task] = preempted.get(task, 0) + 1 if state == "PREEMPTED" else 0
            if _ended(state, preempted[task]):
                del waiting[task]
        if on_done is not None and len(waiting) < before:
            on_done()  # some task ended: the sweep's progress line
        if waiting:
            time.sleep(poll_s)
    return states
