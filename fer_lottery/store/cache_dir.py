"""The cache folder, checked for writes before any work.

A cache that cannot be written (a read-only mount, a path under ``/proc``, a plain file) is
reported in one line, before the data is loaded. (A cache entry that turns out corrupt or
incomplete is moved into a ``quarantine/`` folder beside it by ``store.atomic.move_aside``.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from fer_lottery.config import enum_value
from fer_lottery.core import paths
from fer_lottery.core.errors import CacheError


def needed_folders(cfg: DictConfig) -> list[str]:
    """The cache sub-folders this job writes: ``crops`` for SFEW, ``dense`` with cache_dense."""
    folders = []
    if enum_value(cfg.data.name) != "synthetic":
        folders.append(paths.CROPS)
    if cfg.cache_dense:
        folders.append(paths.DENSE)
    return folders


def check_writable(cfg: DictConfig) -> None:
    """Raise a one-line CacheError when a cache folder this job needs cannot be written."""
    folders = needed_folders(cfg)
    if not folders:  # nothing of this job goes to the cache
        return
    root = Path(str(cfg.cache_dir)).expanduser().absolute()
    for folder in [root] + [root / f for f in folders]:
        reason = _write_problem(folder)
        if reason is not None:
            source = "cache_dir"
            if os.environ.get("FER_LOTTERY_CACHE") == str(cfg.cache_dir):
                source = "cache_dir (from FER_LOTTERY_CACHE)"
            raise CacheError(
                f"{source} {root} cannot be written: {reason}. Point it at a writable folder: "
                "cache_dir=/path/to/folder or FER_LOTTERY_CACHE=/path/to/folder"
            )


def _write_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created and written (a real probe file), or None when it can."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
        return f"cannot create {exc.filename or folder} ({exc.strerror or exc})"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.write(fd, b"ok")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write a file in {folder} ({exc.strerror or exc})"
    return None
