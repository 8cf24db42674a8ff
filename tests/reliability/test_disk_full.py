"""A full disk is one line on stderr and exit 2, and loses nothing (#15 row 8).

Each test mounts a real tmpfs small enough to fill, as the run folder, the dense cache or the
crop cache in turn, and runs the real CLI on it. Skipped, with the reason, where mounting is
refused (not root, or no tmpfs in a container).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_SYNTHETIC_BATCH32, run_cli

pytestmark = pytest.mark.slow

NO_SPACE = "no space left on device"


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted on ``path`` for the block; skip the test if it can't be."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _problems(stderr: str) -> list[str]:
    """stderr's lines, less the progress bars' redraws (the crop bar is cleared on an error)."""
    lines = [line.split("\r")[-1].strip() for line in stderr.splitlines()]
    return [line for line in lines if line and not line.startswith("face crops")]


def assert_one_line(proc, path: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    lines = _problems(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert NO_SPACE in lines[0] and str(path) in lines[0], lines[0]
    assert "run the same command again" in lines[0]
    assert "Traceback" not in out and "Logging error" not in out


def no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not left, left


def _same_numbers(a: dict, b: dict) -> None:
    keys = [k for k in a if not k.startswith("time/") and k not in ("dense/cache", "config")]
    assert {k: a[k] for k in keys} == {k: b.get(k) for k in keys}


PRUNED = (*TINY_SYNTHETIC_BATCH32, "prune.ratio=0.5")


def test_full_run_folder(tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        run = disk / "run"
        args = (*PRUNED, f"hydra.run.dir={run}")
        proc = run_cli(*args, cwd=tmp_path, check=False)
        assert_one_line(proc, run)
        assert not (run / "results.json").exists()
        no_temp_files(run)
        # Already full before the start: refused before Hydra writes its config, in one line.
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 4096))
        proc = run_cli(*PRUNED, f"hydra.run.dir={disk / 'second'}", cwd=tmp_path, check=False)
        assert_one_line(proc, disk / "second")
        filler.unlink()
        grow(disk, "200m")
        run_cli(*args, cwd=tmp_path)  # the same command finishes
        assert json.loads((run / "results.json").read_text())["prune/sparsity"] > 0


def test_full_dense_cache_resumes_with_the_same_numbers(tmp_path):
    with tmpfs(tmp_path / "disk", "50m") as cache:
        args = (*PRUNED, f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}")
        proc = run_cli(*args, cwd=tmp_path, check=False)
        assert_one_line(proc, cache)
        assert not any(p.name.endswith(".tmp") for p in cache.rglob("*"))
        dense = cache / "dense"
        assert not [p for p in dense.iterdir() if p.is_dir() and not p.name.endswith(".partial")]
        grow(cache, "400m")
        run_cli(*args, cwd=tmp_path)
        resumed = json.loads((tmp_path / "run" / "results.json").read_text())
    reference = tmp_path / "reference"
    run_cli(*PRUNED, f"cache_dir={tmp_path / 'c2'}", f"hydra.run.dir={reference}", cwd=tmp_path)
    _same_numbers(resumed, json.loads((reference / "results.json").read_text()))


def test_full_crop_cache_keeps_only_whole_crops(tmp_path, sfew_frames):
    sfew = (
        f"data.root={sfew_frames}",
        "data.crop=none",
        "data.image_size=64",
        "model.weights=null",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    )
    with tmpfs(tmp_path / "disk", "100k") as cache:
        args = (*sfew, f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}")
        proc = run_cli(*args, cwd=tmp_path, check=False)
        assert_one_line(proc, cache / "crops")
        no_temp_files(cache)
        written = len(list((cache / "crops").glob("*.npz")))
        assert 0 < written < 21
        grow(cache, "200m")
        run_cli(*args, cwd=tmp_path)
        results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data/crop_cache_hits"] == written  # every crop left behind was whole


def test_a_report_onto_a_full_disk_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fixture = Path(__file__).parents[1] / "fixtures" / "results" / "magnitude.json"
    shutil.copy(fixture, run / "results.json")
    with tmpfs(tmp_path / "disk", "40k") as disk:
        proc = subprocess.run(
            [sys.executable, "-m", "fer_lottery.report", str(run), "--out", str(disk / "r")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _problems(proc.stderr)
    assert len(lines) == 1 and NO_SPACE in lines[0] and str(disk / "r") in lines[0], lines
    assert "--out DIR" in lines[0] and "Traceback" not in proc.stderr
