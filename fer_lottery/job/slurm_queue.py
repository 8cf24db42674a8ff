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

import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

# States in which a task may still produce its result (a pre-empted task is requeued by a
# cluster whose PreemptMode is REQUEUE; if it is not, it leaves the queue and counts as ended).
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
        "PREEMPTED",
        "RESV_DEL_HOLD",
    }
)
POLL_S = 5.0


def _run(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def queue_states(array_ids: Iterable[str]) -> dict[str, str] | None:
    """``{"<array id>_<task>": state}`` for the tasks the controller still holds (``squeue``),
    or None when ``squeue`` did not answer (the controller busy or restarting)."""
    states: dict[str, str] = {}
    for array_id in sorted(set(array_ids)):
        out = _run(["squeue", "-h", "-r", "--states=all", "-j", array_id, "-o", "%i|%T"])
        if out is None:
            return None
        for line in out.splitlines():
            task, _, state = line.strip().partition("|")
            if task and state:
                states[task] = state.split()[0]
    return states


def accounting_state(task: str) -> str | None:
    """The task's state in SLURM's accounting (``sacct``), or None where there is none."""
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", task])
    for line in (out or "").splitlines():
        job, _, state = line.partition("|")
        if job.strip() == task and state:
            return state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return None


def final_state(task: str, states: dict[str, str]) -> str | None:
    """How a task that ended without a result ended: the queue's word, else accounting's."""
    return states.get(task) or accounting_state(task)


def wait_for_tasks(tasks: dict[str, Path], poll_s: float = POLL_S) -> dict[str, str]:
    """Wait until every task (id -> its result pickle) has a result or has ended; return the
    last queue states seen. A task has ended when the queue shows it in a state outside
    ``ACTIVE``, or no longer shows it and accounting (if any) does not call it active."""
    waiting = dict(tasks)
    states: dict[str, str] = {}
    while waiting:
        seen = queue_states(t.split("_")[0] for t in waiting)
        if seen is not None:
            states.update(seen)
            for task, result in list(waiting.items()):
                if result.exists():
                    del waiting[task]
                elif task in seen:
                    if seen[task] not in ACTIVE:
                        del waiting[task]
                elif accounting_state(task) not in ACTIVE:
                    del waiting[task]
        if waiting:
            time.sleep(poll_s)
    return states
