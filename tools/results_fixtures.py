"""Write tests/fixtures/results/<kind>.json anew: real results.json files of tiny synthetic jobs
of every kind, which tests/end_to_end/test_results_schema.py checks against the schema.

Run it after a change to the keys a job writes: ``.venv/bin/python tools/results_fixtures.py``
(about a minute on two CPU cores). Each job runs the real pipeline in a temporary folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "results"
TINY = ("debug=tiny", "trainer.max_epochs=1", "prune.retrain_epochs=1")

KINDS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "magnitude": ("prune.ratio=0.5",),
    "magnitude_imp2": ("prune.ratio=0.5", "prune.iterations=2"),
    "magnitude_retrain0": ("prune.ratio=0.5", "prune.retrain_epochs=0"),
    "kfold_fold0": ("prune.ratio=0.5", "data.folds=2", "data.fold=0"),
    "random_rewind_epoch_nocache": (
        "prune.method=random",
        "prune.ratio=0.9",
        "prune.rewind=epoch",
        "cache_dense=false",
    ),
    "distinctiveness_paper_b": ("prune.method=distinctiveness", "prune.variant=paper_b"),
    "unit_magnitude_rewind": (
        "prune.granularity=unit",
        "prune.ratio=0.5",
        "prune.rewind=pretrained",
    ),
    "gradual_magnitude": (
        "prune.schedule=gradual",
        "prune.ratio=0.8",
        "prune.retrain_epochs=2",
        "prune.gradual_end=1",
    ),
    "magnitude_stability": ("prune.ratio=0.5", "prune.stability=true"),
    "gradient_before_finetune": (
        "prune.method=gradient",
        "prune.ratio=0.8",
        "prune.score_at=pretrained",
        "prune.rewind=pretrained",
    ),
}


def main() -> None:
    from fer_lottery.config import CONF_DIR, register_configs
    from fer_lottery.experiment.runner import run_experiment

    register_configs()

    work = Path(tempfile.mkdtemp(prefix="results_fixtures_"))
    try:
        for kind, overrides in KINDS.items():
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose("config", [*TINY, f"cache_dir={work / 'cache'}", *overrides])
            results = run_experiment(cfg, work / kind)
            results["config"]["cache_dir"] = ".cache/fer_lottery"  # no path of this machine
            (OUT / f"{kind}.json").write_text(json.dumps(results, indent=2) + "\n")
            print(f"{kind}: test/acc {results['test/acc']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
