"""File operations that never lose or half-write data: atomic writes, and moving a bad file
aside (kept for a look) so that the next read misses and the file is made again."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fer_lottery.core.errors import DiskFullError, no_space

_TMP = ".tmp"  # write_atomic's temp files: .<name>.<random>.tmp beside the file


def temp_files(path: str | Path) -> list[Path]:
    """The temp files a ``write_atomic`` of ``path`` left when its process was killed."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{_TMP}"))


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place.

    A full disk (or quota) raises DiskFullError naming ``path``; the temp file is removed, so
    nothing half-written is left, and whatever ``path`` held before is kept.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP)
        os.close(fd)
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        full = no_space(exc)
        if full is not None and not isinstance(exc, DiskFullError):
            raise DiskFullError(path, full) from exc
        raise


def save_torch(path: str | Path, payload: Any) -> None:
    """``torch.save(payload)`` to ``path``, atomically, through a Python file object, so that a
    full disk surfaces as its OSError (torch.save to a bare path raises a RuntimeError with no
    errno)."""
    import torch

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            torch.save(payload, f)

    write_atomic(path, write)


def write_json_atomic(
    path: str | Path, payload: Any, after_write: Callable[[], None] | None = None
) -> None:
    """Write ``payload`` as indented JSON, atomically.

    ``after_write`` runs once the temporary file is written, before it is renamed into place
    (the tests' fault point for a kill while ``results.json`` is written).
    """
    text = json.dumps(payload, indent=2, sort_keys=False, default=str)

    def write(tmp: Path) -> None:
        tmp.write_text(text + "\n")
        if after_write is not None:
            after_write()

    write_atomic(path, write)


def move_aside(
    path: str | Path,
    label: str = "",
    folder: str | Path | None = None,
    expect: os.stat_result | None = None,
) -> str:
    """Move a bad file or folder out of the way, keep it for a look, and say what happened.

    It goes into ``folder`` (default: beside it) as ``<name>.[<label>-]<time>-<pid>``. With
    ``expect`` (the stat of the copy that was read), a file that another job has already replaced
    is left alone. When it cannot be moved it is deleted, so the next read misses all the same.
    """
    path = Path(path)
    try:
        now = path.stat()
    except FileNotFoundError:
        return "another job already moved it aside"
    if expect is not None and (now.st_ino, now.st_mtime_ns) != (expect.st_ino, expect.st_mtime_ns):
        return "another job already replaced it"
    folder = Path(folder) if folder is not None else path.parent
    stem = (
        f"{path.name}.{label + '-' if label else ''}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    dest = folder / stem
    try:
        folder.mkdir(exist_ok=True)
        n = 1
        while dest.exists():
            dest, n = folder / f"{stem}-{n}", n + 1
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
