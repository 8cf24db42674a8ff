"""``python -m fer_lottery.analysis overlap DIR_A DIR_B [DIR_C ...] [--out DIR]``

Each DIR is a run folder or a folder of runs, optionally narrowed to one condition of a sweep by
``::KEY=VALUE,...`` over the resolved config (``outputs/sweep::prune.score_at=pretrained,
prune.ratio=0.9``), and optionally ``@R`` for the mask after IMP round R (``mask_round<R>.pt``; how
the rounds nest, or an IMP round against one-shot pruning at the same sparsity). The masks
(``mask.pt``, the final one) of two DIRs are paired by repeat (seed and fold), and every pair of
DIRs is compared: per layer and in total, the Jaccard index of the kept weights, the share of A's
kept weights that B keeps, the chance level of random masks with the same per-layer densities, and
the ratio to it, each as the mean over the paired repeats. Unit-level masks (distinctiveness,
``prune.granularity=unit``, on both sides) are compared unit by unit. Runs that cannot be paired are
named. Writes ``overlap.md``, ``overlap.csv`` and ``overlap.png`` (layers x pairs, in "x chance")
into ``--out`` (default: the first DIR).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from fer_lottery.analysis.overlap import mask_overlap
from fer_lottery.pruning.mask import Mask

COLUMNS = ("jaccard", "share_of_a", "chance_jaccard", "x_chance")


def _flat(node: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _matches(config: dict, where: dict[str, str]) -> bool:
    flat = _flat(config)
    return all(str(flat.get(k)) == v for k, v in where.items())


def parse_set(spec: str) -> tuple[Path, dict[str, str], int | None]:
    """``DIR[::KEY=VALUE,...][@R]``: a folder, the config values its runs must have, and the
    IMP round whose mask to take (None: the final mask)."""
    spec, at, round_text = spec.rpartition("@") if "@" in spec else (spec, "", "")
    r = None
    if at:
        if not round_text.isdigit() or int(round_text) < 1:
            raise ValueError(f"{spec}@{round_text}: expected @R, R an IMP round from 1")
        r = int(round_text)
    folder, _, where = spec.partition("::")
    pairs = [p.split("=", 1) for p in where.split(",") if p]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"{spec}: expected DIR::KEY=VALUE,KEY=VALUE")
    return Path(folder), dict(pairs), r


def mask_file(run: Path, config: dict, r: int | None) -> Path | None:
    """The run's mask after round ``r`` (None, or its last round: ``mask.pt``)."""
    rounds = (config.get("prune") or {}).get("iterations") or 1
    if r is None or r == rounds:
        return run / "mask.pt"
    if r > rounds:
        return None
    return run / f"mask_round{r}.pt"


def runs(spec: str) -> dict[tuple, Path]:
    """The pruned runs of a set by repeat (seed, fold); ValueError if one repeat has two."""
    folder, where, r = parse_set(spec)
    found: dict[tuple, Path] = {}
    for results in sorted(folder.rglob("results.json")):
        run = results.parent
        config = json.loads(results.read_text()).get("config", {})
        if not _matches(config, where):
            continue
        mask = mask_file(run, config, r)
        if mask is None or not mask.is_file():
            continue
        repeat = (config.get("seed"), (config.get("data") or {}).get("fold"))
        if repeat in found:
            raise ValueError(
                f"{folder}: two runs of seed {repeat[0]}, fold {repeat[1]} ({found[repeat]} and "
                f"{run}): narrow it to one condition, e.g. {folder}::prune.ratio=0.9"
            )
        found[repeat] = mask
    if not found:
        what = "mask.pt" if r is None else f"the mask of IMP round {r}"
        raise ValueError(f"{spec}: no finished pruned run (results.json with {what}) there")
    return found


def _unit_level(mask: Path) -> bool:
    prune = json.loads((mask.parent / "results.json").read_text())["config"]["prune"]
    return prune.get("method") == "distinctiveness" or prune.get("granularity") == "unit"


def compare(a: str, b: str) -> tuple[dict[str, dict[str, float]], list[tuple], bool, list[str]]:
    """Per layer, the mean over paired repeats of each column; the repeats paired; units or not;
    and the runs that could not be paired."""
    ra, rb = runs(a), runs(b)
    paired = sorted(set(ra) & set(rb), key=str)
    unpaired = [str(ra[k].parent) for k in ra if k not in rb]
    unpaired += [str(rb[k].parent) for k in rb if k not in ra]
    if not paired:
        raise ValueError(f"{a} and {b} share no seed (and fold): nothing to pair")
    units = all(_unit_level(ra[k]) and _unit_level(rb[k]) for k in paired)
    sums: dict[str, dict[str, float]] = {}
    for key in paired:
        ma = Mask.load(ra[key]).tensors
        mb = Mask.load(rb[key]).tensors
        for layer, value in mask_overlap(ma, mb, units=units).items():
            row = sums.setdefault(layer, dict.fromkeys(COLUMNS, 0.0))
            for column in COLUMNS:
                row[column] += getattr(value, column) / len(paired)
    return sums, paired, units, unpaired


def _short(spec: str) -> str:
    folder, where, r = parse_set(spec)
    name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in where.items()) or folder.name
    return name + ("" if r is None else f" round {r}")


def _table(layers: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| layer | Jaccard | share of A kept by B | Jaccard by chance | × chance |"]
    lines.append("|---|---|---|---|---|")
    for layer, row in layers.items():
        cells = [f"{row[c]:.3f}" if not math.isnan(row[c]) else "" for c in COLUMNS]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def _heatmap(results: dict[str, dict], out: Path) -> None:
    from fer_lottery.report.plots import overlap_heatmap, plt

    overlap_heatmap(results, out)
    plt.close("all")


def overlap_main(dirs: list[str], out: Path) -> str:
    results: dict[str, dict] = {}
    md = ["# Mask overlap\n"]
    rows = []
    for i, a in enumerate(dirs):
        for b in dirs[i + 1 :]:
            layers, paired, units, unpaired = compare(a, b)
            name = f"{_short(a)} vs {_short(b)}"
            results[name] = layers
            level = "units" if units else "weights"
            md += [f"## A = `{a}`, B = `{b}`\n", f"{len(paired)} paired repeat(s), {level}.\n"]
            md += _table(layers) + [""]
            if unpaired:
                md += [
                    f"Not paired (no run of the same seed and fold on the other side): "
                    f"{', '.join(unpaired)}\n"
                ]
            rows += [{"pair": name, "layer": layer, **row} for layer, row in layers.items()]
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(md)
    (out / "overlap.md").write_text(text)
    with (out / "overlap.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["pair", "layer", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    _heatmap(results, out / "overlap.png")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lottery.analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    ov = sub.add_parser("overlap", help="mask overlap of two or more sets of runs, against chance")
    ov.add_argument("dirs", nargs="+", help="DIR or DIR::KEY=VALUE,... (one condition)")
    ov.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if len(args.dirs) < 2:
        print("overlap needs at least two folders of runs to compare", file=sys.stderr)
        return 2
    try:
        print(overlap_main(args.dirs, args.out or parse_set(args.dirs[0])[0]))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
