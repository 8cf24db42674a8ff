"""Selection by score: prune exactly the k lowest-scoring entries, globally or per layer.

The one home of the rule that magnitude, gradient and unit pruning share: exact counts
(``round(ratio * n)``), ties broken by position, entries pruned earlier kept pruned.
"""

from __future__ import annotations

import torch

from fer_lottery.config.schema import PruneScope, choices
from fer_lottery.pruning.mask import Mask


def prune_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask that prunes exactly ``k`` entries of a flat score vector, smallest first.

    The k-th smallest score is found by selection (linear time, no full sort); entries equal to
    it are pruned in order of position until the count is exactly ``k``.
    """
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return keep
    threshold = torch.kthvalue(scores, k).values
    below = scores < threshold
    keep[below] = False
    ties = (scores == threshold).nonzero().flatten()
    keep[ties[: k - int(below.sum())]] = False
    return keep


def mask_from_scores(
    scores: dict[str, torch.Tensor],
    ratio: float,
    scope: str = "global",
    previous: Mask | None = None,
) -> Mask:
    """Mask pruning the fraction ``ratio`` of the scored entries with the smallest scores.

    ``scores``: per weight name, a score tensor of the weight's shape (>= 0). ``scope="global"``
    ranks all of them together; ``"layer"`` prunes ``ratio`` of each. ``ratio`` is the overall
    target: entries already pruned by ``previous`` score -1, so they count towards it and stay
    pruned, and iterative rounds with a growing ratio only ever shrink the mask. The count is
    exact: ``round(ratio * n)`` entries of the ``n`` ranked together.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    names = list(scores)
    flat_scores = {}
    for n in names:
        s = scores[n].detach().float().cpu().flatten().clone()
        if previous is not None and n in previous:
            s[~previous.tensors[n].cpu().flatten()] = -1.0
        flat_scores[n] = s
    if scope == "global":
        flat = torch.cat([flat_scores[n] for n in names])
        keep_flat = prune_smallest(flat, round(ratio * flat.numel()))
        pieces = torch.split(keep_flat, [flat_scores[n].numel() for n in names])
        keep = dict(zip(names, pieces, strict=True))
    elif scope == "layer":
        keep = {
            n: prune_smallest(flat_scores[n], round(ratio * flat_scores[n].numel())) for n in names
        }
    else:
        allowed = " or ".join(repr(s) for s in choices(PruneScope))
        raise ValueError(f"prune scope must be {allowed}, got {scope!r}")
    return Mask({n: keep[n].view_as(scores[n]) for n in names})
