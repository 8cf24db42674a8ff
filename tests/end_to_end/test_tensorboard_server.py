"""TensorBoard keeps every curve, as its real server serves them over HTTP.

The server drops a scalar curve whose last point comes at step 0 (a point logged after the last
epoch at step 0 makes it serve only that one), so the final metrics of the hparams tab go under
tags of their own (``hp/...``), and every per-epoch curve keeps one point per epoch. Reading the
event files alone would not show this: ``EventAccumulator`` keeps every point.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

EPOCHS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, **query: str):
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path):
    """A real ``tensorboard`` server on 127.0.0.1 over ``tmp_path/logs``, stopped afterwards."""
    port = _free_port()
    logdir = tmp_path / "logs"
    logdir.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast=false",
            "--reload_interval=1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, logdir
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for_run(port: int, run: str, tag: str, points: int, limit_s: float = 90.0) -> list:
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = _get(port, "/data/plugin/scalars/scalars", run=run, tag=tag)
            if len(last) >= points:
                return last
        except Exception:  # not up yet, or the run not loaded yet
            pass
        time.sleep(1.0)
    return last or []


def test_the_server_serves_one_point_per_epoch_and_the_final_metrics_under_their_own_tags(
    run_job, server
):
    port, logdir = server
    _, run_dir = run_job("job", f"trainer.max_epochs={EPOCHS}")
    (logdir / "job").symlink_to(run_dir / "tb", target_is_directory=True)
    run = "job/dense"
    for tag in ("val/acc", "val/acc_best", "val/loss", "train/loss"):
        points = _wait_for_run(port, run, tag, EPOCHS)
        steps = [p[1] for p in points]
        assert len(points) == EPOCHS, (tag, points)
        assert steps == sorted(steps) and steps[0] > 0, (tag, steps)
    tags = _get(port, "/data/plugin/scalars/tags")[run]
    assert "hp/test/acc" in tags and "hp/val/acc_best" in tags, sorted(tags)
    final = _get(port, "/data/plugin/scalars/scalars", run=run, tag="hp/test/acc")
    assert len(final) == 1
