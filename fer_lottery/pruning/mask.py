"""Mask: named 0/1 tensors over a model's parameters and buffers.

Names are the model's ``state_dict`` names (e.g. ``layer1.0.conv1.weight``). A mask is applied in
place, with no forward hooks and no ``weight_orig`` copies, so a masked model is an ordinary model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fer_lottery.store.atomic import save_torch
from fer_lottery.store.bits import pack_bits, unpack_bits

MASK_FORMAT = "fer_lottery.mask/1"


class Mask:
    """Boolean keep-masks (True = keep) for some of a model's tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = {name: t.detach().to(torch.bool) for name, t in tensors.items()}

    @classmethod
    def ones(cls, model: nn.Module, names: list[str]) -> Mask:
        """A mask that keeps every entry of the named tensors."""
        state = model.state_dict(keep_vars=True)
        return cls({n: torch.ones_like(state[n], dtype=torch.bool) for n in names})

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __and__(self, other: Mask) -> Mask:
        """Entries kept by both masks (names of either)."""
        names = dict.fromkeys([*self.tensors, *other.tensors])
        out = {}
        for n in names:
            a, b = self.tensors.get(n), other.tensors.get(n)
            out[n] = a if b is None else b if a is None else a & b.to(a.device)
        return Mask(out)

    def to(self, device: torch.device | str) -> Mask:
        return Mask({n: t.to(device) for n, t in self.tensors.items()})

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned entries of the model's tensors, in place."""
        state = model.state_dict(keep_vars=True)
        for name, keep in self.tensors.items():
            tensor = state[name]
            tensor.mul_(keep.to(device=tensor.device, dtype=tensor.dtype))

    def bind(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(model tensor, keep-mask in its dtype and device) pairs, for fast repeated masking.

        Tensors whose mask keeps everything are left out: there is nothing to re-apply.
        """
        state = model.state_dict(keep_vars=True)
        return [
            (state[n], keep.to(device=state[n].device, dtype=state[n].dtype))
            for n, keep in self.tensors.items()
            if not bool(keep.all())
        ]

    def kept(self) -> int:
        return int(sum(int(t.sum()) for t in self.tensors.values()))

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def sparsity(self) -> float:
        """Fraction of masked entries that are pruned, over all named tensors."""
        total = self.numel()
        return 1.0 - self.kept() / total if total else 0.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.cpu() for n, t in self.tensors.items()}

    def save(self, path: str | Path) -> None:
        """Write the mask packed, 1 bit per entry (a ResNet-18 mask: 1.4 MB, not 11 MB)."""
        packed = {n: pack_bits(t) for n, t in self.tensors.items()}
        payload = {"format": MASK_FORMAT, "tensors": packed}
        save_torch(path, payload)

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        """A mask written by ``save``."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != MASK_FORMAT:
            raise ValueError(f"{path} is not a fer_lottery mask file ({MASK_FORMAT})")
        return cls({name: unpack_bits(entry) for name, entry in payload["tensors"].items()})


def zero_fraction(model: nn.Module, names: list[str]) -> float:
    """Achieved sparsity: the fraction of entries of the named tensors that are exactly zero."""
    state = model.state_dict()
    total = sum(state[n].numel() for n in names)
    zeros = sum(int((state[n] == 0).sum()) for n in names)
    return zeros / total if total else 0.0
