"""Mask overlap against chance: how far two final masks keep the same weights (or units).

For one layer of n entries whose masks keep the sets A and B (k_A and k_B entries):

- ``jaccard`` = |A ∩ B| / |A ∪ B|;
- ``share_of_a`` = |A ∩ B| / k_A, the share of A's kept entries that B keeps too;
- ``chance`` = k_A · k_B / n, the expected |A ∩ B| of two random masks with these densities,
  and ``chance_jaccard`` = chance / (k_A + k_B − chance);
- ``x_chance`` = |A ∩ B| / chance: 1 is what random masks of the same densities give.

The total sums the layers' counts (chance included), so it is not dominated by one layer's
ratio. Unit-level masks (distinctiveness; ``prune.granularity=unit``) are compared unit by unit:
a unit is kept when any entry of its incoming filter is (``unit_keep``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Overlap:
    """The overlap of two keep-sets over ``n`` entries."""

    n: int
    kept_a: int
    kept_b: int
    both: int
    # The chance level when it is not k_A k_B / n: a total of layers, the sum of theirs.
    expected: float | None = None

    @property
    def union(self) -> int:
        return self.kept_a + self.kept_b - self.both

    @property
    def jaccard(self) -> float:
        return self.both / self.union if self.union else 1.0

    @property
    def share_of_a(self) -> float:
        return self.both / self.kept_a if self.kept_a else 0.0

    @property
    def chance(self) -> float:
        if self.expected is not None:
            return self.expected
        return self.kept_a * self.kept_b / self.n if self.n else 0.0

    @property
    def chance_jaccard(self) -> float:
        denominator = self.kept_a + self.kept_b - self.chance
        return self.chance / denominator if denominator else 1.0

    @property
    def x_chance(self) -> float:
        return self.both / self.chance if self.chance else float("nan")

    def __add__(self, other: Overlap) -> Overlap:
        return Overlap(
            self.n + other.n,
            self.kept_a + other.kept_a,
            self.kept_b + other.kept_b,
            self.both + other.both,
            self.chance + other.chance,
        )

    def row(self) -> dict[str, float]:
        return {
            "n": self.n,
            "kept_a": self.kept_a,
            "kept_b": self.kept_b,
            "both": self.both,
            "jaccard": self.jaccard,
            "share_of_a": self.share_of_a,
            "chance": self.chance,
            "chance_jaccard": self.chance_jaccard,
            "x_chance": self.x_chance,
        }


def overlap(a: torch.Tensor, b: torch.Tensor) -> Overlap:
    """The overlap of two keep-masks (bool tensors of one shape)."""
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.bool().flatten(), b.bool().flatten()
    return Overlap(a.numel(), int(a.sum()), int(b.sum()), int((a & b).sum()))


def unit_keep(weight_keep: torch.Tensor) -> torch.Tensor:
    """Per unit (output channel or neuron), whether any entry of its incoming filter is kept."""
    return weight_keep.reshape(weight_keep.shape[0], -1).any(1)


def mask_overlap(
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    units: bool = False,
    layers: set[str] | None = None,
) -> dict[str, Overlap]:
    """Per weight the two masks share (``*.weight`` names), and ``total``; unit by unit with
    ``units``. Names only one mask holds are left out (a layer one run did not prune).

    ``layers``: only these layers (module names), the ones the criteria could prune, so that
    the total is not diluted by layers no run could touch. With ``units``, each layer counts once:
    a unit's BatchNorm entries (1-D) follow its filter and are not compared again."""
    out: dict[str, Overlap] = {}
    names = [n for n in a if n in b and n.endswith(".weight")]
    if layers is not None:
        names = [n for n in names if n.removesuffix(".weight") in layers]
    if units:
        names = [n for n in names if a[n].dim() > 1]
    for name in names:
        ka, kb = a[name], b[name]
        if units:
            ka, kb = unit_keep(ka), unit_keep(kb)
        out[name.removesuffix(".weight")] = overlap(ka, kb)
    if not out:
        raise ValueError("the two masks share no weight")
    total = Overlap(0, 0, 0, 0, 0.0)
    for value in out.values():
        total = total + value
    out["total"] = total
    return out
