"""Atomic file writes: a crash never leaves a half-written cache entry or results file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fer_lottery.job import faults


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, payload: Any, fault_point: str | None = None) -> None:
    """Write ``payload`` as indented JSON, atomically. ``fault_point``: see ``faults.at``."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=str)

    def write(tmp: Path) -> None:
        tmp.write_text(text + "\n")
        if fault_point:
            faults.at(fault_point)

    write_atomic(path, write)


def flatten(node: dict, prefix: str = "") -> dict[str, object]:
    """Nested dict -> ``{"data.split_seed": 1, ...}``; lists become JSON strings (hashable)."""
    out: dict[str, object] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out
