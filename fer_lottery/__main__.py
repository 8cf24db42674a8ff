"""``python -m fer_lottery [overrides]``: compose the config, run one experiment.

Returns ``val/acc_best`` so that Hydra sweepers (e.g. Optuna) can optimise it. Errors in the
user's input (FerLotteryError) are printed as one clear message, without a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fer_lottery.config import CONF_DIR, register_configs, validate
from fer_lottery.errors import FerLotteryError

log = logging.getLogger("fer_lottery")

register_configs()
# Lightning's own use of a deprecated torch API; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        validate(cfg)
        from fer_lottery.pipeline import run_experiment  # heavy imports after validation

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        done = run_dir / "results.json"
        if done.is_file():  # a relaunched sweep skips the jobs that finished
            log.info("%s exists: this job already finished, skipping it", done)
            results = json.loads(done.read_text())
        else:
            results = run_experiment(cfg, run_dir)
    except FerLotteryError as exc:
        log.error("%s", exc)
        sys.exit(2)
    print(
        f"\nHeld-out test accuracy: {results['test/acc']:.4f} "
        f"(best val acc {results['val/acc_best']:.4f}; n_test={results.get('data/n_test')})\n"
        f"Results: {run_dir / 'results.json'}"
    )
    return float(results["val/acc_best"])


if __name__ == "__main__":
    main()
