"""A run folder on a full disk is refused before Hydra writes into it.

Hydra writes ``.hydra/config.yaml`` before the job starts, where fer_lottery cannot turn a full
disk into its one-line error. ``SpaceCheck``, a Hydra callback, looks first: with less than
``MIN_FREE_BYTES`` free where the run (or sweep) folder goes, it prints the same one line as a
full disk in a job, and exits 2. Every later write goes through the job's own handling.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from fer_lottery.core.errors import DiskFullError

log = logging.getLogger("fer_lottery")

# Hydra's three config files and the first log lines take a few tens of kB; any job then writes
# megabytes (split, curves, weights). Below this, nothing useful can finish.
MIN_FREE_BYTES = 1 << 20


def _existing(path: Path) -> Path:
    """``path``, or its nearest folder that exists (the folder is made later, by Hydra)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free(folder: str | Path) -> None:
    """Exit 2 with the full-disk line when ``folder``'s disk has less than MIN_FREE_BYTES free."""
    place = _existing(Path(folder))
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        return  # cannot tell; the writes will say
    if free < MIN_FREE_BYTES:
        log.error("%s", DiskFullError(folder, under=True))
        sys.exit(2)


class SpaceCheck(Callback):
    """Before a run or a sweep: refuse a run folder whose disk is full."""

    def on_run_start(self, config, **kwargs) -> None:
        check_free(config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        check_free(config.hydra.sweep.dir)
