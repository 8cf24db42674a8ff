"""Packing: K jobs of one sweep at once on one device (joblib ``n_jobs=K``), throughput and memory.

For each K in ``--jobs`` (1, 2, 4), one real Hydra multirun subprocess runs the same sweep of M
independent dense jobs (``seed=1..M``, M = the largest K, ``cache_dense=false`` so every job
trains) with ``hydra/launcher=joblib hydra.launcher.n_jobs=K``. Each job's ``results.json`` gives
its training images (``data/n_train``), epochs and ``time/dense_s``, and on a GPU its peak memory
(``gpu/max_memory_reserved_gb``). Per K:

- sweep wall seconds, from the command's start to its exit (process starts included);
- throughput in training images/s: the sum over the jobs of ``n_train x epochs``, over the wall;
- on a GPU: the largest per-job reserved memory, the device's total memory, and the largest K
  that fits, ``total / (per-job reserved + ~0.5 GB CUDA context)`` (an estimate from the measured
  per-job memory; the context size is a rule of thumb, not measured).

One line per K but the smallest: ``packing``, ours = throughput at K, baseline = throughput at the
smallest K (1 by default); higher is better. Each job sets its torch thread count itself
(``threads``: null, every CPU), so on a CPU K jobs share the cores; ``torch_threads`` is what the
jobs recorded. The Ks run once each, in increasing order, in one temporary folder.

Defaults: ``debug=tiny`` on a CPU (8 faces per class, 32 px, 2 epochs); SFEW-sized on a GPU (96
per class, 224 px, 5 epochs). ``--overrides`` appends Hydra overrides to every job.

``python -m benchmarks.bench_packing [--jobs 1,2,4] [--sweep-jobs M] [--overrides "..."]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit

REPO = Path(__file__).resolve().parents[1]
CONTEXT_GB = 0.5  # a CUDA context per process, roughly (not measured)

# debug=tiny (conf/debug/tiny.yaml): synthetic faces, random init, no progress bar; on a CPU its
# own sizes (8 faces per class, 32 px, 2 epochs).
COMMON = ("debug=tiny", "cache_dense=false", "+trainer.extra.enable_model_summary=false")
GPU_SIZE = ("data.synthetic.per_class=96", "data.image_size=224", "trainer.max_epochs=5")


def run_sweep(n_jobs: int, seeds: int, overrides: list[str], tmp: Path) -> tuple[float, list]:
    """Run the sweep with ``n_jobs`` at once: its wall seconds and each job's results."""
    sweep = tmp / f"n_jobs{n_jobs}"
    cmd = [
        sys.executable,
        "-m",
        "fer_lottery",
        "-m",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        f"hydra.sweep.dir={sweep}",
        "seed=" + ",".join(str(s) for s in range(1, seeds + 1)),
        *overrides,
    ]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "FER_LOTTERY_CACHE": str(tmp / "cache")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"n_jobs={n_jobs}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    if len(results) != seeds:
        sys.exit(f"n_jobs={n_jobs}: {len(results)} results.json, expected {seeds}")
    return wall, results


def summary(n_jobs: int, wall: float, results: list[dict]) -> dict:
    """What one sweep measured: wall, images/s, per-job times, threads and (GPU) memory."""
    images = sum(r["data/n_train"] * r["config"]["trainer"]["max_epochs"] for r in results)
    out = {
        "n_jobs": n_jobs,
        "sweep_wall_s": round(wall, 2),
        "images_per_s": images / wall,
        "job_dense_s": [r["time/dense_s"] for r in results],
        "torch_threads": sorted({r["torch/threads"] for r in results}),
    }
    reserved = [r.get("gpu/max_memory_reserved_gb") for r in results]
    if None not in reserved:
        out["per_job_reserved_gb"] = max(reserved)
        out["per_job_allocated_gb"] = max(r["gpu/max_memory_allocated_gb"] for r in results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", default="1,2,4", help="values of n_jobs, comma-separated")
    parser.add_argument("--sweep-jobs", type=int, help="jobs in the sweep (default: largest K)")
    parser.add_argument("--overrides", default="", help="extra Hydra overrides for every job")
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.jobs.split(",")})
    if len(ks) < 2:
        parser.error("--jobs needs two values or more: the smallest is the baseline")
    seeds = args.sweep_jobs or max(ks)
    gpu = torch.cuda.is_available()  # asks the driver only: no CUDA context in this process
    overrides = [*COMMON, *(GPU_SIZE if gpu else ()), *shlex.split(args.overrides)]

    with tempfile.TemporaryDirectory() as tmp:
        runs = {k: summary(k, *run_sweep(k, seeds, overrides, Path(tmp))) for k in ks}

    memory = {}
    if gpu:
        total_gb = torch.cuda.get_device_properties(0).total_memory / 1024**3
        per_job = max(run["per_job_reserved_gb"] for run in runs.values())
        memory = {
            "device_total_gb": round(total_gb, 2),
            "max_n_jobs_estimate": int(total_gb // (per_job + CONTEXT_GB)),
            "max_n_jobs_is": f"estimate: total / (measured per-job reserved + {CONTEXT_GB} GB)",
        }
    base = runs[ks[0]]
    for k in ks[1:]:
        run = runs[k]
        emit(
            "packing",
            run["images_per_s"],
            base["images_per_s"],
            "images/s",
            digits=1,
            n_jobs=k,
            baseline_n_jobs=ks[0],
            sweep_wall_s=run["sweep_wall_s"],
            baseline_sweep_wall_s=base["sweep_wall_s"],
            job_dense_s=run["job_dense_s"],
            baseline_job_dense_s=base["job_dense_s"],
            torch_threads=run["torch_threads"],
            baseline_torch_threads=base["torch_threads"],
            **{
                key: run[key]
                for key in ("per_job_reserved_gb", "per_job_allocated_gb")
                if key in run
            },
            **memory,
            sweep=f"{seeds} dense jobs (seed=1..{seeds}), joblib",
            overrides=" ".join(overrides),
            higher_is_better=True,
        )


if __name__ == "__main__":
    main()
