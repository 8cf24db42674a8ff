"""The ``paper_b`` rule: what paper B's published code does (``prune_neurons``), flaws included.

- **Normalisation.** The layer's activation matrix (fc7's in the paper: ``layers=
  ["classifier.4"]``) is min-max normalised *as a whole* to [-0.5, 0.5], in float64. So units
  are not centred, and a dead unit becomes the constant vector -0.5.
- **Norm prefilter** (``norm_std=k``). Take each column's norm of the *normalised* matrix. A
  unit is compared only if its norm is < mean - k std or > mean + k std of those norms (std over
  units, ddof 0). A pair needs both of its units to pass. ``norm_std=None`` compares every unit.
  The code has no such setting: its default k = 0 drops only a unit whose norm equals the mean
  exactly.
- **Angle.** ``degrees(arccos(u.v / (|u| |v|)))`` of the normalised columns, in float64. A NaN
  angle is set to 1000 degrees. That happens for a column that normalises to all zeros (a
  constant at the matrix's mid-range), and for a cosine that rounds above 1. Such a unit is
  "complementary" to every compared unit.
- **Pairing.** A pair qualifies when its angle is < tau or > 180 - tau: similar and
  complementary pairs are treated alike. Pairs are taken in index order (i, j), i < j. Each adds
  j's weights to i's and zeroes j, and every j that appears is counted as removed. So j's
  weights go to its first partner i (``into``). There are no chains: when i is removed it was
  zeroed before its own pairs came.
- **Merge.** The layer's own incoming weights (its rows) are merged. The next layer (fc8) and
  every bias are untouched.
- **Revived units.** No mask is applied between pairs. So a pair (i, j) whose i was already
  removed writes j's weights into i's zeroed row. Unit i is live again although it is counted
  as removed (``Pairing.revived``, ``units_revived``). The mask zeroes only the rows that are
  zero at the end, the removed units that were not revived. So the masked model holds the
  code's weights.

Where the code cannot run as written: its row writes on a parameter that requires grad raise an
autograd error outside ``torch.no_grad()``; this follows the evident intent (the writes happen).
Outside ``prune_neurons``: run.py hooks fc7's output, which its in-place ReLU then overwrites, so
the code saw post-ReLU activations, as ``unit_activations`` gives.

Exactness: the Gram matrix and norms are reduced in another order than numpy's per-pair dots.
So a decision can differ from the code's only for an angle or norm within float64 rounding of a
threshold.
"""

from __future__ import annotations

import torch

from fer_lottery.pruning.distinctiveness.angles import CHUNK, Pairing, gram_rows, rows_into

NAN_DEGREES = 1000.0  # the code's value for an undefined angle


def normalise(acts: torch.Tensor) -> torch.Tensor:
    """The whole matrix min-max normalised to [-0.5, 0.5] (float64), as the code does it."""
    a = acts.detach().double()
    lo, hi = a.min(), a.max()
    return (a - lo) * (0.5 - -0.5) / (hi - lo) + -0.5


def pair(
    acts: torch.Tensor, angle: float, norm_std: float | None = None, chunk: int = CHUNK
) -> Pairing:
    """Which units paper B's code removes, each one's first partner, and which are revived."""
    u = acts.shape[1]
    a = acts.detach().double()
    if a.max() > a.min():
        y = normalise(a)
        norms = y.norm(dim=0)
        if norm_std is None:
            compared = torch.ones(u, dtype=torch.bool, device=a.device)
        else:
            mean, std = norms.mean(), norms.std(correction=0)
            compared = (norms < mean - std * norm_std) | (norms > mean + std * norm_std)
    else:  # the code divides by zero here: every norm is NaN and no unit passes
        y, norms = a, a.norm(dim=0)
        compared = torch.zeros(u, dtype=torch.bool, device=a.device)
    idx = compared.nonzero().squeeze(1)
    yc, nc = y[:, idx], norms[idx]
    m = idx.numel()
    first = torch.full((m,), -1, dtype=torch.long, device=a.device)
    high = torch.zeros(m, dtype=torch.bool, device=a.device)
    for r0 in range(0, m, chunk):
        r1 = min(r0 + chunk, m)
        cos = gram_rows(yc, r0, r1) / (nc[r0:r1, None] * nc[None, :r1])
        deg = torch.nan_to_num(torch.rad2deg(torch.acos(cos)), nan=NAN_DEGREES)
        hit = ((deg < angle) | (deg > 180.0 - angle)).tril(r0 - 1)  # partners i < j
        found = hit.any(1)
        i = hit.to(torch.uint8).argmax(1)  # the first partner
        first[r0:r1] = torch.where(found, i, -1)
        rows = torch.arange(r1 - r0, device=a.device)
        high[r0:r1] = found & (deg[rows, i] > 180.0 - angle)
    gone = first >= 0
    taker = torch.zeros(m, dtype=torch.bool, device=a.device)
    taker[first[gone]] = True
    idx, first, gone, high = idx.cpu(), first.cpu(), gone.cpu(), high.cpu()
    removed = torch.zeros(u, dtype=torch.bool)
    revived = torch.zeros(u, dtype=torch.bool)
    into = torch.full((u,), -1, dtype=torch.long)
    removed[idx] = gone
    revived[idx] = gone & taker.cpu()
    into[idx[gone]] = idx[first[gone]]
    compl = int(high.sum())
    flagged = torch.zeros(u, dtype=torch.bool)
    return Pairing(removed, into, flagged, compared.cpu(), int(gone.sum()) - compl, compl, revived)


def merge(weight: torch.Tensor, pairing: Pairing) -> None:
    """In place: each removed unit's row goes to its first partner's row; no chains."""
    target = torch.where(pairing.removed, pairing.into, torch.arange(pairing.into.numel()))
    rows_into(weight, target)


def zeroed(pairing: Pairing) -> torch.Tensor:
    """The rows that are zero after the code's merge: removed units that were not revived."""
    return pairing.removed & ~pairing.revived
