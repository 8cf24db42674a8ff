"""A pruning criterion that exists only for tests/end_to_end/test_new_criterion.py: it prunes
the weights with the *largest* magnitude (the opposite of magnitude pruning), over the whole net.

It shows what a new criterion is: this one module, defining ``STRATEGY``, plus one entry in
``fer_lottery.core.criteria.STRATEGIES``.
"""

from __future__ import annotations

import torch

from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.strategy import Pruned, Request, Strategy


def _prune(request: Request) -> Pruned:
    state = request.model.state_dict()
    scores = torch.cat([state[n].detach().abs().flatten().cpu() for n in request.names])
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[torch.topk(scores, round(request.ratio * scores.numel())).indices] = False
    pieces = torch.split(keep, [state[n].numel() for n in request.names])
    mask = Mask({n: p.view_as(state[n]) for n, p in zip(request.names, pieces, strict=True)})
    if request.previous is not None:
        mask = mask & request.previous
    return Pruned(mask, {"prune/largest_first_rounds": 1})


STRATEGY = Strategy(_prune)
