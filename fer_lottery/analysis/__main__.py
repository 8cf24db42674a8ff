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
import difflib
import json
import math
import re
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from fer_lottery.config import schema_defaults
from fer_lottery.config.checks import OPEN_KEYS
from fer_lottery.config.renamed import old_spelling, upgrade
from fer_lottery.core.criteria import prunes
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.overlap import mask_overlap

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
    """Whether the recorded ``config`` (keys at their current places: ``config.renamed``) has
    every value of ``where``, each read by Hydra's override grammar, as on the command line
    (``false`` is False, ``0.50`` is 0.5, ``null`` is None)."""
    flat = _flat(upgrade(config))
    return all(flat.get(k) == _value(k, v) for k, v in where.items())


def _value(key: str, written: str) -> object:
    """``written`` as ``python -m fer_lottery key=written`` would set it."""
    try:
        return OverridesParser.create().parse_override(f"{key}={written}").value()
    except HydraException as exc:
        raise ValueError(f"{key}={written}: not a value Hydra reads ({exc})") from None


def _check_keys(spec: str, keys: list[str]) -> None:
    """A selector key that is no setting (a typo, or an old spelling) is refused in one line
    naming it and the fix, rather than selecting nothing."""
    known = schema_defaults()
    for key in keys:
        moved = old_spelling([key])
        if moved:
            raise ValueError(f"{spec}: {moved}")
        if key not in known and not any(key.startswith(k + ".") for k in OPEN_KEYS):
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"{spec}: {key} is not a fer_lottery setting{hint}; select on the keys that "
                "python -m fer_lottery --cfg job prints"
            )


def parse_set(spec: str) -> tuple[Path, dict[str, str], int | None]:
    """``DIR[::KEY=VALUE,...][@R]``: a folder, the config values its runs must have, and the
    IMP round whose mask to take (None: the final mask)."""
    match = re.fullmatch(r"(.*)@([0-9]+)", spec)
    r = None
    if match:
        spec, r = match.group(1), int(match.group(2))
        if r < 1:
            raise ValueError(f"{spec}@{r}: expected @R, R an IMP round from 1")
    folder, _, where = spec.partition("::")
    pairs = [p.split("=", 1) for p in where.split(",") if p]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"{spec}: expected DIR::KEY=VALUE,KEY=VALUE")
    _check_keys(spec, [k for k, _ in pairs])
    for key, value in pairs:
        _value(key, value)  # a value Hydra cannot read is refused here, not matched as nothing
    return Path(folder), dict(pairs), r


def mask_file(run: Path, config: dict, r: int | None) -> Path | None:
    """The run's mask after round ``r`` (None, or its last round: ``mask.pt``)."""
    rounds = (config.get("prune") or {}).get("iterations") or 1
    if r is None or r == rounds:
        return run / "mask.pt"
    if r > rounds:
        return None
    return run / f"mask_round{r}.pt"


def runs(spec: str, skipped: list[str] | None = None) -> dict[tuple, Path]:
    """The pruned runs of a set by repeat (seed, fold); ValueError if one repeat has two. A run
    of the set that has no mask to compare is added to ``skipped`` with the reason."""
    folder, where, r = parse_set(spec)
    found: dict[tuple, Path] = {}
    skipped = [] if skipped is None else skipped
    for results in sorted(folder.rglob("results.json")):
        run = results.parent
        config = json.loads(results.read_text()).get("config", {})
        if not _matches(config, where):
            continue
        mask = mask_file(run, config, r)
        if mask is None:
            skipped.append(f"{run} (round {r}: the job ran fewer IMP rounds)")
            continue
        if not mask.is_file():
            prune = config.get("prune") or {}
            pruned = prunes(prune.get("method"), prune.get("ratio"))
            skipped.append(f"{run} ({'no ' + mask.name if pruned else 'a dense run: no mask'})")
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
        why = f"; skipped: {', '.join(skipped)}" if skipped else ""
        raise ValueError(f"{spec}: no finished pruned run (results.json with {what}) there{why}")
    return found


def _candidates(mask: Path, units: bool) -> set[str] | None:
    """The layers the run's criterion could prune, as its results.json names them: the unit
    layers (``prune/units_removed/<layer>``) or the prunable weights (``prune/sparsity/<layer>``);
    None for a file that names none (then every layer of the mask is compared)."""
    results = json.loads((mask.parent / "results.json").read_text())
    prefix = "prune/units_removed/" if units else "prune/sparsity/"
    found = {k.removeprefix(prefix) for k in results if k.startswith(prefix)}
    return found or None


def _unit_level(mask: Path) -> bool:
    prune = json.loads((mask.parent / "results.json").read_text())["config"]["prune"]
    return prune.get("method") == "distinctiveness" or prune.get("granularity") == "unit"


def _pairs(ra: dict, rb: dict, across: bool, same_set: bool) -> list[tuple[tuple, tuple]]:
    """(repeat of A, repeat of B) pairs: the same seed and fold, or with ``across`` every two
    different seeds of one fold (each unordered pair once when A and B are one set)."""
    if not across:
        return [(k, k) for k in sorted(set(ra) & set(rb), key=str)]
    pairs = [
        (ka, kb)
        for ka in sorted(ra, key=str)
        for kb in sorted(rb, key=str)
        if ka[0] != kb[0] and ka[1] == kb[1] and not (same_set and str(ka) > str(kb))
    ]
    return pairs


def compare(
    a: str, b: str, across: bool = False
) -> tuple[dict[str, dict[str, float]], list[tuple], bool, list[str]]:
    """Per layer, the mean over paired repeats of each column; the pairs of repeats; units or
    not; and the runs that could not be paired. ``across``: runs of different seeds are paired
    (is a ticket stable across seeds?), with ``a == b`` allowed."""
    skipped: list[str] = []
    ra, rb = runs(a, skipped), runs(b, skipped if a != b else None)
    paired = _pairs(ra, rb, across, a == b)
    used_a, used_b = {p[0] for p in paired}, {p[1] for p in paired}
    if a == b:  # one set against itself: a run is paired when it is on either side
        used_a = used_b = used_a | used_b
    unpaired = [str(ra[k].parent) for k in ra if k not in used_a]
    unpaired += [str(rb[k].parent) for k in rb if k not in used_b and a != b]
    unpaired += [f"skipped: {s}" for s in skipped]
    if not paired:
        what = "two different seeds of one fold" if across else "a seed (and fold)"
        raise ValueError(f"{a} and {b} share no {what}: nothing to pair")
    units = all(_unit_level(ra[ka]) and _unit_level(rb[kb]) for ka, kb in paired)
    sums: dict[str, dict[str, float]] = {}
    for ka, kb in paired:
        ma = Mask.load(ra[ka]).tensors
        mb = Mask.load(rb[kb]).tensors
        la, lb = _candidates(ra[ka], units), _candidates(rb[kb], units)
        layers = None if la is None or lb is None else la | lb
        for layer, value in mask_overlap(ma, mb, units=units, layers=layers).items():
            row = sums.setdefault(layer, dict.fromkeys(COLUMNS, 0.0))
            for column in COLUMNS:
                row[column] += getattr(value, column) / len(paired)
    return sums, paired, units, unpaired


def _short(spec: str) -> str:
    folder, where, r = parse_set(spec)
    name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in where.items()) or folder.name
    return name + ("" if r is None else f" round {r}")


def _table(layers: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| layer | Jaccard | share of A kept by B | Jaccard by chance | × chance |"]
    lines.append("|---|---|---|---|---|")
    for layer, row in layers.items():
        cells = [f"{row[c]:.3f}" if not math.isnan(row[c]) else "" for c in COLUMNS]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def _heatmap(results: dict[str, dict], out: Path) -> None:
    from fer_lottery.plotting.charts import overlap_heatmap, plt

    overlap_heatmap(results, out)
    plt.close("all")


def overlap_main(dirs: list[str], out: Path, across: bool = False) -> str:
    results: dict[str, dict] = {}
    md = ["# Mask overlap\n"]
    if across:
        md.append("Runs paired across seeds: each two different seeds of one fold.\n")
    rows = []
    sets = [(a, a) for a in dirs] if across and len(dirs) == 1 else []
    sets += [(a, b) for i, a in enumerate(dirs) for b in dirs[i + 1 :]]
    for a, b in sets:
        layers, paired, units, unpaired = compare(a, b, across)
        name = f"{_short(a)} vs {_short(b)}" + (" (across seeds)" if across else "")
        results[name] = layers
        level = "units" if units else "weights"
        md += [f"## A = `{a}`, B = `{b}`\n", f"{len(paired)} pair(s) of runs, {level}.\n"]
        md += _table(layers) + [""]
        alone = [u for u in unpaired if not u.startswith("skipped: ")]
        skipped = [u.removeprefix("skipped: ") for u in unpaired if u.startswith("skipped: ")]
        if alone:
            md += [f"Not paired (no run on the other side to pair it with): {', '.join(alone)}\n"]
        if skipped:
            md += [f"Skipped (nothing to compare): {', '.join(skipped)}\n"]
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
    ov.add_argument(
        "--across-seeds",
        action="store_true",
        help="pair runs of different seeds (is a ticket stable across seeds?); one DIR is then "
        "compared with itself",
    )
    args = parser.parse_args(argv)
    if len(args.dirs) < 2 and not args.across_seeds:
        print(
            "overlap needs at least two folders of runs to compare (or one with --across-seeds)",
            file=sys.stderr,
        )
        return 2
    try:
        out = args.out or parse_set(args.dirs[0])[0]
        print(overlap_main(args.dirs, out, args.across_seeds))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
