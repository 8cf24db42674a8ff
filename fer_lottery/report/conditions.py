"""Conditions: the jobs grouped by the keys that vary between them, with their statistics.

A *condition* is one setting of the keys that vary between jobs, except the seed and the fold: its
jobs are repeats, summarised as mean, std, n and a 95% confidence interval. Keys that do not apply
to a job (``prune.distinctiveness.angle`` for magnitude pruning, every ``prune.*``, ``retrain.*``
and ``stability.*`` key of a dense run) are blanked first, and keys that change no number are left
out (both declared in the schema and read through ``config.settings``), so they neither split rows
nor show up in them.

The independent repeats are the seeds and folds. Jobs of one seed and fold share a dense model
and a test split, so a row that holds several of them (a paper table pools its other swept keys;
``prune.seed`` draws) averages them into one value per repeat before any statistic, and n counts
repeats, not jobs.
"""

from __future__ import annotations

import collections
import functools
import json
import statistics
from dataclasses import dataclass, field

from fer_lottery.config import settings
from fer_lottery.report.collect import REPEAT_KEYS, Job
from fer_lottery.report.stats import FRACTION_KEYS, METRICS, Stat

# What names the rows of a report over one condition, where no key varies: without them a
# reader could tell the dense row from the pruned one by its sparsity alone.
DESCRIBE_KEYS = (
    "model.name",
    "prune.method",
    "prune.scope",
    "prune.ratio",
    "prune.distinctiveness.angle",
    "retrain.rewind",
)


def applicable(config: dict) -> dict:
    """The config with the keys that do not apply to this job set to None (``config.settings``:
    another criterion's options, ``retrain.rewind_epoch`` without ``retrain.rewind=epoch``, every
    ``prune.*`` key of a dense job, ...)."""
    return {k: (v if settings.applies(k, config) else None) for k, v in config.items()}


def condition_keys(jobs: list[Job]) -> list[str]:
    """Keys that vary between jobs once non-applicable keys are blanked (not seed or fold)."""
    for job in jobs:
        job.condition = applicable(job.config)
    keys = sorted({k for j in jobs for k in j.condition})
    out = []
    for k in keys:
        if k in REPEAT_KEYS or settings.no_effect(k):
            continue
        if len({json.dumps(j.condition.get(k), default=str) for j in jobs}) > 1:
            out.append(k)
    return out


def label_keys(jobs: list[Job], keys: list[str]) -> list[str]:
    """The columns that name each row: the varying ``keys``, or, when none vary, the settings
    of ``DESCRIBE_KEYS`` that apply to these jobs (call after ``condition_keys``)."""
    if keys:
        return keys
    return [k for k in DESCRIBE_KEYS if any(j.condition.get(k) is not None for j in jobs)]


@dataclass
class Row:
    """One condition: its key values, its jobs, and the statistics of each metric."""

    values: dict
    jobs: list[Job]
    stats: dict[str, Stat] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    dense: bool = False

    def label(self, keys: list[str]) -> str:
        return condition_label(self, keys) or "all"


def short_name(key: str) -> str:
    """A key as a row label names it: its last part where no other setting ends so
    (``prune.ratio`` -> ``ratio``), the last two where one does (``retrain.lr``, ``optim.lr``) or
    where the last says little alone (``gradual.start``, ``retrain.epochs``),
    and the section for a section's name or switch (``model.name`` -> ``model``,
    ``stability.enabled`` -> ``stability``)."""
    parts = key.split(".")
    if parts[-1] in ("name", "enabled") and len(parts) > 1:
        return parts[-2]
    vague = parts[-1] in VAGUE or _leaf_count().get(parts[-1], 0) > 1
    return ".".join(parts[-2:]) if vague else parts[-1]


# Last parts that say little without their group (``retrain.epochs``, ``prune.gradual.start``).
VAGUE = ("start", "end", "epochs", "points")


@functools.cache
def _leaf_count() -> dict[str, int]:
    """How many settings end in each last part."""
    return collections.Counter(key.rpartition(".")[2] for key in settings.table())


def condition_label(row: Row, keys: list[str]) -> str:
    """``ratio=0.9, rewind=none``: the row's non-empty key values, or "" when there are none."""
    parts = [f"{short_name(k)}={row.values[k]}" for k in keys if row.values.get(k) is not None]
    return ", ".join(parts)


def n_test_images(jobs: list[Job]) -> int | None:
    """Distinct test images behind the jobs: seeds share one test split; folds add theirs."""
    by_fold: dict[str, int] = {}
    for job in jobs:
        n = job.results.get("data/n_test")
        if n:
            by_fold.setdefault(json.dumps(job.config.get("data.fold")), int(n))
    return sum(by_fold.values()) or None


def repeats(jobs: list[Job]) -> list[list[Job]]:
    """The jobs grouped by independent repeat (seed and fold), in the order first seen."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.repeat, []).append(job)
    return list(groups.values())


def repeat_means(jobs: list[Job], key: str) -> list[float]:
    """One value of ``key`` per repeat: the mean over that repeat's jobs that have it."""
    out = []
    for group in repeats(jobs):
        values = [float(j.results[key]) for j in group if key in j.results]
        if values:
            out.append(statistics.fmean(values))
    return out


def _stats(members: list[Job], prefix: str = "") -> dict[str, Stat]:
    """Each metric over the repeats: one value per seed and fold, then mean, std, n and CI."""
    out: dict[str, Stat] = {}
    n_test = n_test_images(members)
    for metric in METRICS:
        vals = repeat_means(members, prefix + metric)
        if vals:
            is_acc = metric.endswith("acc") or metric == "prune/acc_before_retrain"
            out[metric] = Stat.of(vals, n_test if is_acc else None, metric in FRACTION_KEYS)
    return out


def _varies(jobs: list[Job], key: str) -> bool:
    return len({json.dumps(j.config.get(key), default=str) for j in jobs}) > 1


def repeat_note(jobs: list[Job], pooled: list[str]) -> str:
    """What n counts in a table of these jobs, and which swept keys a repeat averages over."""
    names = {"seed": "seed", "data.fold": "fold"}
    unit = " × ".join(name for key, name in names.items() if _varies(jobs, key))
    note = f"n: independent repeats, one per {unit or 'seed and fold'}"
    pooled = pooled + (["prune.seed"] if _varies(jobs, "prune.seed") else [])
    if pooled:
        keys = ", ".join(f"`{k}`" for k in pooled)
        note += f"; the jobs of one repeat that differ in {keys} are averaged into one value first"
    return note + "."


def rows_of(jobs: list[Job], keys: list[str]) -> list[Row]:
    """One row per condition, in a stable order (by the keys' values)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        values = {k: job.condition.get(k) for k in keys}
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), []).append(job)
    rows = [Row({k: g[0].condition.get(k) for k in keys}, g, _stats(g)) for g in groups.values()]
    rows.sort(key=lambda r: [_sort_key(r.values.get(k)) for k in keys])
    return rows


def _sort_key(value) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def dense_rows(jobs: list[Job], keys: list[str]) -> list[Row]:
    """The dense model of each non-pruning condition, once per repeat (sweep jobs share it)."""
    dense_keys = [k for k in keys if not k.startswith("prune.")]
    groups: dict[str, dict[tuple, Job]] = {}
    for job in jobs:
        if "dense/test/acc" in job.results:
            values = {k: job.condition.get(k) for k in dense_keys}
            key = json.dumps(values, sort_keys=True, default=str)
            groups.setdefault(key, {})[job.repeat] = job
    rows = []
    for by_repeat in groups.values():
        members = list(by_repeat.values())
        values = {
            k: ("dense" if k.startswith("prune.") else members[0].condition.get(k)) for k in keys
        }
        stats = _stats(members, prefix="dense/")
        stats["prune/sparsity"] = Stat(0.0, float("nan"), len(members), float("nan"), float("nan"))
        rows.append(Row(values, members, stats, dense=True))
    return rows
