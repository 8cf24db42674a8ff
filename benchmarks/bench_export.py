"""CPU inference latency of an exported (slimmed) model against the dense masked model.

The model is pruned in-process by distinctiveness (``honest``, random init, activations of random
images), or taken from a finished run with ``--run-dir``; both models run in one process on the
same batch, alternating repeats, and the line quotes medians. Prints one JSON line:
``python -m benchmarks.bench_export``. Options: ``--model``, ``--angle``, ``--image-size``,
``--batch``, ``--repeats``, ``--threads``, ``--run-dir``. What the speed-up is worth depends on
how many units the pruning removed (``units_removed_frac``): random init removes other units than
training would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import alternate, emit
from fer_lottery.export.run import masked_model
from fer_lottery.export.slim import slim
from fer_lottery.models import build_model
from fer_lottery.pruning.distinctiveness import distinctiveness_prune


def pruned_in_process(arch: str, angle: float, seed: int = 0):
    """A random-init model pruned by honest distinctiveness on 64 random 64 px images."""
    torch.manual_seed(seed)
    model = build_model(arch, None).eval()
    x = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    result = distinctiveness_prune(model, arch, x.split(16), angle)
    result.mask.apply(model)
    return model, result.mask.tensors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "alexnet"])
    parser.add_argument("--angle", type=float, default=60.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    # One thread by default: on a shared 2-core machine, two OpenMP threads wait on each other
    # whenever another process runs, and the medians swing by 3x.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", type=Path, help="export this finished run instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run_dir is not None:
        dense, arch, mask = masked_model(args.run_dir)
        mask = mask.tensors
    else:
        arch = args.model
        dense, mask = pruned_in_process(arch, args.angle)
    export = slim(dense, arch, mask)
    ours = export.model.eval()
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    with torch.inference_mode():
        ms = alternate({"ours": lambda: ours(x), "baseline": lambda: dense(x)}, args.repeats)
    with torch.inference_mode():
        diff = float((ours(x) - dense(x)).abs().max())
    s = export.summary()
    units = sum(layer.units for layer in export.layers)
    emit(
        "export_latency",
        ms["ours"] * 1000,
        ms["baseline"] * 1000,
        "ms",
        digits=2,
        model=arch,
        source=str(args.run_dir) if args.run_dir else f"honest, angle {args.angle}",
        units_removed_frac=round(s["units_sliced"] / units, 3),
        params_ours=s["params_export"],
        params_baseline=s["params_dense"],
        params_ratio=round(s["params_export"] / s["params_dense"], 3),
        max_abs_diff=diff,
        image_size=args.image_size,
        batch=args.batch,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
