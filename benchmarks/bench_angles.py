"""Distinctiveness angle step on AlexNet fc7 (4096 units) against a plain-PyTorch baseline.

The baseline is the floor of any all-pairs method: one Gram matmul of the normalised activation
matrix, in the same process on the same data, alternating. Prints one JSON line per setting:
``python -m benchmarks.bench_angles``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import alternate, emit
from fer_lottery.pruning.distinctiveness import pair_units


def activations(n: int = 500, units: int = 4096, seed: int = 0) -> torch.Tensor:
    """fc7-like sparse post-ReLU activations: low-rank structure plus noise, many zeros."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 16, generator=g) @ torch.randn(16, units, generator=g) / 4
    return torch.relu(low + 0.5 * torch.randn(n, units, generator=g) - 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    acts = activations()

    def baseline() -> None:
        z = acts - acts.mean(0)
        z = z / z.norm(dim=0).clamp_min(1e-12)
        (z.T @ z).clamp_(-1, 1)

    for angle in (5.0, 30.0):
        for complementary in (False, True):
            s = alternate(
                {
                    "ours": lambda a=angle, c=complementary: pair_units(
                        acts,
                        a,
                        complementary=c,
                        normalize="minmax",
                        norm_std=None,
                        variant="honest",
                    ),
                    "baseline": baseline,
                },
                args.repeats,
            )
            emit(
                "angles",
                s["ours"],
                s["baseline"],
                "s",
                digits=4,
                baseline_is="one Gram matmul of the normalised activations (all pairs)",
                units=acts.shape[1],
                samples=acts.shape[0],
                angle=angle,
                complementary=complementary,
                repeats=args.repeats,
            )


if __name__ == "__main__":
    main()
