"""``python -m fer_lottery.report DIR...``: a table of test accuracy against sparsity.

Reads every ``results.json`` under the given run or sweep folders, groups jobs by the config
keys that vary between them (except the seed), and prints mean +- std over seeds with n. Folders
of a sweep without a ``results.json`` are listed as failed or missing, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from fer_lottery.io import flatten

GROUP_EXCLUDE = {"seed", "prune.seed"}
# Config keys that never define an experimental condition.
IGNORE_PREFIXES = (
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "cache_",
    "data.root",
    "data.num_workers",
)


def collect(dirs: list[Path]) -> tuple[list[dict], list[Path]]:
    """All results under ``dirs``, and the job folders that have none (failed or unfinished)."""
    results, missing = [], []
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            data = json.loads(path.read_text())
            data["_dir"] = str(path.parent)
            data["_flat"] = flatten(data.get("config", {}))
            results.append(data)
        for hydra_dir in sorted(Path(d).rglob(".hydra")):
            job = hydra_dir.parent
            if not (job / "results.json").is_file():
                missing.append(job)
    return results, missing


def varying_keys(results: list[dict]) -> list[str]:
    """Config keys whose value differs between jobs, except the seed and bookkeeping keys."""
    keys = sorted({k for r in results for k in r["_flat"]})
    out = []
    for k in keys:
        if k in GROUP_EXCLUDE or k.startswith(IGNORE_PREFIXES):
            continue
        if len({json.dumps(r["_flat"].get(k), default=str) for r in results}) > 1:
            out.append(k)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else float("nan")


def _fmt(mean: float, std: float, scale: float = 100.0) -> str:
    if math.isnan(std):
        return f"{mean * scale:.2f}"
    return f"{mean * scale:.2f} ± {std * scale:.2f}"


def table(results: list[dict]) -> list[dict[str, object]]:
    """One row per condition: the varying keys, mean/std of test accuracy and sparsity, n."""
    keys = varying_keys(results)
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(tuple(r["_flat"].get(k) for k in keys), []).append(r)
    rows = []
    for values, members in groups.items():
        row: dict[str, object] = dict(zip(keys, values, strict=True))
        for metric in ("test/acc", "dense/test/acc", "prune/sparsity"):
            vals = [float(m[metric]) for m in members if metric in m]
            if vals:
                row[metric] = _mean_std(vals)
        row["n"] = len(members)
        rows.append(row)
    rows.sort(key=lambda r: [str(r.get(k)) for k in keys])
    return rows


def dense_rows(results: list[dict], keys: list[str]) -> list[dict[str, object]]:
    """The dense model of each non-pruning condition, once per seed (sweep jobs share it)."""
    dense_keys = [k for k in keys if not k.startswith("prune.")]
    groups: dict[tuple, dict[object, float]] = {}
    for r in results:
        if "dense/test/acc" in r:
            group = groups.setdefault(tuple(r["_flat"].get(k) for k in dense_keys), {})
            group[r["_flat"].get("seed")] = float(r["dense/test/acc"])
    rows = []
    for values, by_seed in groups.items():
        row: dict[str, object] = {k: "dense" if k.startswith("prune.") else "" for k in keys}
        row.update(zip(dense_keys, values, strict=True))
        row["test/acc"] = _mean_std(list(by_seed.values()))
        row["prune/sparsity"] = (0.0, float("nan"))
        row["n"] = len(by_seed)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, object]], keys: list[str]) -> str:
    """The table as markdown, accuracies and sparsity in percent."""
    head = [*keys, "sparsity %", "test acc % (mean ± std)", "dense test acc %", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row.get(k)) for k in keys]
        for metric in ("prune/sparsity", "test/acc", "dense/test/acc"):
            cells.append(_fmt(*row[metric]) if metric in row else "-")
        cells.append(str(row["n"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lottery.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders")
    args = parser.parse_args(argv)
    absent = [d for d in args.dirs if not d.is_dir()]
    if absent:
        print(f"error: no such folder: {', '.join(map(str, absent))}", file=sys.stderr)
        return 2
    results, missing = collect(args.dirs)
    if not results:
        print(f"error: no results.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    keys = varying_keys(results)
    pruned = [r for r in results if "prune/sparsity" in r]
    rows = dense_rows(results, keys) + table(pruned) if pruned else table(results)
    print(markdown(rows, keys))
    if missing:
        print(f"\n{len(missing)} job(s) without results.json (failed or unfinished):")
        for job in missing:
            print(f"  {job}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
