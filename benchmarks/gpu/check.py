"""The GPU check: what fer_lottery does on a GPU, measured in one command, in under 8 minutes.

Run on the GPU machine, from the working tree, with nothing installed beyond what it has
(torch, torchvision, Lightning, torchmetrics, tensorboard, scipy, matplotlib, joblib) and the
wheels that ``benchmarks/gpu/fetch_wheels.py`` put in ``benchmarks/gpu/wheels/``::

    python benchmarks/gpu/check.py [--out gpu_check.jsonl]
    python benchmarks/gpu/check.py --dry-run      # everything shrunk: a CPU run in a few minutes

The wheels are unpacked into a temporary folder put first on ``PYTHONPATH``, with the working
tree, for this process and every job it starts. Each measurement is a JSON line on stdout (and
in ``--out``); progress goes to stderr. The steps:

1. ``environment``: torch, CUDA, the device, its capability, whether this torch supports it;
   ``no_context_before_use``: a job resolves its device without making a CUDA context;
2. ``make bench``'s lines on this device: training throughput and mask overhead at 32 px,
   ``epoch_overhead_resnet18`` (target <= 20 ms);
3. dense ResNet-18, AlexNet and MobileNetV2 (with its packaged ImageNet weights) training at
   224 px on SFEW-sized synthetic faces (96 per class) in bf16-mixed with channels_last, against
   a plain PyTorch loop on the same GPU;
4. packing: K = 1, 2, 4 and 8 dense jobs at once on the GPU (joblib), images/s and memory;
5. paper A's Table 2 with one seed and 50 epochs (1 dense training + 5 retrainings), its fixed
   costs (process starts, data, tests) apart, and the wall time extrapolated to all of paper A
   (5 dense trainings + 135 retrainings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEELS = Path(__file__).resolve().parent / "wheels"
# Paper A: 5 seeds x (a dense fine-tune, then 27 retrainings: Tables 1-5 and Figure 1).
PAPER_A_DENSE, PAPER_A_RETRAININGS = 5, 135

FULL = {
    "bench_32px": ["--image-size", "32", "--per-class", "20", "--repeats", "3"],
    "epoch_overhead_repeats": "7",
    "throughput": ["--image-size", "224", "--per-class", "96", "--epochs", "2", "--repeats", "3"],
    "models": ("resnet18", "alexnet", "mobilenet_v2:imagenet"),
    "packing": ["--jobs", "1,2,4,8", "--overrides", "trainer.max_epochs=2"],
    "table2": [
        "data=synthetic",
        "data.synthetic.per_class=96",
        "model.weights=null",
        "trainer.enable_progress_bar=false",
    ],
    "timeout_s": 420,
}
DRY = {
    "bench_32px": ["--image-size", "32", "--per-class", "4", "--repeats", "1"],
    "epoch_overhead_repeats": "1",
    "throughput": ["--image-size", "64", "--per-class", "4", "--epochs", "1", "--repeats", "1"],
    "models": ("resnet18", "mobilenet_v2:imagenet"),  # the full run adds alexnet
    "packing": ["--jobs", "1,2"],
    "table2": [
        "debug=tiny",
        "retrain.epochs=1",
        "trainer.max_epochs=1",
        "prune.ratio=0.5,0.9",  # the command line's sweep wins over the preset's five ratios
    ],
    "timeout_s": 300,
}


def unpack(wheels: Path, into: Path) -> list[str]:
    """Unzip every wheel in ``wheels`` into ``into`` (a wheel is a zip of its site-packages)."""
    names = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(into)
        names.append(wheel.name)
    return names


class Check:
    """The run: its environment for subprocesses, its output, the clock."""

    def __init__(self, site: Path | None, out: Path | None):
        paths = [str(REPO)] + ([str(site)] if site else [])
        paths += [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
        self.out = out.open("w") if out else None
        self.start = time.perf_counter()

    def progress(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {text}", file=sys.stderr, flush=True)

    def emit(self, line: dict) -> None:
        text = json.dumps(line)
        print(text, flush=True)
        if self.out:
            self.out.write(text + "\n")
            self.out.flush()

    def python(self, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def bench(self, step: str, module: str, args: list[str], cwd: Path, timeout: float) -> None:
        """Run ``python -m <module> <args>`` and pass on its JSON lines, tagged with ``step``."""
        self.progress(f"{step}: python -m {module} {' '.join(args)}")
        try:
            proc = self.python(["-m", module, *args], cwd, timeout)
        except subprocess.TimeoutExpired:
            self.emit({"step": step, "name": module, "error": f"timed out after {timeout} s"})
            return
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        for line in lines:
            self.emit({"step": step, **json.loads(line)})
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout)[-1500:]
            self.emit({"step": step, "name": module, "error": f"exit {proc.returncode}: {tail}"})


def environment(check: Check) -> None:
    import torch

    line: dict[str, object] = {
        "step": "environment",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "arch_list": torch.cuda.get_arch_list(),
        "cuda_available": torch.cuda.is_available(),
        "devices": torch.cuda.device_count(),
    }
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        props = torch.cuda.get_device_properties(0)
        line |= {
            "device": torch.cuda.get_device_name(0),
            "capability": f"{major}.{minor}",
            "supported": f"sm_{major}{minor}" in torch.cuda.get_arch_list(),
            "memory_gb": round(props.total_memory / 1024**3, 1),
        }
    check.emit(line)


# What a sweep job does before it takes the dense-cache lock: resolve its device and Trainer
# arguments. It must not make a CUDA context (a waiting job would hold GPU memory for nothing).
CONTEXT_PROBE = """
import json, os, shutil, subprocess, torch
from benchmarks.common import compose
from fer_lottery.core.devices import resolved_device
from fer_lottery.training.stage import trainer_kwargs
cfg = compose("debug=tiny")
device, kwargs = resolved_device(cfg), trainer_kwargs(cfg)
listed = None
if shutil.which("nvidia-smi"):
    apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.split()
    listed = str(os.getpid()) in apps
print(json.dumps({"device": device, "accelerator": kwargs["accelerator"],
                  "cuda_initialized": torch.cuda.is_initialized(), "context_listed": listed}))
"""


def no_context_before_use(check: Check, cwd: Path, timeout: float) -> None:
    """Step: the device and Trainer arguments are resolved without a CUDA context."""
    check.progress("no_context_before_use: resolve the device as a waiting job does")
    proc = check.python(["-c", CONTEXT_PROBE], cwd, timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        check.emit({"step": "no_context_before_use", "error": f"exit {proc.returncode}: {tail}"})
        return
    check.emit({"step": "no_context_before_use", **json.loads(lines[-1])})


def table2(check: Check, overrides: list[str], tmp: Path, timeout: float) -> None:
    """Paper A's Table 2 with one seed; its costs apart; paper A extrapolated from it."""
    sweep = tmp / "table2"
    args = ["-m", "fer_lottery", "-m", "experiment=paper_a_table2", "seed=1", *overrides]
    args += [f"hydra.sweep.dir={sweep}", f"cache_dir={tmp / 'cache'}"]
    check.progress(f"table2: python {' '.join(args)}")
    start = time.perf_counter()
    try:
        proc = check.python(args, tmp, timeout)
    except subprocess.TimeoutExpired:
        check.emit({"step": "table2", "error": f"timed out after {timeout} s"})
        return
    wall = time.perf_counter() - start
    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    if proc.returncode != 0 or not jobs:
        check.emit({"step": "table2", "error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"})
        return
    dense_s = max(float(j["time/dense_s"]) for j in jobs)  # trained by one job, loaded by others
    retrain_s = [float(j.get("time/retrain_s", 0.0)) for j in jobs]
    test_s = sum(float(j.get("time/test_s", 0.0)) for j in jobs)
    in_jobs = sum(float(j["time/total_s"]) for j in jobs)
    fixed_s = wall - dense_s - sum(retrain_s)  # process starts, data, pruning, tests, writes
    per_retrain = sum(retrain_s) / len(retrain_s)
    per_job_fixed = fixed_s / len(jobs)
    estimate = (
        PAPER_A_DENSE * dense_s
        + PAPER_A_RETRAININGS * per_retrain
        + (PAPER_A_DENSE + PAPER_A_RETRAININGS) * per_job_fixed
    )
    check.emit(
        {
            "step": "table2",
            "name": "paper_a_table2_one_seed",
            "jobs": len(jobs),
            "wall_s": round(wall, 1),
            "dense_train_s": round(dense_s, 1),
            "retrain_s_each": round(per_retrain, 1),
            "test_s_total": round(test_s, 1),
            "in_jobs_s_total": round(in_jobs, 1),
            "fixed_s": round(fixed_s, 1),
            "fixed_s_per_job": round(per_job_fixed, 1),
            "test_acc": [round(float(j["test/acc"]), 4) for j in jobs],
            "device": jobs[0].get("device/name"),
            "precision": jobs[0].get("device/precision"),
            "paper_a_estimate_s": round(estimate, 1),
            "paper_a_estimate_is": (
                f"{PAPER_A_DENSE} dense x {dense_s:.1f} s + {PAPER_A_RETRAININGS} retrainings x "
                f"{per_retrain:.1f} s + {PAPER_A_DENSE + PAPER_A_RETRAININGS} jobs x "
                f"{per_job_fixed:.1f} s fixed, one job at a time"
            ),
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="shrink everything (a CPU run)")
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="the fetched wheels")
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    with tempfile.TemporaryDirectory(prefix="fer_lottery_gpu_check_") as tmp_name:
        tmp = Path(tmp_name)
        site = None
        if args.wheels.is_dir() and any(args.wheels.glob("*.whl")):
            site = tmp / "site"
            names = unpack(args.wheels, site)
            print(f"unpacked {len(names)} wheels into {site}", file=sys.stderr)
        check = Check(site, args.out)
        environment(check)
        timeout = sizes["timeout_s"]
        work = tmp / "work"
        work.mkdir()
        no_context_before_use(check, work, timeout)
        check.bench("bench", "benchmarks.bench_training", sizes["bench_32px"], work, timeout)
        overhead = [
            "--only",
            "epoch_overhead_resnet18",
            "--repeats",
            sizes["epoch_overhead_repeats"],
        ]
        check.bench("bench", "benchmarks.bench_jobs", overhead, work, timeout)
        for entry in sizes["models"]:  # name[:weights]; mobilenet_v2 with its ImageNet weights
            model, _, weights = entry.partition(":")
            args_224 = [*sizes["throughput"], "--model", model, "--throughput-only"]
            args_224 += ["--weights", weights] if weights else []
            check.bench("throughput", "benchmarks.bench_training", args_224, work, timeout)
        check.bench("packing", "benchmarks.bench_packing", sizes["packing"], work, timeout)
        table2(check, sizes["table2"], tmp, timeout)
        check.progress("done")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
