"""`python -m fer_lottery` in a subprocess: user errors are one message, once, on stderr, and an
unwritable cache location is reported before any work."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import TINY_SFEW_UNCROPPED

# Every run here exits non-zero (the tests check how), within 300 s.
# A real process: what these tests check is its exit status and what it leaves on stderr.
run_cli = functools.partial(helpers.run_cli, check=False, timeout=300, process=True)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("case", ["under_a_file", "proc", "env_is_a_file", "read_only"])
def test_an_unwritable_cache_fails_in_one_line_before_any_work(tmp_path, sfew_frames, case):
    plain = tmp_path / "plain_file"
    plain.write_text("not a folder\n")
    env, overrides = {}, []
    if case == "under_a_file":
        cache = plain / "cache"
        overrides = [f"cache_dir={cache}"]
    elif case == "proc":
        cache = Path("/proc/fer_lottery_cache")
        overrides = [f"cache_dir={cache}"]
    elif case == "env_is_a_file":
        cache = plain
        env = {"FER_LOTTERY_CACHE": str(plain)}
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder; the other cases fail as root too")
        cache = tmp_path / "read_only"
        cache.mkdir(mode=0o555)
        overrides = [f"cache_dir={cache}"]
    run_dir = tmp_path / "run"
    proc = run_cli(
        f"data.root={sfew_frames}",
        *TINY_SFEW_UNCROPPED,
        *overrides,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = _lines(proc.stderr)
    assert str(cache) in line and "cache_dir=" in line and "FER_LOTTERY_CACHE=" in line
    if case == "env_is_a_file":
        assert "from FER_LOTTERY_CACHE" in line and "is a file, not a folder" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""  # no "torch threads", no "face crops": nothing ran
    assert not (run_dir / "split.json").exists()


def test_a_user_error_is_printed_once_on_stderr(tmp_path):
    missing = tmp_path / "no_such_SFEW"
    proc = run_cli(
        f"data.root={missing}",
        *TINY_SFEW_UNCROPPED,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.count(f"SFEW root {missing}") == 1, proc.stderr
    assert str(missing) not in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_error_during_cropping_is_printed_once_in_a_run_and_in_a_sweep(tmp_path, sfew_frames):
    """Manual boxes not inside their frames, one wholly outside and one partly (it used to be
    clipped without a word), are named by their crops.csv lines before any cropping: once on
    stderr, never on stdout."""
    root = Path(shutil.copytree(sfew_frames, tmp_path / "SFEW"))
    first, second = sorted(root.glob("Angry/*.png"))[:2]
    (root / "crops.csv").write_text(
        "file,x1,y1,x2,y2\n"
        f"Angry/{first.name},900,900,990,990\n"
        f"Angry/{second.name},700,500,800,600\n"
    )
    error = "is not inside the 720x576 frame"
    proc = run_cli(
        f"data.root={root}", *TINY_SFEW_UNCROPPED, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "crops.csv:2: box 900,900,990,990 is not inside the 720x576 frame" in proc.stderr
    assert "crops.csv:3: box 700,500,800,600 is not inside the 720x576 frame" in proc.stderr
    assert "need 0 <= x1 < x2 <= 720 and 0 <= y1 < y2 <= 576" in proc.stderr
    assert proc.stderr.count(error) == 2 and error not in proc.stdout, proc.stdout + proc.stderr
    # On a terminal the line shows the error alone: the progress bar is cleared first.
    shown = [line.split("\r")[-1] for line in proc.stderr.splitlines()]
    assert [line for line in shown if error in line][0].startswith("["), proc.stderr

    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", f"data.root={root}", *TINY_SFEW_UNCROPPED, f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert proc.returncode == 1
    assert error not in proc.stdout, proc.stdout
    # The job's own line (saying where it is recorded), then the sweep's list of failed jobs.
    job_lines = [line for line in _lines(proc.stderr) if "[ERROR]" in line and error in line]
    assert len(job_lines) == 1 and "failed.json" in proc.stderr, proc.stderr
    assert "1 job(s) of the sweep" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_sweep_wide_error_is_printed_once_with_its_count(tmp_path):
    """The headline sweep with no dataset: the error once, its count, and no false "finished"."""
    proc = run_cli(
        "-m",
        "prune.ratio=0.5,0.9,0.95",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env={"SFEW_ROOT": str(tmp_path / "no_dataset")},
    )
    assert proc.returncode == 1
    err = proc.stderr
    assert err.count("does not exist or is not a folder") == 1, err
    assert err.count("Point data.root") == 1, err
    assert "3 jobs (prune.ratio=0.5, prune.ratio=0.9, prune.ratio=0.95)" in err, err
    assert "No job of the sweep finished." in err
    assert "finished;" not in err and "The other jobs" not in err
    assert "prune.ratio=0.9: failed with the same error as prune.ratio=0.5" in err
    assert "Traceback" not in proc.stdout + err


# Runs `python -m fer_lottery ARGS`, then prints which heavy packages the process imported.
HEAVY_IMPORTS = """
import json, runpy, sys
sys.argv = ["fer_lottery", *sys.argv[1:]]
try:
    runpy.run_module("fer_lottery", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
heavy = {"torch", "pytorch_lightning", "torchmetrics", "torchvision", "matplotlib", "scipy"}
print(json.dumps(sorted(heavy & {m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("args", [["--cfg", "job"], ["prune.ratio=2"]])
def test_composing_and_config_errors_import_no_torch(tmp_path, args):
    """`--cfg job` and config errors take a fraction of a second: torch is imported to train."""
    proc = subprocess.run(
        [sys.executable, "-c", HEAVY_IMPORTS, *args, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "prune.ratio=2.0 must be in [0, 1)" in proc.stderr or args[0] == "--cfg"
    assert proc.stdout.splitlines()[-1] == "[]", proc.stdout[-500:] + proc.stderr[-500:]
