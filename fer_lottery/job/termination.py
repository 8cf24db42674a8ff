"""SIGTERM (a scheduler's pre-emption or timeout) and SIGINT (Ctrl-C): stop, resumably, say so.

Lightning's own handler turns SIGTERM into ``SIGTERMException``, a ``SystemExit`` with status 0,
so a pre-empted job looked like a success. Here SIGTERM raises ``JobTerminated`` at once. What a
rerun needs is already on disk: crops are cached one by one, checkpoints are written at epoch
boundaries, and every file is written atomically. The entry point records the job as
"terminated (pre-empted)" and exits with status 143 (128 + SIGTERM), and the same command
resumes it. SIGINT does the same with status 130 (128 + SIGINT) and "interrupted (Ctrl-C)":
Lightning would otherwise turn a KeyboardInterrupt into exit status 1 with its own message.

A signal in the middle of a training stage whose epochs are short (at most ``GRACE_S``) waits
for the end of the epoch, where the stage can resume exactly: SIGTERM writes the stage's
checkpoint there and then stops as above, so at most one epoch is lost, not up to
``trainer.checkpoint_every_s``. SIGUSR2 (``sbatch --signal=USR2@120``: shortly before the time
limit) writes the checkpoint at the end of the epoch and goes on training. When a launcher
handles USR2 (submitit's checkpoint-and-requeue), its handler runs at that epoch end, after the
checkpoint. A second signal, a signal outside a stage's epochs, or one in a stage whose epochs
take longer than ``GRACE_S`` acts at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

EXIT_STATUS = 128 + signal.SIGTERM
REASON = "terminated (pre-empted)"

# A signal waits for the end of an epoch when the stage's last epoch took at most this long
# (SLURM's default KillWait, between SIGTERM and SIGKILL, is 30 s).
GRACE_S = 20.0


class JobTerminated(BaseException):
    """The job received SIGTERM. A BaseException, so no ``except Exception`` swallows it."""

    exit_status = EXIT_STATUS
    reason = REASON


class JobInterrupted(JobTerminated):
    """The job received SIGINT (Ctrl-C). Not a KeyboardInterrupt, which Lightning turns into
    exit status 1."""

    exit_status = 128 + signal.SIGINT
    reason = "interrupted (Ctrl-C)"


class EpochBoundary:
    """What a training stage is asked to do at the end of its current epoch.

    ``epoch_s`` (the last epoch's duration, set by the stage's ``ResumeCheckpoint``) says
    whether a stop can wait for it; ``stop`` holds a deferred signal and what acts on it (None:
    raise ``JobTerminated``); ``checkpoint_requested`` is a checkpoint asked for by SIGUSR2.
    """

    def __init__(self) -> None:
        self.epoch_s: float | None = None
        self.stop: tuple[int, Callable | None] | None = None
        self.checkpoint_requested = False

    def act(self) -> None:
        """Act on the deferred signal (a no-op without one): raise, or the launcher's handler."""
        if self.stop is None:
            return
        signum, then = self.stop
        self.stop = None
        if then is None:
            raise JobTerminated(f"received {signal.Signals(signum).name} (signal {signum})")
        then(signum, None)


_boundary: EpochBoundary | None = None


@contextmanager
def epoch_boundary(boundary: EpochBoundary) -> Iterator[EpochBoundary]:
    """Signals during the block may wait for ``boundary``'s epoch end (one stage's fit)."""
    global _boundary
    _boundary = boundary
    try:
        yield boundary
    finally:
        _boundary = None


def _defer(signum: int, then: Callable | None) -> bool:
    """Leave the signal to the end of the running epoch, when one ends soon; True if so."""
    b = _boundary
    if b is None or b.stop is not None or b.epoch_s is None or b.epoch_s > GRACE_S:
        return False
    b.stop = (signum, then)
    log.warning(
        "received %s: stopping at the end of this epoch (epochs take %.1f s here), after "
        "writing a checkpoint",
        signal.Signals(signum).name,
        b.epoch_s,
    )
    return True


def _raise(signum, frame) -> None:
    if _defer(signum, None):
        return
    raise JobTerminated(f"received SIGTERM (signal {signum})")


def _checkpoint_request(signum, frame) -> None:
    """SIGUSR2 with no launcher handling it: a checkpoint at the end of this epoch."""
    b = _boundary
    if b is None:
        log.warning(
            "received SIGUSR2: no training stage is running, so there is no checkpoint to "
            "write (finished stages are kept); going on"
        )
        return
    b.checkpoint_requested = True
    log.warning("received SIGUSR2: writing a checkpoint at the end of this epoch")


def _launcher_after_epoch(original: Callable) -> Callable:
    """A launcher's USR2 handler (submitit: checkpoint and requeue), run at the epoch's end."""

    def handler(signum, frame) -> None:
        if _defer(signum, original):
            return
        original(signum, frame)

    handler.wrapped = original  # type: ignore[attr-defined]
    return handler


def own_sigterm_during_fit() -> None:
    """Put ``_raise`` back as the SIGTERM handler, over the one Lightning installs for a fit
    (which would stop at the next batch); Lightning restores its predecessor after the fit. Only
    where ``_raise`` was the handler before (not under a launcher's own, such as submitit's)."""
    try:
        current = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return
    handlers = getattr(current, "signal_handlers", None) or [current]  # Lightning's compose
    if any(h is _raise for h in handlers) and current is not _raise:
        try:
            signal.signal(signal.SIGTERM, _raise)
        except ValueError:  # not the main thread
            pass


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
        usr2 = signal.getsignal(signal.SIGUSR2)
        if usr2 in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR2, _checkpoint_request)
        elif callable(usr2) and not hasattr(usr2, "wrapped") and usr2 is not _checkpoint_request:
            signal.signal(signal.SIGUSR2, _launcher_after_epoch(usr2))
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
