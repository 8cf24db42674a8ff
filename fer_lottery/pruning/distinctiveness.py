"""Distinctiveness pruning (Gedeon & Harris): merge units whose activation vectors are parallel.

Each prunable unit (an FC neuron or a conv channel) gets an activation vector over the training
split. Two units whose vectors are nearly parallel (angle < tau) do the same job: one is removed
and its outgoing weights are added to the other, so the next layer sees the same input. Two units
whose vectors are nearly opposite (angle > 180 - tau, "complementary") cancel out: both go.

``distinctiveness_prune`` merges the outgoing weights into ``model`` *in place* and returns a
``Mask``; the caller applies it (``result.mask.apply(model)``). Until then the removed units still
fire, so the model's output is the dense output plus the merged contributions (double counted).

Activations, for every variant: one eval-mode, no-grad pass over the given batches. FC units: the
post-ReLU output. Conv channels: the post-BN-ReLU (ResNet) or post-ReLU (AlexNet) map averaged
over HxW. Which layers: ResNet-18 only each BasicBlock's ``conv1`` channels (they feed only
``conv2``; every other conv output lies on a residual path shared with the skip connection, so
a merge there cannot keep the block's output); AlexNet conv1-5 and fc6, fc7 (fc8's units, the
logits, are never removed, though its input columns receive fc7's merges). ``layers`` restricts
this list, e.g. ``["classifier.4"]`` for paper B's fc7.

Variants (``variant=``):

- ``honest`` (DESIGN "Distinctiveness, precisely"): normalise per unit (``normalize="minmax"``:
  to [-0.5, 0.5]; ``"center"``: subtract the mean). Units that are constant (dead ones included)
  are flagged and not compared. With ``norm_std=k`` only units whose raw activation norm is more
  than k standard deviations from the layer's mean norm are compared. Pairs are taken greedily,
  most extreme first (largest ``|cos|``: the angle's distance from 0 or 180 degrees; ties by the
  unit indices): a similar pair (angle < tau) whose two units are both still present merges the
  higher-index unit j into i (``W_next[:, i] += W_next[:, j]``, then j is masked: incoming
  weights, bias, BN gamma/beta, outgoing weights); with ``complementary=True`` a pair with angle
  > 180 - tau removes both units (no merge), unless that would leave the layer without a
  compared unit. A removed unit takes part in no later pair, so no weight is ever added to a
  removed unit, and merges chain correctly: a keeper merged away later carries what it absorbed
  (and a keeper removed as complementary takes it with it).
- ``paper_a`` (paper A, section 2, read literally): raw activations, no normalisation (post-ReLU,
  so every angle is <= 90 degrees and complementary pairs cannot exist). "For every pair of
  neurons ... if the angle is lower than some threshold ... one of them is removed ... and its
  weights added to the remaining one": a double loop over pairs (i < j) in index order, removing
  j and adding its outgoing weights to i as each pair is met, with no check of whether i or j was
  already removed. Removal zeroes j at once, so a second pair (i2, j) adds nothing, but a pair
  (j, k) met after j's removal still moves k's weights into the removed j, where they are lost.
  Only all-zero (dead) units are excluded (their angle is undefined). ``normalize``,
  ``complementary`` and ``norm_std`` are ignored (the paper has none of them). The paper prunes
  "each layer"; here, as for ``honest``, only the layers listed above, since a ResNet block's
  output channels share the skip path and cannot be merged by adding outgoing weights.
- ``paper_b`` (paper B, section 2.3, read literally): fc7's activation matrix is min-max
  normalised to [-0.5, 0.5] as a whole ("the values were then normalized", one range for the
  whole samples x units matrix, not per unit; so units are not centred, and dead units become
  the constant vector -0.5 and are compared like any other); a pair is considered only if both
  units' norms ("the mean norm and standard deviation of the hidden layer outputs": raw
  activations) lie more than ``norm_std`` standard deviations from the layer's mean norm (no
  filter when ``norm_std`` is None); any pair with angle < degree_low = tau *or* angle >
  degree_high = 180 - tau (the paper reports one "Degree" per run) is handled the same way: "all
  the weights of the second weight vector were added to the first" and the second was zeroed.
  So complementary pairs are merged as if they were similar (Gedeon removes both), in the same
  index-order double loop as ``paper_a``. ``normalize`` and ``complementary`` are ignored. Pass
  ``layers=["classifier.4"]`` for the paper's fc7-only setting.

Where a paper says "weights" of a neuron are added to another, it is read as the *outgoing*
weights, as in the Gedeon & Harris method both papers cite; that is what keeps a duplicate unit's
merge exact. ``similar_pairs`` / ``complementary_pairs`` count removals by the kind of pair that
removed a unit (for the paper variants: the first qualifying pair in loop order).

Speed: all pairwise cosines come from one normalised Gram matrix ``Z^T Z`` computed in row chunks;
"angle < tau" is tested as "cos > cos(tau)" on it (``pairwise_angles`` gives the degrees for
inspection). Honest pairing without complementary pairs needs no list of pairs: unit u (which can
only be removed by a pair (a, u) with a < u) is removed by the most similar earlier unit a that is
still present at that pair's turn, i.e. whose own removal pair is less extreme; this recursion runs
once per unit over a row of the Gram matrix. With complementary pairs the candidate pairs are
processed in sorted blocks, pairs with a removed unit being dropped in bulk between blocks and
skipped in vectorised runs within one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from fer_lottery.errors import ConfigError, DataError
from fer_lottery.pruning.mask import Mask

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "alexnet")
VARIANTS = ("honest", "paper_a", "paper_b")
NORMALIZE = ("minmax", "center")
CHUNK = 1024  # Gram rows per chunk: 1024 x 4096 float32 = 16 MB
BLOCK_PER_UNIT, BLOCK_MIN = 8, 1 << 15  # first sorted block of candidate pairs (complementary on)


@dataclass(frozen=True)
class PrunableUnit:
    """A layer whose output units distinctiveness may remove, and where they go.

    ``name``: the module whose output units (rows / filters) are removed. ``source``: the module
    whose output is hooked for activations (ReLU is applied to it). ``bn``: a BatchNorm whose
    gamma/beta belong to the unit. ``next``: the layer whose input columns take the merges;
    ``span``: how many of its input columns one unit owns (36 for AlexNet conv5 -> fc6 through
    the 6x6 average pool and flatten, else 1).
    """

    name: str
    source: str
    next: str
    bn: str | None = None
    span: int = 1


@dataclass
class Pairing:
    """Which units of one layer go, and where their outgoing weights go (local unit indices)."""

    removed: torch.Tensor  # bool (U,)
    # long (U,): the unit whose outgoing weights finally hold this one's, or -1 (honest: the
    # end of its merge chain; paper variants: the loop's first partner, possibly removed itself)
    into: torch.Tensor
    flagged: torch.Tensor  # bool (U,): dead / constant units, not compared
    compared: torch.Tensor  # bool (U,): units that took part in the angle comparison
    similar_pairs: int
    complementary_pairs: int


@dataclass
class DistinctivenessResult:
    """What ``distinctiveness_prune`` did. The merges are already in the model; the mask is not."""

    mask: Mask
    units_removed: dict[str, int]
    units_total: dict[str, int]
    similar_pairs: int
    complementary_pairs: int
    angle_seconds: float
    units_flagged: dict[str, int] = field(default_factory=dict)
    units_compared: dict[str, int] = field(default_factory=dict)
    pairings: dict[str, Pairing] = field(default_factory=dict)  # per layer: who went, into whom

    def removed_fraction(self) -> float:
        total = sum(self.units_total.values())
        return sum(self.units_removed.values()) / total if total else 0.0


# -- which layers ---------------------------------------------------------------------------------


def prunable_units(model: nn.Module, arch: str) -> list[PrunableUnit]:
    """The layers distinctiveness may prune, in forward order, each with its consumer layer."""
    if arch == "resnet18":
        return [
            PrunableUnit(f"{n}.conv1", source=f"{n}.bn1", next=f"{n}.conv2", bn=f"{n}.bn1")
            for n, m in model.named_modules()
            if isinstance(m, BasicBlock)
        ]
    if arch == "alexnet":
        convs = [(f"features.{i}", m) for i, m in enumerate(model.features) if _is_conv(m)]
        fcs = [(f"classifier.{i}", m) for i, m in enumerate(model.classifier) if _is_fc(m)]
        chain = convs + fcs
        units = []
        for (name, module), (next_name, next_module) in zip(chain, chain[1:], strict=False):
            span = 1
            if _is_conv(module) and _is_fc(next_module):
                span, rest = divmod(next_module.in_features, module.out_channels)
                if rest:
                    raise ValueError(
                        f"{next_name} has {next_module.in_features} inputs, not a multiple of "
                        f"{name}'s {module.out_channels} channels"
                    )
            units.append(PrunableUnit(name, source=name, next=next_name, span=span))
        return units
    raise ConfigError(f"model.name={arch!r}: distinctiveness supports {', '.join(ARCHS)}")


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d)


def _is_fc(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear)


def _select(units: list[PrunableUnit], layers: list[str] | None) -> list[PrunableUnit]:
    if layers is None:
        return units
    names = [u.name for u in units]
    for pattern in layers:
        if not any(fnmatch(n, pattern) for n in names):
            raise ConfigError(
                f"distinctiveness layers: {pattern!r} matches no prunable layer; "
                f"choose from {', '.join(names)}"
            )
    return [u for u in units if any(fnmatch(u.name, p) for p in layers)]


# -- activations ----------------------------------------------------------------------------------


@torch.no_grad()
def unit_activations(
    model: nn.Module,
    units: list[PrunableUnit],
    batches: Iterable,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """(samples, units) activation matrix per layer: one eval-mode, no-grad pass.

    The hook sees the conv / BN / linear output before any ReLU runs, and applies ReLU itself:
    AlexNet's ReLUs are in place, and a ResNet block calls one ReLU module twice. Each module's
    train/eval mode is restored afterwards. A batch may be a tensor or a tuple whose first item is
    the input tensor.
    """
    store: dict[str, list[torch.Tensor]] = {u.name: [] for u in units}

    def hook(name: str):
        def fn(_module, _inputs, output):
            a = F.relu(output)
            if a.dim() == 4:
                a = a.mean(dim=(2, 3))
            store[name].append(a.detach().float())

        return fn

    modes = {m: m.training for m in model.modules()}
    handles = [model.get_submodule(u.source).register_forward_hook(hook(u.name)) for u in units]
    try:
        model.eval()
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            if x.shape[0]:
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    if not units:
        return {}
    n = sum(a.shape[0] for a in store[units[0].name])
    if n < 2:
        raise DataError(
            f"distinctiveness needs at least 2 training images for its activation vectors, got {n}"
        )
    return {name: torch.cat(parts) for name, parts in store.items()}


# -- angles and pairing ----------------------------------------------------------------------------


def pairwise_angles(z: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """All pairwise angles in degrees between the columns of ``z`` (already unit norm).

    For inspection and tests; pairing thresholds the same Gram entries as cosines.
    """
    u = z.shape[1]
    out = torch.empty(u, u, dtype=z.dtype, device=z.device)
    for r0 in range(0, u, chunk):
        out[r0 : r0 + chunk] = z[:, r0 : r0 + chunk].T @ z
    return torch.rad2deg(torch.acos(out.clamp_(-1.0, 1.0)))


def _normalise(
    acts: torch.Tensor, variant: str, normalize: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm columns to compare, and the flag of units that cannot be compared."""
    a = acts.double()
    if variant == "paper_a":
        y = a
        flagged = a.abs().amax(0) == 0
    elif variant == "paper_b":
        lo, hi = a.min(), a.max()
        y = (a - lo) / (hi - lo) - 0.5 if hi > lo else torch.zeros_like(a)
        flagged = torch.zeros(a.shape[1], dtype=torch.bool, device=a.device)
    else:
        lo, hi = a.amin(0), a.amax(0)
        span = hi - lo
        flagged = span <= 1e-6 * torch.maximum(lo.abs(), hi.abs())
        if normalize == "minmax":
            y = (a - lo) / torch.where(flagged, 1.0, span) - 0.5
        else:
            y = a - a.mean(0)
    norm = y.norm(dim=0)
    flagged = flagged | (norm == 0)
    z = torch.where(flagged, 0.0, y / torch.where(flagged, 1.0, norm))
    return z.float(), flagged


def _norm_filter(acts: torch.Tensor, k: float) -> torch.Tensor:
    """Paper B's pre-filter: raw activation norm more than k standard deviations from the mean."""
    norm = acts.double().norm(dim=0)
    return (norm - norm.mean()).abs() > k * norm.std(correction=0)


def _gram_rows(z: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Cosines of units r0..r1-1 with units 0..r1-1 (the lower triangle is what is used)."""
    return z[:, r0:r1].T @ z[:, :r1]


def _pairs_in_order(z: torch.Tensor, cos_tau: float, high: bool, chunk: int):
    """The paper variants' double loop, vectorised: for each unit j the first i < j it pairs with.

    Returns (first partner or -1, whether that pair is a high-angle one).
    """
    u = z.shape[1]
    first = torch.full((u,), -1, dtype=torch.long)
    is_high = torch.zeros(u, dtype=torch.bool)
    for r0 in range(0, u, chunk):
        r1 = min(r0 + chunk, u)
        g = _gram_rows(z, r0, r1)
        hit = g > cos_tau
        if high:
            hit |= g < -cos_tau
        hit = hit.tril(r0 - 1)  # only partners i < j
        found = hit.any(1)
        i = hit.to(torch.uint8).argmax(1)  # first True
        rows = torch.arange(r1 - r0, device=g.device)
        first[r0:r1] = torch.where(found, i, -1).cpu()
        is_high[r0:r1] = (found & (g[rows, i] < 0)).cpu()
    return first, is_high


def _greedy_similar(z: torch.Tensor, cos_tau: float, chunk: int) -> np.ndarray:
    """Honest greedy over similar pairs only: each unit's merge target (its keeper) or -1.

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
        g = _gram_rows(z, r0, r1).cpu().numpy()
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
        g = _gram_rows(z, r0, r1).tril_(r0 - 1)
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


def _greedy_general(z: torch.Tensor, cos_tau: float, chunk: int):
    """Honest greedy over similar and complementary pairs: (parent, removed, similar, compl.).

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


def _roots(parent: np.ndarray) -> np.ndarray:
    """Follow merge chains to the last keeper (pointer doubling)."""
    up = np.where(parent >= 0, parent, np.arange(parent.size))
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):
            return up
        up = nxt


def pair_units(
    acts: torch.Tensor,
    angle: float,
    *,
    complementary: bool = False,
    normalize: str = "minmax",
    norm_std: float | None = None,
    variant: str = "honest",
    chunk: int = CHUNK,
) -> Pairing:
    """Decide, from a (samples, units) activation matrix, which units go and where they merge.

    This is the whole angle step (normalise, Gram, pairing); see the module docstring for each
    variant's rule.
    """
    _check(angle, normalize, norm_std, variant)
    units = acts.shape[1]
    z, flagged = _normalise(acts, variant, normalize)
    compared = ~flagged
    if norm_std is not None and variant != "paper_a":
        compared &= _norm_filter(acts, norm_std)
    idx = compared.nonzero().squeeze(1)
    zc = z[:, idx]
    cos_tau = math.cos(math.radians(angle))
    idx_cpu = idx.cpu()
    removed = torch.zeros(units, dtype=torch.bool)
    into = torch.full((units,), -1, dtype=torch.long)
    similar = compl = 0
    if idx.numel() >= 2:
        if variant == "honest":
            if complementary:
                parent, gone, similar, compl = _greedy_general(zc, cos_tau, chunk)
            else:
                parent = _greedy_similar(zc, cos_tau, chunk)
                gone = parent >= 0
                similar = int(gone.sum())
            merged = torch.from_numpy(parent >= 0)
            target = torch.from_numpy(_roots(parent))
            removed[idx_cpu] = torch.from_numpy(gone)
        else:
            first, is_high = _pairs_in_order(zc, cos_tau, variant == "paper_b", chunk)
            merged = first >= 0
            target = first
            removed[idx_cpu] = merged
            compl = int(is_high.sum())
            similar = int(merged.sum()) - compl
        into[idx_cpu[merged]] = idx_cpu[target[merged]]
    return Pairing(removed, into, flagged.cpu(), compared.cpu(), similar, compl)


def _check(angle: float, normalize: str, norm_std: float | None, variant: str) -> None:
    if not 0.0 < angle <= 90.0:
        raise ConfigError(f"prune.angle={angle}: tau must be in (0, 90] degrees")
    if normalize not in NORMALIZE:
        raise ConfigError(f"prune.normalize={normalize!r}: expected one of {', '.join(NORMALIZE)}")
    if variant not in VARIANTS:
        raise ConfigError(f"prune.variant={variant!r}: expected one of {', '.join(VARIANTS)}")
    if norm_std is not None and not (math.isfinite(norm_std) and norm_std >= 0):
        raise ConfigError(f"prune.norm_std={norm_std}: expected null or a number >= 0")


# -- merge and mask -----------------------------------------------------------------------------


@torch.no_grad()
def _merge(model: nn.Module, unit: PrunableUnit, into: torch.Tensor) -> None:
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


def _mask_unit(model: nn.Module, unit: PrunableUnit, removed: torch.Tensor, keep: dict) -> None:
    """Mark a removed unit's incoming weights, bias, BN gamma/beta and outgoing weights."""
    state = model.state_dict(keep_vars=True)

    def entry(name: str) -> torch.Tensor:
        if name not in keep:
            keep[name] = torch.ones(state[name].shape, dtype=torch.bool)
        return keep[name]

    owners = [unit.name] + ([unit.bn] if unit.bn else [])
    for owner in owners:
        for suffix in ("weight", "bias"):
            name = f"{owner}.{suffix}"
            if name in state and state[name] is not None:
                entry(name)[removed] = False
    out = entry(f"{unit.next}.weight")
    out.view(out.shape[0], removed.numel(), -1)[:, removed] = False


def distinctiveness_prune(
    model: nn.Module,
    arch: str,
    batches: Iterable[torch.Tensor],
    angle: float,
    complementary: bool = False,
    normalize: str = "minmax",
    norm_std: float | None = None,
    variant: str = "honest",
    layers: list[str] | None = None,
    device: str | torch.device = "cpu",
) -> DistinctivenessResult:
    """Prune units with near-parallel (or, optionally, opposite) activation vectors.

    ``batches``: training-split inputs, normalised, not augmented. Outgoing weights of merged
    units are added to their keepers *in ``model``, in place, before this returns*; the returned
    mask (every touched tensor: incoming weights, biases, BN gamma/beta, next-layer weights) is
    not applied: call ``result.mask.apply(model)``. ``layers``: module names (or glob patterns)
    to restrict to, e.g. ``["classifier.4"]``; None = all of ``prunable_units``. ``device`` runs
    the activation pass and the angle step; the model is returned to its own device.
    """
    _check(angle, normalize, norm_std, variant)
    if variant == "paper_a" and (complementary or norm_std is not None):
        log.warning(
            "distinctiveness paper_a: complementary and norm_std are not in paper A; ignored"
        )
    units = _select(prunable_units(model, arch), layers)
    home = next(model.parameters()).device
    model.to(device)
    try:
        acts = unit_activations(model, units, batches, device)
    finally:
        model.to(home)

    keep: dict[str, torch.Tensor] = {}
    removed_n, total_n, flagged_n, compared_n, pairings = {}, {}, {}, {}, {}
    similar = compl = 0
    seconds = 0.0
    for unit in units:
        a = acts[unit.name]
        start = time.perf_counter()
        pairing = pair_units(
            a,
            angle,
            complementary=complementary,
            normalize=normalize,
            norm_std=norm_std,
            variant=variant,
        )
        seconds += time.perf_counter() - start
        _merge(model, unit, pairing.into)
        _mask_unit(model, unit, pairing.removed, keep)
        removed_n[unit.name] = int(pairing.removed.sum())
        total_n[unit.name] = a.shape[1]
        flagged_n[unit.name] = int(pairing.flagged.sum())
        compared_n[unit.name] = int(pairing.compared.sum())
        pairings[unit.name] = pairing
        similar += pairing.similar_pairs
        compl += pairing.complementary_pairs
        log.info(
            "distinctiveness %s: removed %d of %d units (%d similar, %d complementary; "
            "%d flagged dead/constant, %d compared)",
            unit.name,
            removed_n[unit.name],
            total_n[unit.name],
            pairing.similar_pairs,
            pairing.complementary_pairs,
            flagged_n[unit.name],
            compared_n[unit.name],
        )
    return DistinctivenessResult(
        mask=Mask(keep),
        units_removed=removed_n,
        units_total=total_n,
        similar_pairs=similar,
        complementary_pairs=compl,
        angle_seconds=seconds,
        units_flagged=flagged_n,
        units_compared=compared_n,
        pairings=pairings,
    )
