"""Fault injection for the reliability tests: stop this process at a named point.

``FER_LOTTERY_FAULT="<point>=<signal>"`` sends ``<signal>`` (KILL, TERM, ...; default KILL) to
the running process when it reaches ``<point>``, just as a crash, an out-of-memory killer or a
scheduler's pre-emption would; several faults are comma-separated, each fires at its point.
``<point>=PAUSE`` instead waits there until a signal arrives and its handler has run
(``signal.pause``), so that a test can signal a job from outside (``scancel --signal``) while
it is, for certain, in the middle of an epoch.
The tests use it to kill real jobs at exact places and check that the rerun resumes to the
same numbers. Points:

- ``crops/<n>``: after the n-th face crop was written to the cache;
- ``<stage>/epoch<e>/batch<b>``: after batch b of epoch e of a training stage (``dense``,
  ``retrain``, ``retrain<r>``, ``gradual``, ``stability``), i.e. in the middle of an epoch;
- ``prune``: after the mask is made, before retraining;
- ``results``: while ``results.json`` is being written (the temporary file exists).

With ``FER_LOTTERY_FAULT_ONCE=<file>`` the fault fires only in the first process that reaches
the point: it creates the file first, and a process that finds it goes on (so, in a sweep, the
job that takes over from a killed one is not killed too). The file names the process that
fired: ``pid=<pid> slurm_task=<id>`` (the task in a SLURM job), so a test knows which task to
signal.

Unset (always, outside the tests), ``at`` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "FER_LOTTERY_FAULT"
ONCE = "FER_LOTTERY_FAULT_ONCE"


def at(point: str) -> None:
    """Signal this process if ``FER_LOTTERY_FAULT`` names ``point``."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for fault in spec.split(","):
        where, _, name = fault.partition("=")
        if where == point:
            _fire(name)


def _who() -> str:
    """``pid=<pid>``, and in a SLURM job ``slurm_task=`` its id as squeue and submitit write it:
    ``<array id>_<task>`` in a job array, else the job id."""
    env = os.environ
    who = f"pid={os.getpid()}"
    if env.get("SLURM_ARRAY_JOB_ID"):
        who += f" slurm_task={env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    elif env.get("SLURM_JOB_ID"):
        who += f" slurm_task={env['SLURM_JOB_ID']}"
    return who + "\n"


def _fire(name: str) -> None:
    once = os.environ.get(ONCE)
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, _who().encode())
        os.close(fd)
    if name == "PAUSE":
        signal.pause()
        return
    os.kill(os.getpid(), getattr(signal, f"SIG{name or 'KILL'}"))
