"""Every setting with its declaration, read from the schema (``config.declaration``): what it
changes, when it applies, its range, and whether Lightning's Trainer takes it.

This is the one home of those rules. What follows from them:

- the dense cache key (``store.dense_cache.dense_key``): the ``DENSE`` keys that apply;
- the relaunch check (``config.config_changes``): the keys that change a number and apply;
- the report's conditions (``report.conditions``): the same, with seed and fold as repeats;
- the range checks (``config.checks.validate``): each declared ``Range``;
- the Trainer's arguments (``training.stage.trainer_kwargs``): the ``trainer`` keys Lightning
  takes.

Two rules hold besides each key's own ``applies``: no ``prune.*``, ``retrain.*`` or
``stability.*`` key applies to a job that does not prune (``core.criteria.prunes``), and an
option of some criteria (``Entry.options`` in ``core.criteria``: ``prune.distinctiveness.*``,
``prune.gradual.*``, ...) applies only under a criterion that has it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from fer_lottery.config.declaration import DENSE, NOTHING, PRUNING, Predicate, Range
from fer_lottery.config.schema import Config
from fer_lottery.core.criteria import STRATEGIES, prunes

# The schema the settings are read from (a test may put an extended one here).
SCHEMA: type = Config
# The sections of what follows the dense stage: none of their keys applies to a job that does
# not prune. A key there changes only what follows the dense stage unless it declares otherwise;
# ``logger`` (where the curves go besides the run folder) changes nothing; every other key
# changes the dense stage.
PRUNING_SECTIONS = ("prune", "retrain", "stability")
SECTION_CHANGES = {**dict.fromkeys(PRUNING_SECTIONS, PRUNING), "logger": NOTHING}
# prune.* keys (or groups, prune.<group>.*) that are some criteria's own options.
CRITERION_OPTIONS = frozenset(key for entry in STRATEGIES.values() for key in entry.options)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of the schema and its declaration."""

    key: str
    changes: str
    applies: Predicate | None
    check: Range | None
    lightning: bool


@functools.cache
def declared(schema: type) -> dict[str, Setting]:
    """Every leaf key of ``schema`` (dotted, e.g. ``data.augment.hflip``) with its declaration."""
    out: dict[str, Setting] = {}

    def walk(node: type, prefix: str, section: str | None) -> None:
        hints = typing.get_type_hints(node)
        for f in dataclasses.fields(node):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".", section or f.name)
                continue
            meta = f.metadata
            changes = meta.get("changes") or SECTION_CHANGES.get(section or "", DENSE)
            out[key] = Setting(
                key, changes, meta.get("applies"), meta.get("check"), meta.get("lightning", True)
            )

    walk(schema, "", None)
    return out


def table() -> dict[str, Setting]:
    """The settings of ``SCHEMA``."""
    return declared(SCHEMA)


def lookup(key: str) -> Setting | None:
    """The setting of ``key``, or of the open key it sits under (``trainer.extra.NAME``,
    ``published.rows``); None for a key the schema does not know (an older results.json's)."""
    settings = table()
    while key:
        if key in settings:
            return settings[key]
        key = key.rpartition(".")[0]
    return None


def changes(key: str) -> str:
    """What ``key`` changes; an unknown key is taken to change the dense stage (it splits)."""
    found = lookup(key)
    return found.changes if found else DENSE


def applies(key: str, flat: Mapping[str, Any]) -> bool:
    """Whether a job with the flat config ``flat`` reads ``key`` at all."""
    section = key.split(".")[0]
    if section in PRUNING_SECTIONS:
        method = flat.get("prune.method")
        if method is not None and not prunes(method, flat.get("prune.ratio")):
            return False
        name = key.split(".")[1] if section == "prune" else None
        entry = STRATEGIES.get(method)
        if name in CRITERION_OPTIONS and entry is not None and name not in entry.options:
            return False
    found = lookup(key)
    return found is None or found.applies is None or bool(found.applies(flat))


def effective(flat: Mapping[str, Any], effects: Iterable[str] = (DENSE, PRUNING)) -> dict:
    """The keys of ``flat`` that change a number of kind ``effects`` in this job: each value as
    set, or None where the key does not apply."""
    effects = set(effects)
    return {
        key: (value if applies(key, flat) else None)
        for key, value in flat.items()
        if changes(key) in effects
    }


def snapshot_epoch(flat: Mapping[str, Any]) -> int | None:
    """The dense epoch whose weights ``retrain.rewind=epoch`` needs (theta_k), else None. The
    dense stage writes theta_k whether or not the job prunes (its dense model serves the sweep's
    pruning jobs), so this follows from the two keys even where no ``prune.*`` key applies."""
    return int(flat["retrain.rewind_epoch"]) if flat.get("retrain.rewind") == "epoch" else None


def no_effect(key: str) -> bool:
    """Whether ``key`` changes no number."""
    return changes(key) == NOTHING


def trainer_own_keys() -> tuple[str, ...]:
    """The keys under ``trainer`` that are fer_lottery's, not Lightning Trainer arguments."""
    return tuple(
        key.split(".", 1)[1]
        for key, s in table().items()
        if key.startswith("trainer.") and not s.lightning
    )


def range_problems(flat: Mapping[str, Any]) -> list[str]:
    """One line per key of ``flat`` outside its declared range: the key, its value, the range
    and the fix."""
    out = []
    for key, s in table().items():
        if s.check is None or key not in flat:
            continue
        problem = s.check.problem(flat[key])
        if problem:
            hint = f" ({s.check.hint})" if s.check.hint else ""
            out.append(f"{key}={flat[key]} must be {problem}{hint}")
    return out


__all__ = [
    "DENSE",
    "NOTHING",
    "PRUNING",
    "Setting",
    "applies",
    "changes",
    "declared",
    "effective",
    "lookup",
    "no_effect",
    "range_problems",
    "table",
    "trainer_own_keys",
]
