"""The cache folder: checked for writes before any work, and where bad entries are moved aside.

A cache that cannot be written (a read-only mount, a path under ``/proc``, a plain file) is
reported in one line, before the data is loaded. A cache entry that turns out corrupt or
incomplete is moved into a ``quarantine/`` folder beside it (kept for a look, safe to delete),
so the next read misses and the entry is made again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from fer_lottery.errors import CacheError

QUARANTINE = "quarantine"


def needed_folders(cfg: DictConfig) -> list[str]:
    """The cache sub-folders this job writes: ``crops`` for SFEW, ``dense`` with cache_dense."""
    from fer_lottery.config import enum_value

    folders = []
    if enum_value(cfg.data.name) != "synthetic":
        folders.append("crops")
    if cfg.cache_dense:
        folders.append("dense")
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


def move_aside(path: Path, expect: os.stat_result | None = None) -> str:
    """Move a bad cache entry (file or folder) into ``quarantine/`` beside it; say what happened.

    With ``expect`` (the stat of the copy that was read), a file that another job has already
    replaced is left alone. When it cannot be moved, it is deleted, so the next read misses.
    """
    path = Path(path)
    try:
        now = path.stat()
    except FileNotFoundError:
        return "another job already moved it aside"
    if expect is not None and (now.st_ino, now.st_mtime_ns) != (expect.st_ino, expect.st_mtime_ns):
        return "another job already replaced it"
    folder = path.parent / QUARANTINE
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = folder / f"{path.name}.{stamp}-{os.getpid()}"
    try:
        folder.mkdir(exist_ok=True)
        n = 1
        while dest.exists():
            dest, n = folder / f"{path.name}.{stamp}-{os.getpid()}-{n}", n + 1
        os.replace(path, dest)
        return f"moved it to {dest}"
    except FileNotFoundError:
        return "another job already moved it aside"
    except OSError as exc:
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError:
            return f"could not move or delete it ({exc.strerror or exc}); delete it by hand"
        return f"deleted it (could not move it to {folder}: {exc.strerror or exc})"
