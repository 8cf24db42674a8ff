"""A new pruning criterion is one module plus one registry entry: a real CLI run of a criterion
that no other file knows (tests/example_criterion.py), registered by one ``Entry`` before the
package reads the registry, is composed, validated, run, checked against the results schema
and recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import TINY_SYNTHETIC, run_cli

ROOT = Path(__file__).resolve().parents[2]

REGISTER = (
    "import fer_lottery.core.criteria as r;"
    "r.STRATEGIES['largest_first'] = r.Entry('tests.example_criterion', options=('ratio',));"
    "from fer_lottery.__main__ import main; main()"
)


def test_a_criterion_registered_by_one_entry_runs_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY_SYNTHETIC, "trainer.max_epochs=1", "retrain.epochs=1"]
    args += ["prune.method=largest_first", "prune.ratio=0.5", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(
        [sys.executable, "-c", REGISTER, *args],
        cwd=tmp_path,
        env={**os.environ, "FER_LOTTERY_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["prune"]["method"] == "largest_first"
    assert abs(results["prune/sparsity"] - 0.5) < 1e-3  # the schema's pruned keys are there
    assert results["prune/largest_first_rounds"] == 1  # its own key, passed through
    assert (run_dir / "mask.pt").is_file() and (run_dir / "weights.pt").is_file()
    # Without the entry the name is refused while composing, naming the allowed values.
    refused = run_cli(*args, cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "largest_first" in refused.stderr
    assert "magnitude" in refused.stderr
