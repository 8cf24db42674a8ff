"""Distinctiveness angle step on AlexNet fc7 (4096 units) against a plain-PyTorch baseline.

The baseline is the floor of any all-pairs method: one Gram matmul of the normalised activation
matrix, in the same process on the same data. Prints one JSON line per setting:
``python benchmarks/bench_angles.py``.
"""

from __future__ import annotations

import json
import time

import torch

from fer_lottery.pruning.distinctiveness import pair_units


def activations(n: int = 500, units: int = 4096, seed: int = 0) -> torch.Tensor:
    """fc7-like sparse post-ReLU activations: low-rank structure plus noise, many zeros."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 16, generator=g) @ torch.randn(16, units, generator=g) / 4
    return torch.relu(low + 0.5 * torch.randn(n, units, generator=g) - 0.5)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    acts = activations()

    def baseline() -> None:
        z = acts - acts.mean(0)
        z = z / z.norm(dim=0).clamp_min(1e-12)
        (z.T @ z).clamp_(-1, 1)

    base = best_of(baseline)
    for angle in (5.0, 30.0):
        for complementary in (False, True):
            ours = best_of(
                lambda a=angle, c=complementary: pair_units(
                    acts, a, complementary=c, normalize="minmax", norm_std=None, variant="honest"
                )
            )
            print(
                json.dumps(
                    {
                        "bench": "distinctiveness_angle_step",
                        "units": acts.shape[1],
                        "samples": acts.shape[0],
                        "angle": angle,
                        "complementary": complementary,
                        "seconds": round(ours, 4),
                        "baseline_gram_seconds": round(base, 4),
                        "ratio_to_baseline": round(ours / base, 2),
                        "threads": torch.get_num_threads(),
                    }
                )
            )


if __name__ == "__main__":
    main()
