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
import os
import shutil
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fer_lottery.config import CONF_DIR, register_configs, validate
from fer_lottery.config.checks import check_tracker_options
from fer_lottery.config.renamed import old_spelling
from fer_lottery.core import paths
from fer_lottery.core.errors import DiskFullError, FerLotteryError, no_space
from fer_lottery.job import termination
from fer_lottery.job.failures import earlier_same_error, launch_id, record_failure
from fer_lottery.job.log_routing import quiet_disk_full_in_threads
from fer_lottery.store.cache_dir import check_writable

log = logging.getLogger("fer_lottery")

register_configs()


def _quiet_warnings() -> None:
    # Lightning's own use of a deprecated torch API; nothing a user can act on. Set inside main()
    # so that launcher worker processes (joblib, submitit) get it too.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # On a SLURM login node (srun on PATH) every Trainer suggests `srun python ...` for
    # multi-node DDP; a fer_lottery job uses one device, and the slurm launcher submits it.
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system")


_quiet_warnings()


def _disk_full(exc: Exception, run_dir: Path, cfg: DictConfig) -> Exception:
    """``exc``, or a DiskFullError when a full disk (or quota) is behind it.

    Writes through ``store.atomic`` name their file; for any other write (a log, a figure, an
    event file), the error names the fuller of the run folder and the cache.
    """
    full = no_space(exc)
    if full is None or isinstance(exc, DiskFullError):
        return exc
    target = full.filename2 or full.filename  # a copy names its source first, then its target
    if target:
        return DiskFullError(target, full)
    places = [run_dir, Path(str(cfg.get("cache_dir", run_dir)))]
    free = {}
    for place in places:
        try:
            free[place] = shutil.disk_usage(place).free
        except OSError:
            continue
    return DiskFullError(min(free, key=free.get) if free else None, full, under=True)


def _failed(exc: Exception, run_dir: Path, hydra_cfg) -> float:
    """Say why the job failed, once, on stderr, and exit, or in a sweep return NaN.

    A single run exits 2 for a user error (FerLotteryError: one line, no traceback), else 1. In
    a sweep the failure is recorded in the job's ``failed.json`` and the sweep goes on; an error
    that an earlier job of the same launch already printed gets one line naming that job. A full
    disk stops a sweep that runs in this process (every later job would fail the same way).
    """
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if not multirun:
        if isinstance(exc, FerLotteryError):
            log.error("%s", exc)
            sys.exit(2)  # Hydra would print it again
        record_failure(run_dir, exc, list(hydra_cfg.overrides.task))  # what the report names
        log.exception("the job failed")
        sys.exit(1)
    optuna = "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower()
    in_process = "BasicLauncher" in str(hydra_cfg.launcher.get("_target_", ""))
    sweep_dir = Path(hydra_cfg.sweep.dir)
    launch = launch_id(sweep_dir)
    record_failure(run_dir, exc, list(hydra_cfg.overrides.task), launch=launch)
    if isinstance(exc, DiskFullError) and in_process:
        log.error("%s (the sweep stops here: every later job would fail the same way)", exc)
        sys.exit(2)
    where = f" (recorded in {run_dir / paths.FAILED}" + ("" if optuna else "; the sweep goes on")
    earlier = earlier_same_error(sweep_dir, run_dir, f"{type(exc).__name__}: {exc}", launch)
    if earlier is not None:
        log.error(
            "%s: failed with the same error as %s%s)",
            run_dir.relative_to(sweep_dir).as_posix()
            if run_dir.is_relative_to(sweep_dir)
            else run_dir,
            earlier.relative_to(sweep_dir).as_posix(),
            where,
        )
    elif isinstance(exc, FerLotteryError):
        log.error("%s%s)", exc, where)
    else:
        log.exception("the job failed%s)", where)
    if optuna:
        raise exc  # Optuna marks the trial FAIL; its max_failure_rate decides what follows
    return float("nan")


def main() -> float | None:
    """``python -m fer_lottery [overrides]``: a moved setting's old spelling is refused in one line
    that gives the new one (``config.renamed``), before Hydra composes anything; then the job, or
    the sweep."""
    refused = old_spelling(sys.argv[1:]) or check_tracker_options(sys.argv[1:])
    if refused:
        print(f"fer_lottery: {refused}", file=sys.stderr)
        sys.exit(2)
    return _job()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _job(cfg: DictConfig) -> float:
    _quiet_warnings()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    termination.install()
    quiet_disk_full_in_threads()
    try:
        validate(cfg)
        check_writable(cfg)  # before any data is loaded
        from fer_lottery.config.checks import check_accelerator
        from fer_lottery.core.devices import JOB_ENV
        from fer_lottery.experiment.folds import run_folds  # heavy imports after validation

        check_accelerator(cfg)  # a GPU job with no usable GPU: one line, before any work
        from fer_lottery.models.checks import check_model

        check_model(cfg)  # the backbone's own limits, before any data is loaded

        # A sweep job's index picks its GPU among the visible ones (device.gpu_for_job).
        num = hydra_cfg.job.get("num") if hydra_cfg.mode == RunMode.MULTIRUN else None
        os.environ[JOB_ENV] = "" if num is None else str(num)

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
            launch = launch_id(Path(hydra_cfg.sweep.dir))
            record_failure(run_dir, exc, overrides, reason=reason, launch=launch)
        sys.exit(getattr(exc, "exit_status", termination.EXIT_STATUS))
    except Exception as caught:
        return _failed(_disk_full(caught, run_dir, cfg), run_dir, hydra_cfg)
    print(
        f"\nHeld-out test accuracy: {results['test/acc']:.4f} "
        f"(best val acc {results['val/acc_best']:.4f}; n_test={results.get('data/n_test')})\n"
        f"Results: {run_dir / (paths.FOLDS if 'folds' in results else paths.RESULTS)}"
    )
    return float(results["val/acc_best"])


if __name__ == "__main__":
    main()
