"""User-facing errors: their message names the thing that is wrong and how to fix it.

The entry point prints these without a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class FerLotteryError(Exception):
    """A problem with the user's input (data, config, weights) rather than a bug."""


class ConfigError(FerLotteryError):
    """A config value is out of range."""


class DataError(FerLotteryError):
    """The dataset is missing or not in the expected layout."""


class WeightsError(FerLotteryError):
    """Model weights cannot be downloaded or loaded."""


class CacheError(FerLotteryError):
    """A cache entry cannot be published or loaded, or its lock cannot be had."""


# The errors of a full disk, or of a full quota.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def no_space(exc: BaseException | None) -> OSError | None:
    """The ENOSPC or EDQUOT error behind ``exc``, following its causes and contexts, or None.

    A write through a Python file object keeps the OSError as the context of whatever the writer
    raised (torch.save, for one, raises a RuntimeError with no errno of its own).
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class DiskFullError(FerLotteryError):
    """A write failed because its disk (or the user's quota on it) is full."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        cause: OSError | None = None,
        under: bool = False,
        fix: str | None = None,
    ):
        """``path``: the file that could not be written, or with ``under`` the folder where a
        write failed. ``fix``: what to do, when it is not the job's (move the run folder or the
        cache, run again)."""
        self.path = path
        quota = cause is not None and cause.errno == errno.EDQUOT
        what = "disk quota exceeded" if quota else "no space left on device"
        where = f"could not write {'under ' if under else ''}{path}" if path else "a write failed"
        free = _free_space(path)
        fix = fix or (
            "Free some space there, or put the run folder (hydra.run.dir, hydra.sweep.dir) or the "
            "cache (cache_dir=..., FER_LOTTERY_CACHE) on a larger disk; then run the same command "
            "again: finished work is kept, and the job resumes"
        )
        super().__init__(f"{what}: {where}{free}. {fix}")


def _free_space(path: str | os.PathLike | None) -> str:
    """`` (N MB free there)``, for the nearest folder of ``path`` that exists; else empty."""
    if not path:
        return ""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    amount = f"{free / 1e6:.1f} MB" if free >= 1e6 else f"{free / 1e3:.0f} kB"
    return f" ({amount} free there now)"
