"""The 1-bit codec shared by sparse weights (``store.weights``) and masks (``pruning.mask``)."""

from __future__ import annotations

import numpy as np
import torch


def pack_bits(flags: torch.Tensor) -> dict:
    """A boolean tensor as ``{"shape", "bits"}``: its entries packed 8 to a byte."""
    flags = flags.detach().cpu().to(torch.bool)
    return {"shape": list(flags.shape), "bits": torch.from_numpy(np.packbits(flags.numpy()))}


def unpack_bits(entry: dict) -> torch.Tensor:
    """The boolean tensor that ``pack_bits`` packed."""
    numel = int(np.prod(entry["shape"], dtype=np.int64))
    flags = np.unpackbits(entry["bits"].numpy(), count=numel).astype(bool)
    return torch.from_numpy(flags).view(entry["shape"])
