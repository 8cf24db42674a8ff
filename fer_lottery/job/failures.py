"""Failed sweep jobs: recorded in ``failed.json``, summed up when the sweep ends.

Hydra's basic launcher stops a whole sweep at the first job that raises. One bad setting (a
ratio that empties a layer, a NaN loss) should not cost the other 24 jobs of a preset, so in a
multirun a failing job writes ``failed.json`` (the error, its traceback and the job's overrides)
and returns NaN. ``FailedJobs``, a Hydra callback, then lists the failed jobs and exits non-zero
after the sweep, and the report lists them beside the table.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback

from fer_lottery.store import paths
from fer_lottery.store.atomic import write_json_atomic

log = logging.getLogger("fer_lottery")


def record_failure(
    run_dir: Path, exc: BaseException, overrides: list[str], reason: str = "error"
) -> None:
    """Write ``run_dir/failed.json``: why (``reason``: "error", or "terminated (pre-empted)"),
    the error's type and message, traceback and overrides."""
    error = f"{type(exc).__name__}: {exc}"
    write_json_atomic(
        Path(run_dir) / paths.FAILED,
        {
            "reason": reason,
            "error": error if reason == "error" else f"{reason}: {error}",
            "traceback": "".join(traceback.format_exception(exc)),
            "overrides": overrides,
        },
    )


def failed_jobs(sweep_dir: Path) -> list[Path]:
    """Job folders under ``sweep_dir`` whose last attempt failed (a later success clears it)."""
    found = Path(sweep_dir).rglob(paths.FAILED)
    return sorted(p.parent for p in found if not (p.parent / paths.RESULTS).is_file())


class FailedJobs(Callback):
    """Around a multirun: write ``multirun.yaml`` if the sweeper does not; afterwards name each
    failed job and its error, then exit non-zero."""

    def on_multirun_start(self, config, **kwargs) -> None:
        # The basic sweeper writes multirun.yaml itself; Optuna's does not. Job folder names
        # (fer_lottery.config.sweeps) read the swept keys from it, so write it when it is missing.
        from omegaconf import OmegaConf

        path = Path(config.hydra.sweep.dir) / paths.MULTIRUN
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, path)

    def on_multirun_end(self, config, **kwargs) -> None:
        import json

        sweep_dir = Path(config.hydra.sweep.dir)
        failed = failed_jobs(sweep_dir)
        if not failed:
            return
        lines = [f"{len(failed)} job(s) of the sweep in {sweep_dir} failed:"]
        for job in failed:
            error = json.loads((job / paths.FAILED).read_text())["error"]
            lines.append(f"  {job.name}: {error.splitlines()[0] if error else '?'}")
        lines.append(
            "The other jobs finished; rerun the same command to retry only the failed ones "
            "(finished jobs are skipped), and see each job's failed.json for the traceback."
        )
        log.error("\n".join(lines))
        # Hydra turns a callback's exception into a warning; the exit status must say it.
        raise SystemExit(1)
