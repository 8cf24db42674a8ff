"""Building the report: collect the jobs, group them, write report.md, report.csv and the PNGs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fer_lottery.core import paths
from fer_lottery.job.progress import duration
from fer_lottery.plotting import charts
from fer_lottery.report.collect import Job, Problem, collect
from fer_lottery.report.conditions import (
    Row,
    condition_keys,
    dense_rows,
    label_keys,
    repeat_note,
    rows_of,
)
from fer_lottery.report.contrasts import paired_section
from fer_lottery.report.figures import (
    plot_convergence,
    plot_layer_sparsity,
    plot_remaining,
    plot_setting,
)
from fer_lottery.report.papers import (
    comparison_keys,
    comparison_rows,
    paper_values,
    published_blocks,
)
from fer_lottery.report.per_class import per_class_section
from fer_lottery.report.stability import stability_section
from fer_lottery.report.studies import study_sections
from fer_lottery.report.tables import comparison_table, main_table, write_csv


def _paper_sections(blocks: list[dict], jobs: list[Job], out: Path, figures: list) -> list[str]:
    """One section per paper table: ours beside the published numbers, and its plot."""
    md: list[str] = []
    for block in blocks:
        comp = comparison_rows(block, jobs)
        title = f"Paper {block.get('paper', '')}, {block.get('table', '')}"
        md += [f"## {title}: ours beside the paper\n", f"{block.get('caption', '')}\n"]
        if block.get("rows"):
            members = [j for row in comp for j in row.jobs]
            match = list(block.get("match") or [])
            keys = comparison_keys(block, jobs)
            pooled = [k for k in condition_keys(members) if k not in keys]
            md += [comparison_table(block, comp, keys), "", repeat_note(members, pooled)]
            split = [f"`{k}`" for k in keys if k not in match]
            if split:
                md.append(
                    f"Rows are also split by {', '.join(split)}: it differs between these jobs "
                    "but is not swept by their sweeps, so they are never averaged together."
                )
            md.append("")
        else:
            md += ["The paper gives this as a figure only: no numbers to compare.\n"]
        if block.get("dense"):
            d = block["dense"]
            md += [f"Paper's dense model: {d.get('test/acc')} ± {d.get('std', '?')} % test.\n"]
        name = f"paper_{block.get('paper', '')}_{block.get('table', '')}".lower()
        name = "".join(c if c.isalnum() else "_" for c in name).strip("_") + ".png"
        if block.get("rows") and plot_setting(block, comp, out / name) is not None:
            figures.append((f"{title}, ours and the paper's", name))
            charts.plt.close("all")
    return md


# data/protocol -> what the report says of it (data.split.PROTOCOLS).
PROTOCOLS = {
    "official": "official SFEW 2.0 (train on Train, test on Val)",
    "fractions": "stratified fractions of the pooled images (data.split)",
    "kfold": "k-fold cross-validation (data.folds)",
}


def protocol_line(jobs: list[Job]) -> str:
    """Which split protocol the jobs ran, with counts when they differ. A job of an older
    version, without ``data/protocol``, ran fractions (or k-fold when it has ``data/folds``)."""
    counts: dict[str, int] = {}
    for job in jobs:
        fallback = "kfold" if job.results.get("data/folds") else "fractions"
        name = str(job.results.get("data/protocol") or fallback)
        counts[name] = counts.get(name, 0) + 1
    named = [PROTOCOLS.get(name, name) for name in counts]
    if len(counts) == 1:
        return f"Protocol: {named[0]}.\n"
    parts = [f"{text}: {n} job(s)" for text, n in zip(named, counts.values(), strict=True)]
    return f"Protocol: {'; '.join(parts)}.\n"


@dataclass
class _Grouped:
    """The jobs grouped into conditions: the keys that vary, the keys that label the rows, the
    pruned conditions (or every one, when none prunes), their dense rows, and the presets'
    published tables."""

    varying: list[str]
    keys: list[str]
    rows: list[Row]
    dense: list[Row]
    pruned: bool
    blocks: list[dict]


def build(
    dirs: list[Path],
    out: Path,
    curves: list[str] | None = None,
    limit: int = 8,
    paired: list[str] | None = None,
) -> str:
    """Collect, aggregate, write report.md, report.csv (and paired.csv) and the PNGs into
    ``out``; return the md. ``paired``: contrasts ``KEY=V1,V2`` besides the natural ones."""
    jobs, problems = _collect(dirs)
    out.mkdir(parents=True, exist_ok=True)
    grouped = _group(jobs)
    rows, dense, keys = grouped.rows, grouped.dense, grouped.keys
    paired_md = paired_section(rows, keys, paired, out)
    _attach_published(grouped)
    figures: list[tuple[str, str]] = []
    md = _header(dirs, jobs, problems, grouped.varying)
    md += _paper_sections(grouped.blocks, jobs, out, figures)
    md += study_sections(jobs, out, figures)
    md += ["## All conditions\n", main_table(dense + rows, keys), ""]
    md += [repeat_note(jobs, []), ""]
    md += paired_md
    md += stability_section(rows, keys, out, figures)
    md += _overview_figures(grouped, out, curves, limit, figures)
    md += per_class_section(grouped.blocks, rows, dense, keys, out, figures)
    if figures:
        md += ["## Figures\n"] + [f"- {text}: ![{text}]({name})" for text, name in figures] + [""]
    md += _problems_md(problems)
    write_csv(out / "report.csv", dense + rows, keys)
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    return text


def _collect(dirs: list[Path]) -> tuple[list[Job], list[Problem]]:
    """The finished jobs under ``dirs`` and the ones without usable results; an error that
    lists the latter when no job is usable."""
    jobs, problems = collect(dirs)
    if not jobs:
        where = ", ".join(map(str, dirs))
        if not problems:
            raise FileNotFoundError(f"no results.json under {where}")
        head = (
            f"no usable results.json under {where}; {len(problems)} job(s) without usable results:"
        )
        lines = [f"  {p.name}: {p.reason}" for p in problems]
        raise FileNotFoundError("\n".join([head, *lines]))
    return jobs, problems


def _group(jobs: list[Job]) -> _Grouped:
    """The conditions of ``jobs``: pruned ones beside their dense rows, or all when none prunes."""
    varying = condition_keys(jobs)
    keys = label_keys(jobs, varying)
    pruned = [j for j in jobs if j.pruned]
    dense = dense_rows(pruned, keys) if pruned else []
    rows = rows_of(pruned, keys) if pruned else rows_of(jobs, keys)
    return _Grouped(varying, keys, rows, dense, bool(pruned), published_blocks(jobs))


def _attach_published(grouped: _Grouped) -> None:
    """Each row of a preset's jobs gets the published numbers of its own condition."""
    for block in grouped.blocks:
        match = block.get("match") or []
        for row in grouped.rows:
            if any(j.results.get("config", {}).get("published") == block for j in row.jobs):
                row.paper = paper_values(block, {k: row.jobs[0].config.get(k) for k in match})


def _header(dirs: list[Path], jobs: list[Job], problems: list[Problem], varying: list[str]):
    """The report's title, what it holds and how to read its numbers, and the protocol."""
    md = [f"# fer_lottery report\n\nRuns under: {', '.join(f'`{d}`' for d in dirs)}  "]
    md.append(
        f"{len(jobs)} finished job(s), {len(problems)} without usable results; "
        f"grouped by {', '.join(f'`{k}`' for k in varying) or 'nothing (one condition)'}; "
        "n counts independent repeats (seeds, folds): the jobs of one repeat share a dense "
        "model and a test split, so they are averaged into one value first. Accuracies are on "
        "the held-out test split, in %. 95% CI: Student t over repeats; a single repeat (or "
        "repeats that agree exactly) gets the binomial (Wilson) interval of the test images "
        "(seeds share one test split; folds add theirs).\n"
    )
    md += sweep_times(dirs, jobs)
    md.append(protocol_line(jobs))
    return md


def sweep_times(dirs: list[Path], jobs: list[Job]) -> list[str]:
    """When each sweep under ``dirs`` started (its ``multirun.yaml``) and its last job ended,
    and the compute its finished jobs took (their own ``time/total_s``, added up)."""
    lines = []
    sweeps = sorted({p.parent for d in map(Path, dirs) for p in Path(d).rglob(paths.MULTIRUN)})
    for sweep in sweeps:
        mine = [j for j in jobs if Path(j.dir).resolve().is_relative_to(sweep.resolve())]
        ends = [
            p.stat().st_mtime for name in (paths.RESULTS, paths.FAILED) for p in sweep.rglob(name)
        ]
        if not ends:
            continue
        # A relaunch rewrites multirun.yaml: the sweep began when its first job did, if earlier.
        began = [
            (Path(j.dir) / paths.RESULTS).stat().st_mtime - float(j.results["time/total_s"])
            for j in mine
            if isinstance(j.results.get("time/total_s"), int | float)
            and (Path(j.dir) / paths.RESULTS).is_file()
        ]
        started = min([(sweep / paths.MULTIRUN).stat().st_mtime, *began])
        ended = max(ends)
        compute = sum(float(j.results.get("time/total_s") or 0) for j in mine)
        stamp = "%Y-%m-%d %H:%M"
        lines.append(
            f"Sweep `{sweep}`: started {time.strftime(stamp, time.localtime(started))}, its last "
            f"job ended {time.strftime(stamp, time.localtime(ended))} "
            f"({duration(max(ended - started, 0))}); {len(mine)} finished job(s) took "
            f"{duration(compute)} of compute (their own times, added up).  "
        )
    return lines


def _overview_figures(
    grouped: _Grouped, out: Path, curves: list[str] | None, limit: int, figures: list
) -> list[str]:
    """Accuracy against weights remaining, weights remaining per layer, and convergence, drawn
    into ``out`` and listed in ``figures``; the notes on what each leaves out."""
    rows, dense, keys = grouped.rows, grouped.dense, grouped.keys
    md: list[str] = []
    paper_dense = next(
        (
            (float(b["dense"]["test/acc"]), float(b["dense"].get("std", 0)))
            for b in grouped.blocks
            if b.get("dense")
        ),
        None,
    )
    remaining = out / "accuracy_vs_remaining.png"
    if grouped.pruned and plot_remaining(rows, dense, keys, remaining, paper_dense):
        figures.append(("Test accuracy vs weights remaining", "accuracy_vs_remaining.png"))
        charts.plt.close("all")
    layers = out / "layer_sparsity.png"
    drawn = plot_layer_sparsity(rows, keys, layers, limit) if grouped.pruned else 0
    if drawn:
        profiled = sum(
            1 for r in rows if any(k.startswith("prune/sparsity/") for k in r.jobs[0].results)
        )
        if profiled > drawn:
            md.append(f"Per-layer plot: the first {drawn} of {profiled} pruned conditions.\n")
        figures.append(("Weights remaining per layer, per condition", "layer_sparsity.png"))
        charts.plt.close("all")
    chosen = _choose(rows, curves) if curves else rows
    if len(chosen) > limit:
        md.append(
            f"Convergence plot: the first {limit} of {len(chosen)} conditions "
            "(choose with --curves KEY=VALUE).\n"
        )
    if plot_convergence(chosen, dense, keys, out / "convergence.png", limit):
        figures.append(("Validation accuracy per epoch", "convergence.png"))
        charts.plt.close("all")
    return md


def _choose(rows: list[Row], filters: list[str]) -> list[Row]:
    """The rows that match any of the ``KEY=VALUE`` filters."""
    wanted = [f.split("=", 1) for f in filters]
    return [r for r in rows if any(str(r.values.get(k)) == v for k, v in wanted)]


def _problems_md(problems: list[Problem]) -> list[str]:
    """The jobs without usable results and why: failed, killed, never started, bad results.json."""
    if not problems:
        return ["All jobs finished.\n"]
    lines = [f"## {len(problems)} job(s) without results the report can use\n"]
    lines += [f"- `{p.name}`: {p.reason}" for p in problems]
    if any(p.bad_results for p in problems):
        lines += [
            "",
            "A sweep that is run again does not redo a job that has a results.json, even an "
            "unusable one: delete that file first, then run the same command.",
        ]
    return lines + [""]
