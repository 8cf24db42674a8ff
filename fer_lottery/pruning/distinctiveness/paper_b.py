"""The ``paper_b`` rule: paper B, section 2.3, read literally.

fc7's activation matrix is min-max normalised to [-0.5, 0.5] as a whole ("the values were then
normalized", one range for the whole samples x units matrix, not per unit; so units are not
centred, and dead units become the constant vector -0.5 and are compared like any other); a pair
is considered only if both units' norms ("the mean norm and standard deviation of the hidden
layer outputs": raw activations) lie more than ``norm_std`` standard deviations from the layer's
mean norm (no filter when ``norm_std`` is None); any pair with angle < degree_low = tau *or*
angle > degree_high = 180 - tau (the paper reports one "Degree" per run) is handled the same way:
"all the weights of the second weight vector were added to the first" and the second was zeroed.
So complementary pairs are merged as if they were similar (Gedeon removes both), in the same
index-order double loop as ``paper_a``. ``normalize`` and ``complementary`` are ignored. Pass
``layers=["classifier.4"]`` for the paper's fc7-only setting.
"""

from __future__ import annotations

import torch

from fer_lottery.pruning.distinctiveness.angles import unit_columns


def normalise(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm columns of the whole-matrix min-max normalised activations; none flagged."""
    a = acts.double()
    lo, hi = a.min(), a.max()
    y = (a - lo) / (hi - lo) - 0.5 if hi > lo else torch.zeros_like(a)
    return unit_columns(y, torch.zeros(a.shape[1], dtype=torch.bool, device=a.device))
