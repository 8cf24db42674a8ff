"""Distinctiveness angle step on AlexNet fc7 (4096 units) against a per-pair Python loop.

The baseline is what a hand-written script does: normalise each unit's activations (``minmax``,
to [-0.5, 0.5], constant units left out, as ours), then loop over the pairs i < j computing each
angle with torch ops (``torch.dot``, norms, ``acos``), collect the pairs under tau (and, with
``complementary``, over 180 - tau), sort them most extreme first and pick them greedily (a pair
fires while both its units are present). 4096 units make 8.4 million pairs, minutes of Python,
so the loop is timed on the first ``--pairs`` pairs and scaled linearly to all of them; the
greedy pick is timed once per setting on the full candidate list (found with a Gram matmul,
untimed, as a stand-in for the loop's output). The baseline is that extrapolation plus that pick.
The floor of any all-pairs method, one Gram matmul of the normalised activations, is timed too
(``gram_floor_s``). Ours, the loop and the floor run in one process on the same data,
alternating.

Before timing, the loop and greedy pick run in full on a small layer (the first ``--check-units``
units) and must give the same removed units and merge targets as ``pair_units`` (``check_same``).
Prints one JSON line per setting: ``python -m benchmarks.bench_angles``.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import alternate, emit
from fer_lottery.pruning.distinctiveness import pair_units

Candidate = tuple[float, int, int, bool]  # (degrees from 0 or 180, i, j, complementary)


def activations(n: int = 500, units: int = 4096, seed: int = 0) -> torch.Tensor:
    """fc7-like sparse post-ReLU activations: low-rank structure plus noise, many zeros."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 16, generator=g) @ torch.randn(16, units, generator=g) / 4
    return torch.relu(low + 0.5 * torch.randn(n, units, generator=g) - 0.5)


# -- the hand-written baseline ---------------------------------------------------------------------


def minmax(acts: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Each unit's activations mapped to [-0.5, 0.5] (one row per unit), and the units compared.

    Constant units (dead ones included) cannot be compared and are left out, as ours does.
    """
    lo, hi = acts.amin(0), acts.amax(0)
    span = hi - lo
    flat = span <= 1e-6 * torch.maximum(lo.abs(), hi.abs())
    y = (acts - lo) / torch.where(flat, 1.0, span) - 0.5
    return y.T.contiguous(), (~flat).nonzero().squeeze(1).tolist()


def loop_angles(
    rows: torch.Tensor,
    units: list[int],
    angle: float,
    complementary: bool,
    limit: int | None = None,
) -> tuple[list[Candidate], int]:
    """The per-pair loop: each pair's angle with torch ops; the candidates, and pairs visited."""
    out: list[Candidate] = []
    n = 0
    for k, i in enumerate(units):
        a = rows[i]
        for j in units[k + 1 :]:
            if n == limit:
                return out, n
            b = rows[j]
            cos = torch.dot(a, b) / (a.norm() * b.norm())
            deg = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0))).item()
            if deg < angle:
                out.append((deg, i, j, False))
            elif complementary and deg > 180.0 - angle:
                out.append((180.0 - deg, i, j, True))
            n += 1
    return out, n


def greedy(candidates: list[Candidate], n_units: int, n_compared: int) -> tuple[list, list]:
    """Most extreme pair first (ties by i, j): a similar pair merges j into i, a complementary
    pair removes both (unless that would leave no compared unit). Returns (removed, parent).

    ``candidates`` must be in the loop's (i, j) order.
    """
    alive = [True] * n_units
    parent = [-1] * n_units
    n = n_compared
    # stable sort on the angle: ties keep the loop's (i, j) order
    for _, i, j, compl in sorted(candidates, key=lambda c: c[0]):
        if n < 2:
            break
        if alive[i] and alive[j]:
            if not compl:
                alive[j] = False
                parent[j] = i
                n -= 1
            elif n >= 3:
                alive[i] = alive[j] = False
                n -= 2
    return [not a for a in alive], parent


def chain_ends(parent: list[int]) -> list[int]:
    """Each merged unit's keeper at the end of its merge chain, else -1 (as ``Pairing.into``)."""
    into = []
    for p in parent:
        if p < 0:
            into.append(-1)
            continue
        while parent[p] >= 0:
            p = parent[p]
        into.append(p)
    return into


def all_candidates(
    rows: torch.Tensor, units: list[int], angle: float, complementary: bool
) -> list[Candidate]:
    """The loop's candidate list for the whole layer, from one Gram matmul (not timed)."""
    idx = torch.tensor(units, dtype=torch.long)
    z = rows[idx]
    z = z / z.norm(dim=1, keepdim=True)
    g = (z @ z.T).clamp_(-1.0, 1.0)
    ii, jj = torch.triu_indices(len(units), len(units), 1)
    deg = torch.rad2deg(torch.acos(g[ii, jj]))
    del g
    similar = deg < angle
    compl = (deg > 180.0 - angle) if complementary else torch.zeros_like(similar)
    keep = similar | compl
    dist = torch.where(compl, 180.0 - deg, deg)[keep]
    return list(
        zip(
            dist.tolist(),
            idx[ii[keep]].tolist(),
            idx[jj[keep]].tolist(),
            compl[keep].tolist(),
            strict=True,
        )
    )


# -- the check and the timing ----------------------------------------------------------------------


def same_as_ours(acts: torch.Tensor, angle: float, complementary: bool) -> tuple[bool, int]:
    """Full per-pair loop and greedy pick on ``acts``: the same removed units and keepers?

    Also returns how many units ours removes there (0 makes the check a weak one).
    """
    ours = pair_units(
        acts, angle, complementary=complementary, normalize="minmax", variant="honest"
    )
    rows, units = minmax(acts)
    candidates, _ = loop_angles(rows, units, angle, complementary)
    removed, parent = greedy(candidates, acts.shape[1], len(units))
    same = ours.removed.tolist() == removed and ours.into.tolist() == chain_ends(parent)
    return same, int(ours.removed.sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=10_000, help="pairs the loop is timed on")
    parser.add_argument("--check-units", type=int, default=64)
    args = parser.parse_args()
    acts = activations()
    rows, units = minmax(acts)
    pairs_total = len(units) * (len(units) - 1) // 2

    def gram_floor() -> None:
        z = acts - acts.mean(0)
        z = z / z.norm(dim=0).clamp_min(1e-12)
        (z.T @ z).clamp_(-1, 1)

    for angle in (5.0, 30.0):
        for complementary in (False, True):
            check, check_removed = same_as_ours(acts[:, : args.check_units], angle, complementary)
            candidates = all_candidates(rows, units, angle, complementary)
            start = time.perf_counter()
            greedy(candidates, acts.shape[1], len(units))
            pick_s = time.perf_counter() - start
            n_candidates = len(candidates)
            del candidates

            def baseline(a=angle, c=complementary, pick=pick_s) -> float:
                start = time.perf_counter()
                _, n = loop_angles(rows, units, a, c, limit=args.pairs)
                return (time.perf_counter() - start) / n * pairs_total + pick

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
                    "gram_floor": gram_floor,
                },
                args.repeats,
            )
            emit(
                "angles",
                s["ours"],
                s["baseline"],
                "s",
                digits=4,
                baseline_is=(
                    f"per-pair Python loop (torch dot/norm/acos per pair), timed on "
                    f"{args.pairs} pairs and scaled to all {pairs_total} pairs, plus the "
                    f"greedy pick over all {n_candidates} candidate pairs (timed once)"
                ),
                pairs_timed=args.pairs,
                pairs_total=pairs_total,
                candidates=n_candidates,
                pick_s=round(pick_s, 3),
                gram_floor_s=round(s["gram_floor"], 4),
                check_units=args.check_units,
                check_same=check,
                check_removed=check_removed,
                units=acts.shape[1],
                samples=acts.shape[0],
                angle=angle,
                complementary=complementary,
                repeats=args.repeats,
            )


if __name__ == "__main__":
    main()
