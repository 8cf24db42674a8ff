"""The SLURM launcher against a real scheduler (#17): ``make slurm-up`` brings up a one-node
cluster on this machine (``tools/slurm_local.sh``), and these tests submit real sweeps to it
with ``sbatch``, through submitit. Skipped where ``sinfo`` finds no cluster.

- A request that no node of the partition can fit is refused in one line before anything is
  submitted (it would wait in the queue for ever).
- A sweep runs as one job array; its jobs share the dense cache (one trains it, the other hits
  it), and each job's numbers equal the same sweep run by the basic launcher.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TINY_SYNTHETIC, run_cli


def _partition() -> str | None:
    """The cluster's default partition, or None when no SLURM controller answers."""
    if shutil.which("sinfo") is None:
        return None
    proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    names = proc.stdout.split()
    if proc.returncode != 0 or not names:
        return None
    default = [n for n in names if n.endswith("*")]
    return (default or names)[0].rstrip("*")


PARTITION = _partition()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(PARTITION is None, reason="no SLURM cluster here (make slurm-up)"),
]

# A job the one-node cluster can run: 1 CPU, 2 GB, no GPU, 10 minutes.
FITS = (
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.setup=[]",
    "hydra.launcher.timeout_min=10",
)


def _largest(field: str) -> int:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", PARTITION, "-o", field], capture_output=True, text=True
    ).stdout
    return max(int(v.split("(")[0]) for v in out.split())


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("hydra.launcher.mem_gb=100000", "hydra.launcher.mem_gb=100000 asks 100000 GB"),
        ("hydra.launcher.cpus_per_task=4096", "hydra.launcher.cpus_per_task=4096 asks 4096 CPUs"),
        ("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node=1: no node of partition"),
        ("hydra.launcher.partition=no_such_partition", "no such partition (sinfo lists: "),
    ],
)
def test_a_request_no_node_fits_is_refused_in_one_line(tmp_path, override, says):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        *TINY_SYNTHETIC,
        *FITS,
        override,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], proc.stderr
    if "mem_gb" in override:
        assert f"offers {_largest('%m') / 1024:.1f} GB".replace(".0 GB", " GB") in lines[0]
    assert not list(sweep.glob(".submitit/*"))  # nothing was submitted


def _numbers(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    keep = ("test/", "val/", "dense/test/", "dense/val/", "prune/", "params/", "data/")
    return {k: v for k, v in results.items() if k.startswith(keep)}


@pytest.mark.slow
def test_a_sweep_runs_as_one_job_array_sharing_the_dense_cache(tmp_path):
    """Two prune ratios through sbatch: one array of two tasks; the dense model is trained once
    and hit once; every job's numbers equal the basic launcher's."""
    ratios = ("prune.ratio=0.5,0.9", "threads=1")
    sweep = tmp_path / "slurm"
    run_cli("-m", *TINY_SYNTHETIC, *ratios, *FITS, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    tasks = sorted(p.name for p in sweep.glob(".submitit/[0-9]*_[0-9]*"))  # <array id>_<task>
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1, tasks  # one array
    script = next(sweep.glob(".submitit/[0-9]*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%" in script
    caches = sorted(
        json.loads((sweep / r / "results.json").read_text())["dense/cache"]
        for r in ("prune.ratio=0.5", "prune.ratio=0.9")
    )
    assert caches == ["hit", "miss"]

    basic = tmp_path / "basic"
    run_cli(
        "-m",
        *TINY_SYNTHETIC,
        *ratios,
        f"hydra.sweep.dir={basic}",
        cwd=tmp_path / "basic_cwd",  # its own dense cache
    )
    for ratio in ("prune.ratio=0.5", "prune.ratio=0.9"):
        assert _numbers(sweep / ratio) == _numbers(basic / ratio), ratio
