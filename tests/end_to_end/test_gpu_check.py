"""The GPU check of #16 (benchmarks/gpu/), dry-run on the CPU: the wheels are fetched for real,
unpacked into a temporary site folder, and every step runs, shrunk, and writes its JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_gpu_check_dry_run_writes_every_step(tmp_path):
    wheels = tmp_path / "wheels"
    fetched = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu.fetch_wheels", "--out", str(wheels)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert {p.name.split("-")[0] for p in wheels.glob("*.whl")} >= {"hydra_core", "omegaconf"}
    out = tmp_path / "check.jsonl"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu/check.py", "--dry-run", "--wheels", str(wheels)]
        + ["--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"unpacked {len(list(wheels.glob('*.whl')))} wheels" in proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [json.loads(line) for line in proc.stdout.splitlines()]
    errors = [line for line in lines if "error" in line]
    assert not errors, errors
    names = {(line["step"], line.get("name"), line.get("model")) for line in lines}
    assert ("environment", None, None) in names
    (probe,) = [line for line in lines if line["step"] == "no_context_before_use"]
    assert probe["cuda_initialized"] is False and probe["device"] == "cpu"
    assert ("bench", "train_throughput", "resnet18") in names
    assert ("bench", "mask_overhead", "resnet18") in names
    assert ("bench", "epoch_overhead_resnet18", "resnet18 on 32 px") in names
    models = ("resnet18", "mobilenet_v2")  # the full run adds alexnet
    assert {("throughput", "train_throughput", m) for m in models} <= names
    (mobilenet,) = [line for line in lines if line.get("model") == "mobilenet_v2"]
    assert mobilenet["weights"] == "imagenet"  # a pretrained backbone, from its package
    assert ("packing", "packing", None) in names
    (table2,) = [line for line in lines if line["step"] == "table2"]
    assert table2["jobs"] == 2 and table2["paper_a_estimate_s"] > table2["wall_s"] > 0
    assert table2["precision"] == "32-true"
    benches = [line for line in lines if line["step"] in ("bench", "throughput", "packing")]
    assert all(line["device"].startswith("cpu") for line in benches)
