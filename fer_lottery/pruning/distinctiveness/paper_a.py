"""The ``paper_a`` rule: paper A, section 2, read literally.

Raw activations, no normalisation (post-ReLU, so every angle is <= 90 degrees and complementary
pairs cannot exist). "For every pair of neurons ... if the angle is lower than some threshold ...
one of them is removed ... and its weights added to the remaining one": a double loop over pairs
(i < j) in index order, removing j and adding its outgoing weights to i as each pair is met, with
no check of whether i or j was already removed. Removal zeroes j at once, so a second pair
(i2, j) adds nothing, but a pair (j, k) met after j's removal still moves k's weights into the
removed j, where they are lost. Only all-zero (dead) units are excluded (their angle is
undefined). ``normalize``, ``complementary`` and ``norm_std`` are ignored (the paper has none of
them). The paper prunes "each layer"; here, as for ``honest``, only ``prunable_units``, since a
ResNet block's output channels share the skip path and cannot be merged by adding outgoing
weights.
"""

from __future__ import annotations

import torch

from fer_lottery.pruning.distinctiveness.angles import gram_rows, unit_columns


def normalise(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm raw columns; all-zero (dead) units are flagged."""
    a = acts.double()
    return unit_columns(a, a.abs().amax(0) == 0)


def pairs_in_order(z: torch.Tensor, cos_tau: float, high: bool, chunk: int):
    """The paper variants' double loop, vectorised: for each unit j the first i < j it pairs with.

    Returns (first partner or -1, whether that pair is a high-angle one).
    """
    u = z.shape[1]
    first = torch.full((u,), -1, dtype=torch.long)
    is_high = torch.zeros(u, dtype=torch.bool)
    for r0 in range(0, u, chunk):
        r1 = min(r0 + chunk, u)
        g = gram_rows(z, r0, r1)
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
