"""Fault injection for the reliability tests: stop this process at a named point.

``FER_LOTTERY_FAULT="<point>=<signal>"`` sends ``<signal>`` (KILL, TERM, ...; default KILL) to
the running process when it reaches ``<point>``, just as a crash, an out-of-memory killer or a
scheduler's pre-emption would; several faults are comma-separated, each fires at its point.
The tests use it to kill real jobs at exact places and check that the rerun resumes to the
same numbers. Points:

- ``crops/<n>``: after the n-th face crop was written to the cache;
- ``<stage>/epoch<e>/batch<b>``: after batch b of epoch e of a training stage (``dense``,
  ``retrain``, ``retrain<r>``), i.e. in the middle of an epoch;
- ``prune``: after the mask is made, before retraining;
- ``results``: while ``results.json`` is being written (the temporary file exists).

With ``FER_LOTTERY_FAULT_ONCE=<file>`` the fault fires only in the first process that reaches
the point: it creates the file first, and a process that finds it goes on (so, in a sweep, the
job that takes over from a killed one is not killed too).

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


def _fire(name: str) -> None:
    once = os.environ.get(ONCE)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    os.kill(os.getpid(), getattr(signal, f"SIG{name or 'KILL'}"))
