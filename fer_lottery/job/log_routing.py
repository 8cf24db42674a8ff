"""Log routing for the command line: information on stdout, warnings and errors on stderr.

Used by ``conf/hydra/{job_logging,hydra_logging}/fer_lottery.yaml``: the stdout handler takes the
records below WARNING, a stderr handler the rest, so each message is printed once, and a script
can tell the results (stdout) from the problems (stderr).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading

from fer_lottery.core.errors import no_space


class BelowLevel(logging.Filter):
    """Pass only the records below ``level`` (a name such as ``WARNING``, or a number)."""

    def __init__(self, level: str | int = logging.WARNING):
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else int(level)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class NoAdverts(logging.Filter):
    """Drop Lightning's product tips ("💡 Tip: ... try installing litlogger"): a job's log says
    what the job did."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


class JobLogFile(logging.FileHandler):
    """The job's log file. When its disk is full it stops, with one line on stderr, instead of
    printing logging's "--- Logging error ---" traceback for every later record."""

    def handleError(self, record: logging.LogRecord) -> None:
        full = no_space(sys.exc_info()[1])
        if full is None:
            super().handleError(record)
            return
        if not self.stopped:
            self.stopped = True
            sys.stderr.write(
                f"fer_lottery: the job log {self.baseFilename} stops here: {full.strerror}\n"
            )
        with contextlib.suppress(OSError):
            self.close()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.stopped:
            super().emit(record)

    stopped = False


def quiet_disk_full_in_threads() -> None:
    """A background writer thread (TensorBoard's event writer) that stops on a full disk prints
    no traceback: the writer raises the same error in the job's own thread, which reports it in
    one line. Any other thread error is printed as before."""
    previous = threading.excepthook
    if getattr(previous, "quiet_disk_full", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if no_space(args.exc_value) is None:
            previous(args)

    hook.quiet_disk_full = True
    threading.excepthook = hook
