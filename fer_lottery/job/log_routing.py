"""Log routing for the command line: information on stdout, warnings and errors on stderr.

Used by ``conf/hydra/{job_logging,hydra_logging}/fer_lottery.yaml``: the stdout handler takes the
records below WARNING, a stderr handler the rest, so each message is printed once, and a script
can tell the results (stdout) from the problems (stderr).
"""

from __future__ import annotations

import logging


class BelowLevel(logging.Filter):
    """Pass only the records below ``level`` (a name such as ``WARNING``, or a number)."""

    def __init__(self, level: str | int = logging.WARNING):
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else int(level)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level
