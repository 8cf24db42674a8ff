"""The report's mask-overlap section of a study whose preset names an ``overlap`` contrast
(``study.overlap: {key, a, b}``, e.g. ``prune.score_at`` finetuned against pretrained): for
each pair of its conditions that differ in that key alone, the final masks of the two jobs of
each seed (and fold) are compared (``pruning.overlap``: Jaccard of the kept weights, share of
A's kept by B, the chance level of random masks of the same per-layer densities, × chance),
the mean over seeds is tabled in total and for the layers most and least alike against chance,
and ``overlap_<key>_<a>_<b>.png`` draws layers × pairs in × chance. Seeds that cannot be paired are
named, as in the paired comparisons."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from fer_lottery.core import paths
from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import Row, repeats, short_name
from fer_lottery.report.contrasts import Spec, contrasted_rows
from fer_lottery.report.tables import markdown_table

COLUMNS = ("jaccard", "share_of_a", "chance_jaccard", "x_chance")
HEAD = [
    "A vs B",
    "condition",
    "n pairs",
    "Jaccard (total)",
    "share of A kept by B",
    "Jaccard by chance",
    "× chance",
    "most alike (× chance)",
    "least alike (× chance)",
]


def _units(job: Job) -> bool:
    return job.config.get("prune.method") == "distinctiveness" or (
        job.config.get("prune.granularity") == "unit"
    )


def pair_overlap(a: Job, b: Job) -> dict[str, dict[str, float]]:
    """Per layer and ``total``, the overlap columns of two jobs' final masks."""
    from fer_lottery.pruning.mask import Mask
    from fer_lottery.pruning.overlap import mask_overlap

    ma = Mask.load(a.dir / paths.MASK).tensors
    mb = Mask.load(b.dir / paths.MASK).tensors
    found = mask_overlap(ma, mb, units=_units(a) and _units(b))
    return {layer: {c: getattr(v, c) for c in COLUMNS} for layer, v in found.items()}


def _mean(per_pair: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    layers = list(dict.fromkeys(layer for p in per_pair for layer in p))
    out = {}
    for layer in layers:
        rows = [p[layer] for p in per_pair if layer in p]
        out[layer] = {c: statistics.fmean(r[c] for r in rows) for c in COLUMNS}
    return out


def _pairs(a: Row, b: Row) -> tuple[list[tuple[Job, Job]], list[str]]:
    """The jobs of A and B paired by seed and fold (one each, both with a mask), and why the
    others are not."""
    side_a = {g[0].repeat: g for g in repeats(a.jobs)}
    side_b = {g[0].repeat: g for g in repeats(b.jobs)}
    paired, unpaired = [], []
    for repeat in sorted(side_a.keys() | side_b.keys(), key=str):
        seed, fold = repeat
        name = f"seed {seed}" + ("" if fold is None else f", fold {fold}")
        ga, gb = side_a.get(repeat), side_b.get(repeat)
        if ga is None or gb is None:
            unpaired.append(f"{name} on one side only")
        elif len(ga) != 1 or len(gb) != 1:
            unpaired.append(f"{name}: {len(ga)} and {len(gb)} jobs (one mask each needed)")
        elif not all((j.dir / paths.MASK).is_file() for j in (ga[0], gb[0])):
            unpaired.append(f"{name}: no mask.pt")
        else:
            paired.append((ga[0], gb[0]))
    return paired, unpaired


def _fmt(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.3f}"


def overlap_section(
    block: dict, rows: list[Row], keys: list[str], out: Path, figures: list
) -> list[str]:
    """The section for one study (nothing when it names no overlap contrast)."""
    spec_block = block.get("overlap")
    if not isinstance(spec_block, dict):
        return []
    spec = Spec(str(spec_block["key"]), str(spec_block["a"]), str(spec_block["b"]))
    found, _ = contrasted_rows(rows, keys, spec)
    title = block.get("title", "Study")
    md = [f"### Mask overlap: {short_name(spec.key)}={spec.a} (A) against {spec.b} (B)\n"]
    md.append(
        "Final masks of A and B compared seed by seed (mean over the paired seeds): the Jaccard "
        "index of the kept weights, the share of A's kept weights that B keeps too, the Jaccard "
        "expected of random masks with the same per-layer densities (E|A∩B| = k_A·k_B/n per "
        "layer), and the ratio to it. Unit-level masks are compared unit by unit.\n"
    )
    lines, heat, unpaired_lines = [], {}, []
    for a, b in found:
        paired, unpaired = _pairs(a, b)
        condition = ", ".join(
            f"{short_name(k)}={a.values[k]}"
            for k in keys
            if k != spec.key and a.values.get(k) is not None
        )
        if unpaired:
            unpaired_lines.append(f"- {condition or 'all'}: {'; '.join(unpaired)}")
        if not paired:
            continue
        mean = _mean([pair_overlap(ja, jb) for ja, jb in paired])
        total = mean.pop("total")
        finite = [layer for layer in mean if not math.isnan(mean[layer]["x_chance"])]
        ranked = sorted(finite, key=lambda layer: mean[layer]["x_chance"])
        most = f"{ranked[-1]} ({mean[ranked[-1]]['x_chance']:.2f})" if ranked else ""
        least = f"{ranked[0]} ({mean[ranked[0]]['x_chance']:.2f})" if ranked else ""
        lines.append(
            [f"{spec.a} vs {spec.b}", condition or "all", str(len(paired))]
            + [_fmt(total[c]) for c in COLUMNS]
            + [most, least]
        )
        heat[condition or "all"] = {**mean, "total": total}
    if not lines:
        md.append("No two conditions of this study could be paired by seed.\n")
        return md + (["Not paired:\n", *unpaired_lines, ""] if unpaired_lines else [])
    md += [markdown_table(HEAD, lines), ""]
    if unpaired_lines:
        md += ["Not paired:\n", *unpaired_lines, ""]
    slug = "_".join((short_name(spec.key), spec.a, spec.b))
    name = "overlap_" + "".join(c if c.isalnum() else "_" for c in slug) + ".png"
    from fer_lottery.plotting import charts

    charts.overlap_heatmap(heat, out / name, title=f"{title}: {spec.a} vs {spec.b}")
    charts.plt.close("all")
    figures.append((f"Mask overlap, {title}, layers × conditions (× chance)", name))
    return md
