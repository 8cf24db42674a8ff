"""``python -m fer_lottery.report DIR...``: tables, CSV and plots of runs and sweeps.

Reads every ``results.json`` under the given folders and groups the jobs by the keys that vary
between them, except the seed and the fold (those are repeats). Each row gives mean +- std, n
and a 95% confidence interval (t over repeats; a single run gets the binomial interval of its
test split). Where a preset stores a paper's published numbers (``published:`` in
``conf/experiment/*.yaml``), they stand beside ours, with whether the paper's number lies in our
interval. Jobs that failed, were killed or never started, and jobs whose ``results.json`` does not
parse or breaks its schema (``fer_lottery.store.results``), are listed with the reason, never
dropped; the exit status is still 0 when any job has usable results.

Conditions that differ in one key alone are compared seed by seed (``report.contrasts``):
magnitude - random, rewind - continuation, and each ``--paired KEY=V1,V2``.

Writes ``report.md``, ``report.csv`` (``paired.csv`` with paired comparisons) and PNG plots into
``--out`` (default: the first folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_lottery.core.errors import DiskFullError, no_space
from fer_lottery.report.build import build
from fer_lottery.report.contrasts import ContrastError, parse_spec


def _contrast(text: str) -> str:
    try:
        parse_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lottery.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    parser.add_argument(
        "--curves",
        nargs="*",
        metavar="KEY=VALUE",
        help="conditions to draw in convergence.png, e.g. prune.ratio=0.5 prune.ratio=0.9",
    )
    parser.add_argument("--max-curves", type=int, default=8, help="at most this many curves")
    parser.add_argument(
        "--paired",
        action="append",
        type=_contrast,
        metavar="KEY=V1,V2",
        help="also give V1 - V2 seed by seed for conditions that differ in KEY alone, e.g. "
        "prune.method=magnitude,random (repeatable)",
    )
    args = parser.parse_args(argv)
    absent = [d for d in args.dirs if not d.is_dir()]
    if absent:
        print(f"error: no such folder: {', '.join(map(str, absent))}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    try:
        text = build(args.dirs, out, args.curves, args.max_curves, args.paired)
    except (FileNotFoundError, ContrastError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        full = no_space(exc)
        if full is None:
            raise
        target = full.filename2 or full.filename
        fix = "Free some space there, or write the report elsewhere (--out DIR); then run again"
        error = DiskFullError(target or out, full, under=target is None, fix=fix)
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nWritten: {out / 'report.md'}, {out / 'report.csv'} and the PNGs in {out}")
    return 0
