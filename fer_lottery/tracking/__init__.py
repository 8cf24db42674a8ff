"""Experiment trackers beside the run folder: a job's MLflow and W&B runs (``logger=...``).

- ``trackers``: ``JobTrackers``, one tracker run per job (opened, resumed, finished, or marked
  stale), the Lightning logger of each stage, and the one warning a tracker gets when it is
  missing or does not answer;
- ``backends``: what MLflow and W&B each need (Lightning's ``MLFlowLogger`` and
  ``WandbLogger``, their own clients).

The run folder stays the record: a tracker never fails or changes a job.
"""

from fer_lottery.tracking.trackers import JobTrackers, current, open_trackers, retire

__all__ = ["JobTrackers", "current", "open_trackers", "retire"]
