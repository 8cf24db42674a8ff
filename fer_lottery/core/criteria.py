"""The pruning criteria, by name: ``prune.method=<name>`` runs ``get(<name>)``.

A new criterion is one module in ``fer_lottery/pruning/`` that defines ``STRATEGY`` (see
``pruning.strategy``) plus one entry here. The table holds module paths, not the modules, so
that the config schema can read the names without importing torch; ``get`` imports the module
the first time a job prunes with it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One criterion: where it lives, and which ``prune.*`` keys are its own."""

    module: str  # defines ``STRATEGY``
    uses_ratio: bool = True  # prune.ratio sets how much it prunes (0: the job stays dense)
    options: tuple[str, ...] = ()  # prune.* keys (or groups: prune.gradual.*) only this
    # criterion reads (they apply to no other criterion's job)


# The options of the criteria that score weights (or units) and prune prune.ratio of them.
# (prune.include is every criterion's: it names the prunable weights that the sparsity is
# measured over, for distinctiveness too.)
WEIGHT_OPTIONS = ("ratio", "scope", "score_at", "granularity")

STRATEGIES: dict[str, Entry] = {
    "magnitude": Entry(
        "fer_lottery.pruning.magnitude",
        options=(*WEIGHT_OPTIONS, "gradual"),
    ),
    "gradient": Entry("fer_lottery.pruning.gradient", options=WEIGHT_OPTIONS),
    "random": Entry("fer_lottery.pruning.random", options=WEIGHT_OPTIONS),
    "distinctiveness": Entry(
        "fer_lottery.pruning.distinctiveness",
        uses_ratio=False,
        options=("distinctiveness",),
    ),
}


def method_names() -> tuple[str, ...]:
    """The values ``prune.method`` takes: ``none`` (dense only) and every criterion."""
    return ("none", *STRATEGIES)


def prunes(method: object, ratio: object) -> bool:
    """Whether a run with this ``prune.method`` and ``prune.ratio`` prunes.

    A criterion that uses the ratio prunes when it is above 0; one that does not (distinctiveness
    decides by angle) always prunes; ``none`` (or no method) never does. A name this registry
    does not hold (a results.json of a criterion registered elsewhere) is taken to use the ratio.
    This is the one home of that rule: the runner, the results schema and the report ask it.
    """
    method = getattr(method, "value", method)
    if not isinstance(method, str) or method == "none":
        return False
    entry = STRATEGIES.get(method)
    if entry is not None and not entry.uses_ratio:
        return True
    return isinstance(ratio, int | float) and not isinstance(ratio, bool) and ratio > 0


def get(method: str):
    """The ``STRATEGY`` of criterion ``method`` (its module imported on first use)."""
    return importlib.import_module(STRATEGIES[method].module).STRATEGY
