"""Shuffling that depends on the epoch alone, so a resumed stage sees the same batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

from fer_lottery.core.seeding import derived_seed


class EpochShuffle(Sampler[int]):
    """A fresh permutation each epoch, drawn from a generator seeded by (seed, epoch).

    ``epoch`` is asked when iteration starts (the trainer's current epoch). A plain
    ``RandomSampler`` draws each epoch's permutation from one running generator, so resuming at
    epoch e would replay epoch 0's order.
    """

    def __init__(self, n: int, seed: int, epoch: Callable[[], int]):
        self.n = n
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, f"shuffle{self.epoch()}"))
        return iter(torch.randperm(self.n, generator=generator).tolist())
