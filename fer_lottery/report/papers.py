"""The papers' published numbers: the presets' ``published`` blocks, and ours grouped to match.

A preset that reproduces a paper table stores the paper's numbers under ``published:`` with the
keys its rows are matched on (``match``, e.g. ``[prune.ratio]``).
"""

from __future__ import annotations

import json
import math

from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import Row, condition_keys, rows_of


def published_blocks(jobs: list[Job]) -> list[dict]:
    """The distinct ``published`` blocks of the presets the jobs ran (one per paper table)."""
    seen: dict[str, dict] = {}
    for job in jobs:
        block = job.results.get("config", {}).get("published")
        if block:
            seen.setdefault(json.dumps(block, sort_keys=True), block)
    return list(seen.values())


def _same(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def paper_values(block: dict, values: dict) -> dict[str, float]:
    """The published numbers of the block's row whose ``match`` keys equal ``values``."""
    match = list(block.get("match") or [])
    for row in block.get("rows") or []:
        if all(k in values and _same(values[k], v) for k, v in zip(match, row["at"], strict=True)):
            return {k: float(v) for k, v in row.items() if k not in ("at", "runs")}
    return {}


def block_jobs(block: dict, jobs: list[Job]) -> list[Job]:
    """The jobs that ran the preset with this ``published`` block."""
    text = json.dumps(block, sort_keys=True)
    return [
        j
        for j in jobs
        if json.dumps(j.results.get("config", {}).get("published"), sort_keys=True) == text
    ]


def _swept(key: str, swept: frozenset[str]) -> bool:
    """Whether a sweep with these swept keys (or config groups) sweeps ``key``."""
    return key in swept or any(key.startswith(group + ".") for group in swept)


def comparison_keys(block: dict, jobs: list[Job]) -> list[str]:
    """What a paper table's rows are grouped by: its own keys (``match``), then any key that
    differs between its jobs without being swept in all of their sweeps.

    Swept keys the table does not show (``prune.distinctiveness.norm_std`` in paper B's angle
    table) are pooled, and the table says so; a key that differs because the jobs come from
    different commands (``trainer.max_epochs=3`` in one sweep, 50 in another) is never averaged
    over: it splits the rows, with its own column.
    """
    match = list(block.get("match") or [])
    members = _members(block, jobs)
    unswept = [
        k
        for k in condition_keys(members)
        if k not in match and not all(_swept(k, j.swept) for j in members)
    ]
    return match + unswept


def _members(block: dict, jobs: list[Job]) -> list[Job]:
    members = block_jobs(block, jobs)
    return [j for j in members if j.pruned] or members


def comparison_rows(block: dict, jobs: list[Job]) -> list[Row]:
    """Ours grouped by ``comparison_keys`` (other swept keys pooled), beside the paper."""
    match = list(block.get("match") or [])
    rows = rows_of(_members(block, jobs), comparison_keys(block, jobs))
    for row in rows:
        row.paper = paper_values(block, {k: row.jobs[0].config.get(k) for k in match})
    return rows
