"""The report's sections for the "beyond the papers" presets: each preset's ``study`` block
(title, question, and the keys its rows are grouped by) gets a table of ours, with no paper
numbers to set beside them: the dense model, then each condition, mean ± std over seeds."""

from __future__ import annotations

import json
from pathlib import Path

from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import condition_keys, dense_rows, repeat_note, rows_of
from fer_lottery.report.overlaps import overlap_section
from fer_lottery.report.papers import _swept
from fer_lottery.report.tables import main_table


def study_blocks(jobs: list[Job]) -> list[dict]:
    """The distinct ``study`` blocks of the presets the jobs ran, in order of first sight."""
    seen: dict[str, dict] = {}
    for job in jobs:
        block = job.results.get("config", {}).get("study")
        if isinstance(block, dict):
            seen.setdefault(json.dumps(block, sort_keys=True), block)
    return list(seen.values())


def study_jobs(block: dict, jobs: list[Job]) -> list[Job]:
    text = json.dumps(block, sort_keys=True)
    return [
        j
        for j in jobs
        if json.dumps(j.results.get("config", {}).get("study"), sort_keys=True) == text
    ]


def study_keys(block: dict, members: list[Job]) -> list[str]:
    """The study's own keys (``match``), then any key that differs between its jobs without
    being swept by all of their sweeps (a different command): it splits rows, never pooled."""
    match = list(block.get("match") or [])
    extra = [
        k
        for k in condition_keys(members)
        if k not in match and not all(_swept(k, j.swept) for j in members)
    ]
    return match + extra


def study_sections(jobs: list[Job], out: Path, figures: list) -> list[str]:
    """One markdown section per study: its question, then its table, and its mask overlap when
    the study names one (``report.overlaps``)."""
    md: list[str] = []
    for block in study_blocks(jobs):
        members = study_jobs(block, jobs)
        pruned = [j for j in members if j.pruned]
        keys = study_keys(block, pruned or members)
        dense = dense_rows(pruned, keys) if pruned else []
        rows = rows_of(pruned or members, keys)
        md += [f"## {block.get('title', 'Study')}\n"]
        if block.get("question"):
            md += [f"{block['question']}\n"]
        md += [main_table(dense + rows, keys), "", repeat_note(members, []), ""]
        md += overlap_section(block, rows, keys, out, figures)
    return md
