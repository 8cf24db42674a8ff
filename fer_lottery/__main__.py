"""``python -m fer_lottery [overrides]``: compose the config, run one experiment.

Returns ``val/acc_best`` so that Hydra sweepers (e.g. Optuna) can optimise it. Errors in the
user's input (FerLotteryError) are printed once, to stderr, as one clear message without a
traceback (``conf/hydra/job_logging/fer_lottery.yaml`` sends warnings and errors to stderr). A
cache folder that cannot be written is reported before any data is loaded. In a multirun a failed
job is recorded in its ``failed.json`` and returns NaN, so the other jobs of the sweep still run
(see ``fer_lottery.job.failures``).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fer_lottery.config import CONF_DIR, register_configs, validate
from fer_lottery.errors import FerLotteryError
from fer_lottery.job import termination
from fer_lottery.job.failures import record_failure
from fer_lottery.store import paths
from fer_lottery.store.cache_dir import check_writable

log = logging.getLogger("fer_lottery")

register_configs()


def _quiet_warnings() -> None:
    # Lightning's own use of a deprecated torch API; nothing a user can act on. Set inside main()
    # so that launcher worker processes (joblib, submitit) get it too.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


_quiet_warnings()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    _quiet_warnings()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    termination.install()
    try:
        validate(cfg)
        check_writable(cfg)  # before any data is loaded
        from fer_lottery.experiment.folds import run_folds  # heavy imports after validation

        # One experiment, or k of them with data.folds=k; finished ones are skipped.
        results = run_folds(cfg, run_dir)
        (run_dir / paths.FAILED).unlink(missing_ok=True)  # an earlier attempt's, now retried
    except (termination.JobTerminated, SystemExit) as exc:
        if not termination.is_termination(exc):
            raise
        # Pre-empted, timed out or Ctrl-C: what a rerun needs is on disk; never report success.
        reason = getattr(exc, "reason", termination.REASON)
        log.error("%s: %s. Run the same command again to resume it.", reason, run_dir)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            overrides = list(hydra_cfg.overrides.task)
            record_failure(run_dir, exc, overrides, reason=reason)
        sys.exit(getattr(exc, "exit_status", termination.EXIT_STATUS))
    except Exception as exc:
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        optuna = multirun and "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower()
        if multirun:
            record_failure(run_dir, exc, list(hydra_cfg.overrides.task))
        # One message per error, on stderr; in a sweep it says where the failure is recorded.
        where = f" (recorded in {run_dir / paths.FAILED}; the sweep goes on)" if multirun else ""
        if optuna:
            where = f" (recorded in {run_dir / paths.FAILED})"
        if isinstance(exc, FerLotteryError):
            log.error("%s%s", exc, where)
        else:
            log.exception("the job failed%s", where)
        if not multirun:
            sys.exit(2 if isinstance(exc, FerLotteryError) else 1)  # Hydra would print it again
        if optuna:
            raise  # Optuna marks the trial FAIL; its max_failure_rate decides what follows
        return float("nan")
    print(
        f"\nHeld-out test accuracy: {results['test/acc']:.4f} "
        f"(best val acc {results['val/acc_best']:.4f}; n_test={results.get('data/n_test')})\n"
        f"Results: {run_dir / (paths.FOLDS if 'folds' in results else paths.RESULTS)}"
    )
    return float(results["val/acc_best"])


if __name__ == "__main__":
    main()
