"""What the distinctiveness rules share: which layers, their activations, the Gram step.

``prunable_units`` (``honest`` and ``paper_b``; ``models.units``, found from the model's graph):
on ResNet-18 each BasicBlock's ``conv1`` channels (they feed only ``conv2``; every other conv
output lies on a residual path shared with the skip connection, so a merge there cannot keep
the block's output); on AlexNet conv1-5 and fc6, fc7 (fc8's units, the logits, are never
removed, though its input columns receive fc7's merges under ``honest``). ``paper_a`` takes every
Conv2d and Linear instead (see its module).

``unit_activations`` (``honest`` and ``paper_b``): one eval-mode, no-grad pass over the given
batches. FC units: the activated output. Conv channels: the activated map of the unit's last
module (BN on ResNet, the conv on AlexNet, the depthwise BN on MobileNet) averaged over HxW.

Speed: pairwise cosines come from a normalised Gram matrix ``Z^T Z`` computed in row chunks
(``gram_rows``); ``pairwise_angles`` gives the degrees for inspection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatch

import numpy as np
import torch
from torch import nn

from fer_lottery.core.errors import ConfigError, DataError
from fer_lottery.models.units import PrunableUnit

CHUNK = 1024  # Gram rows per chunk: 1024 x 4096 float32 = 16 MB


@dataclass
class Pairing:
    """Which units of one layer go, and where their weights go (local unit indices)."""

    removed: torch.Tensor  # bool (U,): the units the rule counts as removed
    # long (U,), or -1: honest: the keeper at the end of the unit's merge chain (outgoing
    # weights); paper_a: the first later unit that takes its weights (which may pass them on);
    # paper_b: the first earlier unit paired with it (which may be removed itself)
    into: torch.Tensor
    flagged: torch.Tensor  # bool (U,): units that cannot be compared (dead, constant)
    compared: torch.Tensor  # bool (U,): units that took part in the angle comparison
    similar_pairs: int
    complementary_pairs: int
    # bool (U,), paper_b only: removed units whose zeroed row later received another unit's
    # weights, so they are live again although counted as removed
    revived: torch.Tensor | None = None


# -- which layers ---------------------------------------------------------------------------------


def select_names(names: list[str], layers: list[str] | None) -> list[str]:
    """The names that match one of the ``layers`` globs (all when None); a glob must match."""
    if layers is None:
        return names
    for pattern in layers:
        if not any(fnmatch(n, pattern) for n in names):
            raise ConfigError(
                f"distinctiveness layers: {pattern!r} matches no prunable layer; "
                f"choose from {', '.join(names)}"
            )
    return [n for n in names if any(fnmatch(n, p) for p in layers)]


def select_layers(units: list[PrunableUnit], layers: list[str] | None) -> list[PrunableUnit]:
    """The units whose name matches one of the ``layers`` globs (all when None)."""
    keep = set(select_names([u.name for u in units], layers))
    return [u for u in units if u.name in keep]


# -- activations ----------------------------------------------------------------------------------


def unit_activations(
    model: nn.Module,
    units: list[PrunableUnit],
    batches: Iterable,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """(samples, units) activation matrix per layer: one eval-mode, no-grad pass.

    The hook sees the source's output (the conv, BN or linear of the unit's chain) before the
    activation runs, and applies the unit's activation module to a copy itself: AlexNet's ReLUs
    are in place, and a ResNet block calls one ReLU module twice. Conv maps are averaged over
    H x W.
    """
    acts = {u.name: model.get_submodule(u.activation) if u.activation else None for u in units}

    def activated(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        act = acts[name]

        def fn(output: torch.Tensor) -> torch.Tensor:
            a = act(output.clone()) if act is not None else output
            return a.mean(dim=(2, 3)) if a.dim() == 4 else a

        return fn

    return collect_activations(
        model, {u.name: u.source for u in units}, batches, device, activated, per_layer=True
    )


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    sources: dict[str, str],
    batches: Iterable,
    device: str | torch.device,
    reduce: Callable,
    per_layer: bool = False,
) -> dict[str, torch.Tensor]:
    """(samples, units) float32 matrix per layer name: ``reduce`` of its source module's output.

    One eval-mode, no-grad pass; each module's train/eval mode is restored afterwards. A batch may
    be a tensor or a tuple whose first item is the input tensor. ``per_layer``: ``reduce(name)``
    gives each layer's own reduction.
    """
    store: dict[str, list[torch.Tensor]] = {name: [] for name in sources}

    def hook(name: str):
        own = reduce(name) if per_layer else reduce

        def fn(_module, _inputs, output):
            store[name].append(own(output).detach().float())

        return fn

    modes = {m: m.training for m in model.modules()}
    handles = [
        model.get_submodule(source).register_forward_hook(hook(name))
        for name, source in sources.items()
    ]
    try:
        model.eval()
        # Eagerly, with trainer.compile=true too: hooks inside a compiled model are traced.
        with torch.compiler.set_stance("force_eager"):
            for batch in batches:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                if x.shape[0]:
                    model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    if not sources:
        return {}
    n = sum(a.shape[0] for a in next(iter(store.values())))
    if n < 2:
        raise DataError(
            f"distinctiveness needs at least 2 training images for its activation vectors, got {n}"
        )
    return {name: torch.cat(parts) for name, parts in store.items()}


# -- angles ---------------------------------------------------------------------------------------


def unit_columns(y: torch.Tensor, flagged: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm float32 columns of ``y``; zero-norm columns join the flagged ones (left 0)."""
    norm = y.norm(dim=0)
    flagged = flagged | (norm == 0)
    z = torch.where(flagged, 0.0, y / torch.where(flagged, 1.0, norm))
    return z.float(), flagged


def pairwise_angles(z: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """All pairwise angles in degrees between the columns of ``z`` (already unit norm).

    For inspection and tests; pairing thresholds the same Gram entries as cosines.
    """
    u = z.shape[1]
    out = torch.empty(u, u, dtype=z.dtype, device=z.device)
    for r0 in range(0, u, chunk):
        out[r0 : r0 + chunk] = z[:, r0 : r0 + chunk].T @ z
    return torch.rad2deg(torch.acos(out.clamp_(-1.0, 1.0)))


def gram_rows(z: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Cosines of units r0..r1-1 with units 0..r1-1 (the lower triangle is what is used)."""
    return z[:, r0:r1].T @ z[:, :r1]


def roots(parent: np.ndarray) -> np.ndarray:
    """Follow merge chains to the last keeper (pointer doubling)."""
    up = np.where(parent >= 0, parent, np.arange(parent.size))
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):
            return up
        up = nxt


@torch.no_grad()
def rows_into(weight: torch.Tensor, target: torch.Tensor) -> None:
    """In place: each row (unit) of ``weight`` becomes the sum of the rows whose target it is.

    ``target[u] == u`` keeps row u where it is; a row that is nobody's target becomes zero. Rows
    are added in index order (on the CPU), from zero.
    """
    target = target.to(weight.device)
    if torch.equal(target, torch.arange(target.numel(), device=weight.device)):
        return
    w = weight.detach()
    out = torch.zeros_like(w)
    out.index_add_(0, target, w)
    w.copy_(out)
