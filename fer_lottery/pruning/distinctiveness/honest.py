"""The ``honest`` rule (docs/design.md "Distinctiveness, precisely").

Normalise per unit (``normalize="minmax"``: to [-0.5, 0.5]; ``"center"``: subtract the mean).
Units that are constant (dead ones included) are flagged and not compared. With ``norm_std=k``
only units whose raw activation norm is more than k standard deviations from the layer's mean
norm are compared. Pairs are taken greedily, most extreme first (largest ``|cos|``: the angle's
distance from 0 or 180 degrees; ties by the unit indices): a similar pair (angle < tau) whose two
units are both still present merges the higher-index unit j into i (``W_next[:, i] +=
W_next[:, j]``, then j is masked: incoming weights, bias, BN gamma/beta, outgoing weights); with
``complementary=True`` a pair with angle > 180 - tau removes both units (no merge), unless that
would leave the layer without a compared unit. A removed unit takes part in no later pair, so no
weight is ever added to a removed unit, and merges chain correctly: a keeper merged away later
carries what it absorbed (and a keeper removed as complementary takes it with it).

Speed: "angle < tau" is tested as "cos > cos(tau)" on the Gram matrix. Pairing without
complementary pairs needs no list of pairs: unit u (which can only be removed by a pair (a, u)
with a < u) is removed by the most similar earlier unit a that is still present at that pair's
turn, i.e. whose own removal pair is less extreme; this recursion runs once per unit over a row
of the Gram matrix. With complementary pairs the candidate pairs are processed in sorted blocks,
pairs with a removed unit being dropped in bulk between blocks and skipped in vectorised runs
within one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fer_lottery.pruning.distinctiveness.angles import (
    Pairing,
    PrunableUnit,
    gram_rows,
    roots,
    unit_columns,
)

BLOCK_PER_UNIT, BLOCK_MIN = 8, 1 << 15  # first sorted block of candidate pairs (complementary on)


def pair(
    acts: torch.Tensor,
    angle: float,
    *,
    complementary: bool,
    normalize: str,
    norm_std: float | None,
    chunk: int,
) -> Pairing:
    """Normalise, filter by norm, and pair greedily; ``into`` is the end of each merge chain."""
    units = acts.shape[1]
    z, flagged = normalise(acts, normalize)
    compared = ~flagged
    if norm_std is not None:
        compared &= norm_filter(acts, norm_std)
    idx = compared.nonzero().squeeze(1)
    zc = z[:, idx]
    cos_tau = math.cos(math.radians(angle))
    idx_cpu = idx.cpu()
    removed = torch.zeros(units, dtype=torch.bool)
    into = torch.full((units,), -1, dtype=torch.long)
    similar = compl = 0
    if idx.numel() >= 2:
        if complementary:
            parent, gone, similar, compl = greedy_general(zc, cos_tau, chunk)
        else:
            parent = greedy_similar(zc, cos_tau, chunk)
            gone = parent >= 0
            similar = int(gone.sum())
        merged = torch.from_numpy(parent >= 0)
        target = torch.from_numpy(roots(parent))
        removed[idx_cpu] = torch.from_numpy(gone)
        into[idx_cpu[merged]] = idx_cpu[target[merged]]
    return Pairing(removed, into, flagged.cpu(), compared.cpu(), similar, compl)


def normalise(acts: torch.Tensor, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm columns to compare, and the flag of units that cannot be compared."""
    a = acts.double()
    lo, hi = a.amin(0), a.amax(0)
    span = hi - lo
    flagged = span <= 1e-6 * torch.maximum(lo.abs(), hi.abs())
    if normalize == "minmax":
        y = (a - lo) / torch.where(flagged, 1.0, span) - 0.5
    else:
        y = a - a.mean(0)
    return unit_columns(y, flagged)


def norm_filter(acts: torch.Tensor, k: float) -> torch.Tensor:
    """Raw activation norm more than k standard deviations from the layer's mean norm."""
    norm = acts.double().norm(dim=0)
    return (norm - norm.mean()).abs() > k * norm.std(correction=0)


def greedy_similar(z: torch.Tensor, cos_tau: float, chunk: int) -> np.ndarray:
    """Greedy over similar pairs only: each unit's merge target (its keeper) or -1.

    Greedy order is (cos descending, then (i, j) ascending). Unit u can only be removed by a pair
    (a, u), a < u; that pair fires iff a is still present, i.e. a's own removing pair (cosine
    ``removed_at[a]``) comes later: ``cos(a, u) > removed_at[a]`` (a tie is won by a's pair, whose
    indices are smaller). So u's fate follows from the units before it, one Gram row at a time.
    """
    u = z.shape[1]
    parent = np.full(u, -1, dtype=np.int64)
    # need[a]: cos(a, u) must exceed this for the pair (a, u) to fire
    need = np.empty(u, dtype=np.float32)
    for r0 in range(0, u, chunk):
        r1 = min(r0 + chunk, u)
        g = gram_rows(z, r0, r1).cpu().numpy()
        for k in range(r1 - r0):
            j = r0 + k
            row = g[k, :j]
            hit = row > need[:j]
            if hit.any():
                vals = np.where(hit, row, -np.inf)
                i = int(vals.argmax())
                parent[j] = i
                need[j] = vals[i]
            else:
                need[j] = cos_tau
    return parent


def _candidate_keys(z: torch.Tensor, cos_tau: float, chunk: int, bits: int) -> torch.Tensor:
    """Every pair with |cos| > cos(tau), as one sortable int64 per pair.

    High 32 bits: ~float bits of |cos| (ascending key = descending |cos|); then i, j (i < j) and a
    complementary flag, so sorting gives the greedy order with ties broken by (i, j).
    """
    u = z.shape[1]
    out = []
    for r0 in range(0, u, chunk):
        r1 = min(r0 + chunk, u)
        g = gram_rows(z, r0, r1).tril_(r0 - 1)
        hit = g.abs() > cos_tau
        jj, ii = hit.nonzero(as_tuple=True)
        v = g[jj, ii]
        strength = v.abs()  # not clamped: the similar-only path compares the raw values too
        key = (0x7FFFFFFF - strength.view(torch.int32)).long() << 32
        key |= (ii << (bits + 1)) | ((jj + r0) << 1) | (v < 0).long()
        out.append(key.cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def _decode(keys: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    low = keys.to(torch.int32)  # low 32 bits; (i, j, flag) < 2**31
    return low >> (bits + 1), (low >> 1) & ((1 << bits) - 1)


def _live(keys: torch.Tensor, alive: np.ndarray, bits: int) -> torch.Tensor:
    i, j = _decode(keys, bits)
    a = torch.from_numpy(alive)
    return a.index_select(0, i) & a.index_select(0, j)


def greedy_general(z: torch.Tensor, cos_tau: float, chunk: int):
    """Greedy over similar and complementary pairs: (parent, removed, similar, complementary).

    Candidate pairs are sorted lazily: the most extreme block first (found with a sampled
    threshold), then the rest, with pairs that lost a unit dropped in bulk between blocks.
    """
    u = z.shape[1]
    bits = max(1, (u - 1).bit_length())
    if 2 * bits + 1 > 31:
        raise ValueError(f"too many units in one layer for pairing ({u})")
    keys = _candidate_keys(z, cos_tau, chunk, bits)
    alive = np.ones(u, dtype=bool)
    parent = np.full(u, -1, dtype=np.int64)
    state = {"n": u, "similar": 0, "complementary": 0}
    block = max(BLOCK_PER_UNIT * u, BLOCK_MIN)
    while keys.numel() and state["n"] >= 2:
        rest = None
        if keys.numel() > 2 * block:
            sample = keys[:: max(1, keys.numel() // 65536)]
            k = max(1, sample.numel() * block // keys.numel())
            rest = keys > torch.kthvalue(sample, k).values
            head = keys[~rest]
        else:
            head = keys
        head = torch.sort(head).values
        _scan(head[_live(head, alive, bits)], bits, alive, parent, state)
        if rest is None or state["n"] < 2:
            break
        keys = keys[rest & _live(keys, alive, bits)]
        block *= 2
    return parent, ~alive, state["similar"], state["complementary"]


def _scan(keys: torch.Tensor, bits: int, alive: np.ndarray, parent: np.ndarray, state: dict):
    """Process sorted pairs in order; runs of pairs with a removed unit are skipped vectorised."""
    i_t, j_t = _decode(keys, bits)
    ii, jj = i_t.numpy(), j_t.numpy()
    il, jl, cl = ii.tolist(), jj.tolist(), (keys & 1).bool().tolist()
    pos, end = 0, len(il)
    n = state["n"]
    while pos < end and n >= 2:
        i, j = il[pos], jl[pos]
        if alive[i] and alive[j]:
            if not cl[pos]:
                alive[j] = False
                parent[j] = i
                n -= 1
                state["similar"] += 1
            elif n >= 3:
                alive[i] = alive[j] = False
                n -= 2
                state["complementary"] += 1
            pos += 1
            continue
        pos += 1
        step = 64
        while pos < end:
            live = alive[ii[pos : pos + step]] & alive[jj[pos : pos + step]]
            k = int(live.argmax())
            if live[k]:
                pos += k
                break
            pos += step
            step *= 4
    state["n"] = n


# -- merge and mask -----------------------------------------------------------------------------


@torch.no_grad()
def merge(model: nn.Module, unit: PrunableUnit, into: torch.Tensor) -> None:
    """Add each merged unit's outgoing weights (columns of the next layer) to its keeper's."""
    src = (into >= 0).nonzero().squeeze(1)
    if not src.numel():
        return
    weight = model.get_submodule(unit.next).weight
    n_units = into.numel()
    w = weight.detach().reshape(weight.shape[0], n_units, -1).clone()
    src = src.to(w.device)
    w.index_add_(1, into.to(w.device)[src], w[:, src])
    weight.copy_(w.view(weight.shape))


def mask(model: nn.Module, unit: PrunableUnit, removed: torch.Tensor, keep: dict) -> None:
    """Mark a removed unit's incoming weights, bias, BN gamma/beta and outgoing weights."""
    state = model.state_dict(keep_vars=True)

    def entry(name: str) -> torch.Tensor:
        if name not in keep:
            keep[name] = torch.ones(state[name].shape, dtype=torch.bool)
        return keep[name]

    for owner in unit.owners:
        for suffix in ("weight", "bias"):
            name = f"{owner}.{suffix}"
            if name in state and state[name] is not None:
                entry(name)[removed] = False
    out = entry(f"{unit.next}.weight")
    out.view(out.shape[0], removed.numel(), -1)[:, removed] = False
