"""What the tests share besides fixtures: named job sizes and one runner for the CLI.

The sizes are Hydra overrides; a test that needs more adds its own after the named set. Those
on synthetic faces build on ``debug=tiny`` (conf/debug/tiny.yaml: 8 faces per class, 32 px,
ResNet-18 from random init, 2 epochs, no progress bar).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# debug=tiny in batches of 16: 3 training batches per epoch (in-process jobs, fault points).
TINY_SYNTHETIC = ("debug=tiny", "data.batch_size=16")
# debug=tiny in batches of 32: 2 training batches per epoch (the end-to-end CLI runs).
TINY_SYNTHETIC_BATCH32 = ("debug=tiny", "data.batch_size=32")
# TINY_SYNTHETIC_BATCH32's training sizes for SFEW-layout frames (add data.root=...).
TINY_SFEW = (
    "model.weights=null",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "data.image_size=32",
    "data.batch_size=32",
)
# SFEW-layout frames resized whole (no face detection), 32 px, random init, 1 epoch, bars on.
TINY_SFEW_UNCROPPED = (
    "data.crop=none",
    "data.image_size=32",
    "model.weights=null",
    "trainer.max_epochs=1",
)


def cli_env(
    cwd: Path, env: dict | None = None, fault: str | None = None, once: Path | None = None
) -> dict:
    """The environment of a ``python -m fer_lottery`` that a test starts (see ``run_cli``);
    creates ``cwd``."""
    full_env = {k: v for k, v in os.environ.items() if k != "FER_LOTTERY_FAULT"}
    full_env.update({"PYTHONUNBUFFERED": "1", "FER_LOTTERY_CACHE": str(cwd / "cache")})
    full_env.update(env or {})
    if fault:
        full_env["FER_LOTTERY_FAULT"] = fault
    if once:
        full_env["FER_LOTTERY_FAULT_ONCE"] = str(once)
    cwd.mkdir(parents=True, exist_ok=True)
    return full_env


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    fault: str | None = None,
    once: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """``python -m fer_lottery *args`` in ``cwd`` (created if missing), output captured as text.

    The environment is this process's, unbuffered, with the cache in ``cwd/cache``
    (FER_LOTTERY_CACHE); ``env`` adds to it or replaces its variables. FER_LOTTERY_FAULT is never
    inherited: ``fault="<point>=<signal>"`` sets it (``fer_lottery.job.faults``), and ``once``
    sets FER_LOTTERY_FAULT_ONCE, the file that makes the fault fire in one job only.
    ``check``: a non-zero exit raises AssertionError with the tail of both outputs.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "fer_lottery", *args],
        cwd=cwd,
        env=cli_env(cwd, env, fault, once),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc
