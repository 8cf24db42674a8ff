"""Process start: what a fresh ``python -m fer_lottery`` job pays in imports before it trains.

Every sweep job under submitit (or joblib) is a new process, so this is paid once per job.
``ours`` is the wall time of a fresh ``python -c "import fer_lottery.experiment.runner"``
(everything a job imports before training); the baseline is ``python -c "import torch,
pytorch_lightning"``, the floor of any Lightning tool (pytorch_lightning imports torchmetrics,
which brings in torchvision, matplotlib and scipy). Both are fresh subprocesses, alternating,
medians.

Extras: the wall time of ``python -m fer_lottery --cfg job`` and of a config error
(``prune.ratio=2``), neither of which imports torch; and one ``-X importtime`` run of
``import torch; import pytorch_lightning; import fer_lottery.experiment.runner``: torch, what
pytorch_lightning adds, and what the pipeline adds on top (fer_lottery, Hydra, OmegaConf, ...),
in seconds of import (the interpreter's own start not included).

``python -m benchmarks.bench_startup`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import alternate, emit

ROOT = Path(__file__).resolve().parent.parent


def python(*args: str, expect: int = 0) -> str:
    """Run a fresh ``python *args`` in the repository root; its stderr."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != expect:
        raise RuntimeError(f"python {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return proc.stderr


def import_breakdown() -> dict[str, float]:
    """Seconds of import: torch, pytorch_lightning on top of it, the rest of the pipeline's."""
    code = "import torch; import pytorch_lightning; import fer_lottery.experiment.runner"
    stderr = python("-X", "importtime", "-c", code)
    cumulative: dict[str, int] = {}
    for line in stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            cumulative[parts[2].strip()] = int(parts[1])
    return {
        "torch_s": round(cumulative["torch"] / 1e6, 3),
        "pytorch_lightning_s": round(cumulative["pytorch_lightning"] / 1e6, 3),
        "rest_s": round(cumulative["fer_lottery.experiment.runner"] / 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    breakdown = import_breakdown()  # also the warm-up: the files are in the page cache after it
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = f"hydra.run.dir={Path(tmp) / 'run'}"  # the config error's log goes there
        s = alternate(
            {
                "ours": lambda: python("-c", "import fer_lottery.experiment.runner"),
                "baseline": lambda: python("-c", "import torch, pytorch_lightning"),
                "cfg_job": lambda: python("-m", "fer_lottery", "--cfg", "job"),
                "config_error": lambda: python(
                    "-m", "fer_lottery", "prune.ratio=2", run_dir, expect=2
                ),
            },
            args.repeats,
            warmup=0,
        )
    emit(
        "process_start",
        s["ours"],
        s["baseline"],
        "s",
        baseline_is="python -c 'import torch, pytorch_lightning' (fresh process)",
        ours_is="python -c 'import fer_lottery.experiment.runner' (fresh process)",
        cfg_job_s=round(s["cfg_job"], 3),
        config_error_s=round(s["config_error"], 3),
        importtime=breakdown,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
