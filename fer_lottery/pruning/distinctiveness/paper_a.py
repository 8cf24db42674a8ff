"""The ``paper_a`` rule: what paper A's published code does, flaws included.

- **Layers and activations.** Every Conv2d and Linear of the model: on ResNet-18 conv1, each
  block's conv1 and conv2, the downsample convs and the logits layer ``fc``. ``layers``
  restricts the list. Each is hooked on its raw output, before BN and ReLU. An FC unit's vector
  is its output; a conv channel's is ``output.mean(-1).mean(-1)`` (over W, then H), in float32.
- **Angle.** ``acos(x.y / (|x| |y|))`` in degrees, in float32, with no normalisation. A pair is
  within the angle when it is ``< tau``. A cosine that rounds above 1 (an exact duplicate can)
  gives NaN, so that pair is never merged. An all-zero unit gives NaN with every unit and is
  flagged. No complementary pairs and no norm filter.
- **Pairing.** For each unit i in ascending order, every j < i within the angle is recorded.
  Every recorded j is removed (the lower index goes) and its weights are added to i's. So j's
  weights go to the first i that records it (``into``). A later i that records j adds j's
  zeroed row, that is nothing. When i is itself removed later, what it absorbed moves on with
  it, so chains end at the last keeper.
- **Merge and mask.** The layer's own incoming weights are merged (``W[i] += W[j]``, then
  ``W[j] = 0``). Only the removed unit's rows (filters) of that weight are masked. The bias, BN
  and the next layer are untouched, so a removed conv channel still passes its bias and BN
  shift on.

Exactness:
- The float32 cosine uses the code's own reductions: one product sum per pair and the norm of
  each column, on the CPU. On CPU these give bit-identical cosines.
- The formula is evaluated only for pairs whose float64 cosine is at least cos(tau) - 1e-3. That
  band is far wider than float32 rounding, so no pair within the angle is missed.
- Merged rows are summed in another order than the code's loop, so they agree to float
  rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from fer_lottery.pruning.distinctiveness.angles import (
    CHUNK,
    Pairing,
    collect_activations,
    gram_rows,
    roots,
    rows_into,
)

MARGIN = 1e-3  # float64 cosines this far below cos(tau) still get the exact float32 check
PAIR_ELEMENTS = 1 << 22  # products per batch of candidate pairs (16 MB of float32)


def layers(model: nn.Module) -> list[str]:
    """Every Conv2d and Linear module, in module order: the layers paper A's code prunes."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _raw(output: torch.Tensor) -> torch.Tensor:
    return output if output.dim() == 2 else output.mean(-1).mean(-1)


def activations(
    model: nn.Module, names: list[str], batches: Iterable, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """(samples, units) raw activations of each named Conv2d / Linear: one eval-mode pass."""
    return collect_activations(model, {n: n for n in names}, batches, device, _raw)


def pair(acts: torch.Tensor, angle: float, chunk: int = CHUNK) -> Pairing:
    """Which units paper A's code removes, and the first unit each one's weights go to."""
    a = acts.detach().float().cpu().contiguous()
    n, u = a.shape
    norms = torch.linalg.vector_norm(a, dim=0)
    rows = a.T.contiguous()
    flagged = ~(norms > 0)
    a64 = a.double()
    z = torch.where(flagged, 0.0, a64 / torch.where(flagged, 1.0, a64.norm(dim=0)))
    low = math.cos(math.radians(angle)) - MARGIN
    step = max(1, PAIR_ELEMENTS // max(n, 1))
    first = torch.full((u,), u, dtype=torch.long)
    for r0 in range(0, u, chunk):
        r1 = min(r0 + chunk, u)
        # candidate pairs (i, j), j < i, by their float64 cosine
        ii, jj = (gram_rows(z, r0, r1) > low).tril(r0 - 1).nonzero(as_tuple=True)
        ii = ii + r0
        for s in range(0, ii.numel(), step):
            i, j = ii[s : s + step], jj[s : s + step]
            cos = (rows[i] * rows[j]).sum(-1) / (norms[i] * norms[j])
            hit = torch.acos(cos).abs() * 180 / math.pi < angle
            first.scatter_reduce_(0, j[hit], i[hit], "amin")
    removed = first < u
    into = torch.where(removed, first, -1)
    n_removed = int(removed.sum())
    return Pairing(removed, into, flagged, ~flagged, n_removed, 0)


def merge(weight: torch.Tensor, pairing: Pairing) -> None:
    """In place: each removed unit's row, with what it absorbed, ends in its last keeper's row."""
    rows_into(weight, torch.from_numpy(roots(pairing.into.numpy())))


def zeroed(pairing: Pairing) -> torch.Tensor:
    """The rows the code's mask zeroes: every removed unit."""
    return pairing.removed
