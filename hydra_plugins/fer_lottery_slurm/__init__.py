"""fer_lottery's SLURM launcher, a Hydra plugin (Hydra instantiates launchers only from the
``hydra_plugins`` namespace): submitit's ``SlurmLauncher``, after ``fer_lottery.job.slurm_fit``
has checked that some node of the partition can run one job of the request."""

from __future__ import annotations

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from fer_lottery.job.slurm_fit import check_fit


class FittedSlurmLauncher(SlurmLauncher):
    """submitit's SLURM launcher, after a check that the partition can run the request."""

    def launch(self, job_overrides, initial_job_idx):
        check_fit(self.params)
        return super().launch(job_overrides, initial_job_idx)
