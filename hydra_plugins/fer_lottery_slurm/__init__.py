"""fer_lottery's SLURM launcher, a Hydra plugin (Hydra instantiates launchers only from the
``hydra_plugins`` namespace): submitit's ``SlurmLauncher``, with three changes.

- Before anything is submitted, ``fer_lottery.job.slurm_fit.check_fit`` checks that some node of
  the partition can run one job of the request, and refuses in one line one that none can.
- It waits for the tasks of the job array with ``squeue`` (``fer_lottery.job.slurm_queue``), not
  only ``sacct``: on a cluster without accounting, submitit would wait for ever for a task that
  was cancelled or killed, and warn at every poll.
- It waits for every task, then records each one that ended without a result in its job folder
  (``failed.json``, with the scheduler's word: cancelled, time limit, node failure, ...), so
  that ``FailedJobs`` lists it and the sweep exits non-zero; the other tasks' results stand.
  It also maps tasks to job folders (``.submitit/<array id>/jobs.json``) for the report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from fer_lottery.job import failures, slurm_logs, slurm_queue
from fer_lottery.job.progress import progress_line
from fer_lottery.job.slurm_fit import check_fit

log = logging.getLogger(__name__)


class FittedSlurmLauncher(SlurmLauncher):
    """submitit's SLURM launcher, checked against the partition and watched with ``squeue``."""

    def _executor(self):
        """submitit's executor with this launcher's parameters, as the plugin builds it."""
        import submitit

        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in ("submitit_folder", "max_num_timeout")
            }
        )
        return executor

    def _job_dir(self, overrides: list[str], idx: int) -> str:
        """The folder (relative to the sweep) that job ``idx`` runs in, as Hydra will name it."""
        previous = HydraConfig.instance().cfg
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        config.hydra.job.num = idx
        HydraConfig.instance().set_config(config)
        try:
            return str(config.hydra.sweep.subdir)
        finally:
            HydraConfig.instance().cfg = previous

    def launch(self, job_overrides, initial_job_idx):
        assert len(job_overrides) > 0
        check_fit(self.params)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        # Named before anything is submitted, so that a naming error submits nothing.
        names = [self._job_dir(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        params = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            state = Singleton.get_state()
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        jobs = self._executor().map_array(self, *zip(*params, strict=True))
        launch = failures.launch_id(sweep_dir)
        slurm_logs.write_job_map(
            Path(self.params["submitit_folder"]).parent,  # <sweep>/.submitit
            jobs[0].job_id.split("_")[0],
            {job.job_id: name for job, name in zip(jobs, names, strict=True)},
            launch,
        )
        states = slurm_queue.wait_for_tasks(
            {j.job_id: j.paths.result_pickle for j in jobs},
            on_done=lambda: _progress(sweep_dir, self.config.hydra.sweeper.get("n_trials")),
        )
        returns = []
        for job, overrides, name in zip(jobs, job_overrides, names, strict=True):
            state = slurm_queue.final_state(job.job_id, states)
            outcome, value = _outcome(job, state)
            if outcome == "success":
                returns.append(value)
            else:
                record = (job, list(overrides), sweep_dir / name, state, value, launch)
                returns.append(self._unfinished(*record))
        return returns

    def _unfinished(self, job, overrides, job_dir: Path, state, detail: str, launch) -> JobReturn:
        """Record a task that ended without a result; its return value is NaN, as a failed job's.
        The job's own traceback (it may have recorded SIGTERM itself) is kept."""
        slurm_logs.write_outcome(job.paths.folder, state, detail)
        task = slurm_logs.read_task(job.paths.folder)
        error = task.reason() or f"ended without a result on SLURM (task {job.job_id})"
        if detail:
            error += f"; submitit: {detail.strip().splitlines()[-1]}"
        error += f"; its log: {job.paths.stderr}"
        job_dir.mkdir(parents=True, exist_ok=True)
        failures.record_failure(
            job_dir,
            RuntimeError(error),
            overrides,
            reason=task.ended or f"ended without a result (state {state or 'unknown'})",
            launch=launch,
            error=error,
            traceback_text=failures.recorded_traceback(job_dir) or detail or None,
        )
        log.error("%s: %s", job_dir.name, error)
        ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
        ret.return_value = float("nan")
        return ret


def _progress(sweep_dir: Path, total: int | None) -> None:
    """The sweep's progress line, as the sweep command collects its tasks (a line that cannot
    be made never stops the collecting)."""
    try:
        print(progress_line(sweep_dir, total), flush=True)
    except Exception as exc:
        log.warning("sweep progress unavailable: %s: %s", type(exc).__name__, exc)


def _outcome(job, state: str | None) -> tuple[str, object]:
    """A task's outcome: ("success", its JobReturn), ("error", submitit's traceback text), or
    ("ended", "") when it left no result. A task the queue calls COMPLETED (or that it no longer
    shows) gets submitit's grace for a shared file system to show the result file."""
    from submitit.core import utils

    result = job.paths.result_pickle
    if state in (None, "COMPLETED"):
        deadline = time.monotonic() + job._results_timeout_s
        while not result.exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # refreshes an NFS client's view of the folder
                job.paths.folder.chmod(job.paths.folder.stat().st_mode)
            time.sleep(1)
    if not result.exists():
        return "ended", ""
    outcome, value = utils.pickle_load(result)
    return outcome, value if outcome == "success" else str(value)
