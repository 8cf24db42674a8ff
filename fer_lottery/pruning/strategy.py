"""The interface every pruning criterion implements: a ``Request`` in, a ``Pruned`` out.

A criterion is a pure function of the model's current weights (and, if it needs them, the
training images): it returns a ``Mask`` and never applies it; the caller does. Unit-level
criteria (distinctiveness) may also merge weights into the model in place before they return,
and say which units they removed. ``rounds_metrics`` folds the rounds of an IMP job into the
job's ``results.json`` keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from fer_lottery.pruning.mask import Mask


@dataclass
class Request:
    """What a criterion may use to decide one round's mask."""

    model: nn.Module  # the model to score, with its current (fine-tuned) weights, on the CPU
    names: list[str]  # state-dict names of the prunable weights (``models.prunable_weights``)
    ratio: float  # the overall fraction of ``names`` to have pruned after this round
    previous: Mask | None  # the mask of the previous round (IMP), whose pruned entries stay
    options: DictConfig  # the ``prune`` config node
    arch: str  # the model's architecture (``model.name``)
    seed: int  # the seed of anything the criterion draws (``config.prune_seed``)
    # The training split without augmentation, normalised, as input batches on ``device``.
    batches: Callable[[torch.device], Iterable[torch.Tensor]]
    # The same, with their labels: (inputs, labels) batches on ``device``.
    examples: Callable[[torch.device], Iterable[tuple[torch.Tensor, torch.Tensor]]]
    device: torch.device  # where a criterion that runs the model should run it


@dataclass
class Pruned:
    """What one round of a criterion decided."""

    mask: Mask  # entries to keep (True); already including ``previous``
    metrics: dict[str, object] = field(default_factory=dict)  # the round's results.json keys
    # Per layer, a bool per unit (output channel or neuron) removed; unit-level criteria only.
    units_removed: dict[str, torch.Tensor] = field(default_factory=dict)


def last_round_metrics(rounds: list[Pruned]) -> dict[str, object]:
    """The job-level keys of a criterion whose rounds need no summing: the last round's."""
    return dict(rounds[-1].metrics) if rounds else {}


@dataclass(frozen=True)
class Strategy:
    """A pruning criterion: ``prune`` decides a round; ``rounds_metrics`` sums up the rounds."""

    prune: Callable[[Request], Pruned]
    rounds_metrics: Callable[[list[Pruned]], dict[str, object]] = last_round_metrics
