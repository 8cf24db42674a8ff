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
    process: bool = False,
) -> subprocess.CompletedProcess:
    """``python -m fer_lottery *args`` in ``cwd`` (created if missing), output captured as text.

    It runs in this process, through the entry function itself (``fer_lottery.__main__.main``,
    Hydra's own ``@hydra.main``), which spares the 8 s of importing torch, torchvision and
    Lightning that a new interpreter spends. A test that checks what only a process shows
    (signals, a fault injected by ``fault``, launchers that start processes of their own) passes
    ``process=True``, or ``fault``, and gets a real ``python -m fer_lottery`` subprocess.

    The environment is this process's, unbuffered, with the cache in ``cwd/cache``
    (FER_LOTTERY_CACHE); ``env`` adds to it or replaces its variables. FER_LOTTERY_FAULT is never
    inherited: ``fault="<point>=<signal>"`` sets it (``fer_lottery.job.faults``), and ``once``
    sets FER_LOTTERY_FAULT_ONCE, the file that makes the fault fire in one job only.
    ``check``: a non-zero exit raises AssertionError with the tail of both outputs.
    """
    if process or fault or once:
        proc = subprocess.run(
            [sys.executable, "-m", "fer_lottery", *args],
            cwd=cwd,
            env=cli_env(cwd, env, fault, once),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_as_from_a_terminal,
        )
    else:
        proc = _run_in_process(list(args), cwd, cli_env(cwd, env))
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _as_from_a_terminal() -> None:
    """In the child, before Python starts: Ctrl-C (SIGINT) does what it does for a job started
    from a terminal, whatever this test process ignores (a child inherits an ignored signal)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_in_process(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """What ``python -m fer_lottery *args`` does, in this process: the same argv, working
    folder, environment and entry function, stdout and stderr captured, and the exit status a
    process would have. What a job changes process-wide (signal handlers, logging handlers,
    torch's thread count, Hydra's global state) is put back afterwards."""
    import contextlib
    import io
    import logging
    import signal

    import torch
    from hydra.core.global_hydra import GlobalHydra

    from fer_lottery.__main__ import main

    saved_env = dict(os.environ)
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    saved_signals = {
        s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    }
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_threads = torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = [str(Path(sys.modules["fer_lottery.__main__"].__file__)), *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what would reach the interpreter: a traceback, status 1
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        for handler in root.handlers:
            if handler not in saved_root[0]:
                handler.close()
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        torch.set_num_threads(saved_threads)
        GlobalHydra.instance().clear()
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(
        ["python", "-m", "fer_lottery", *args], code, out.getvalue(), err.getvalue()
    )
