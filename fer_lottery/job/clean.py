"""``python -m fer_lottery.job.clean DIR...`` (``make clean-checkpoints DIR=...``): free the disk
space that only serves to resume.

A finished job (one with ``results.json``) needs no ``checkpoints/`` folder: its final weights are
in ``weights.pt`` (or, for a dense-only job, in the dense cache). Jobs that have not finished
keep theirs, since a rerun resumes from them. Nothing else is touched.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from fer_lottery.core import paths


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def clean(dirs: list[Path]) -> tuple[int, int]:
    """Remove the ``checkpoints/`` folders of finished jobs under ``dirs``: (folders, bytes)."""
    folders = freed = 0
    for root in dirs:
        for results in sorted(Path(root).rglob(paths.RESULTS)):
            ckpts = results.parent / paths.CHECKPOINTS
            if ckpts.is_dir():
                freed += _size(ckpts)
                shutil.rmtree(ckpts)
                folders += 1
    return folders, freed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lottery.job.clean", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"no such folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    folders, freed = clean(args.dirs)
    print(f"removed {folders} checkpoints folder(s) of finished jobs, {freed / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
