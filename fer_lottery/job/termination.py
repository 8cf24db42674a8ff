"""SIGTERM (a scheduler's pre-emption or timeout) and SIGINT (Ctrl-C): stop, resumably, say so.

Lightning's own handler turns SIGTERM into ``SIGTERMException``, a ``SystemExit`` with status 0,
so a pre-empted job looked like a success. Here SIGTERM raises ``JobTerminated`` at once. What a
rerun needs is already on disk: crops are cached one by one, checkpoints are written at epoch
boundaries, and every file is written atomically. The entry point records the job as
"terminated (pre-empted)" and exits with status 143 (128 + SIGTERM), and the same command
resumes it. SIGINT does the same with status 130 (128 + SIGINT) and "interrupted (Ctrl-C)":
Lightning would otherwise turn a KeyboardInterrupt into exit status 1 with its own message.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)

EXIT_STATUS = 128 + signal.SIGTERM
REASON = "terminated (pre-empted)"


class JobTerminated(BaseException):
    """The job received SIGTERM. A BaseException, so no ``except Exception`` swallows it."""

    exit_status = EXIT_STATUS
    reason = REASON


class JobInterrupted(JobTerminated):
    """The job received SIGINT (Ctrl-C). Not a KeyboardInterrupt, which Lightning turns into
    exit status 1."""

    exit_status = 128 + signal.SIGINT
    reason = "interrupted (Ctrl-C)"


def _raise(signum, frame) -> None:
    raise JobTerminated(f"received SIGTERM (signal {signum})")


def _raise_interrupt(signum, frame) -> None:
    raise JobInterrupted(f"received SIGINT (signal {signum})")


def install() -> bool:
    """Make SIGTERM raise ``JobTerminated`` in this process; True when it does.

    A handler that a launcher installed is kept: submitit (``submitit_local``, SLURM) bypasses
    SIGTERM and, on its own signal (USR2, sent before the time limit or on pre-emption), calls
    the launcher's ``checkpoint`` and requeues the job, which then resumes from its checkpoints.
    """
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _raise_interrupt)
    except ValueError:  # not the main thread
        pass
    current = signal.getsignal(signal.SIGTERM)
    if current is _raise:
        return True
    if current not in (signal.SIG_DFL, None):
        log.debug("SIGTERM is handled by the launcher (%r); leaving it", current)
        return False
    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread: leave the process's handler alone
        log.debug("SIGTERM handler not installed: not in the main thread")
        return False
    return True


def is_termination(exc: BaseException) -> bool:
    """SIGTERM or SIGINT, whether it arrived as ours or as Lightning's ``SIGTERMException``."""
    if isinstance(exc, JobTerminated):
        return True
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(exc, SIGTERMException)
