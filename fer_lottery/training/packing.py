"""How many jobs share this machine's GPU, and what that leaves each of them: the torch thread
count of a GPU job packed K at once by joblib (``threads`` null: CPUs // K).

A CPU job keeps every CPU under every launcher, since its numbers depend on the count."""

from __future__ import annotations

from omegaconf import DictConfig

from fer_lottery.core.devices import resolved_device
from fer_lottery.core.seeding import available_cpus


def packed_jobs() -> int:
    """How many jobs of this sweep run at once in this machine's launcher: joblib's ``n_jobs``
    (-1: one per CPU), else 1. Read from the job's Hydra config; 1 outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
    except (ImportError, ValueError):
        return 1
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return available_cpus() if n_jobs < 0 else max(n_jobs, 1)


def job_threads(cfg: DictConfig) -> int | None:
    """``threads``, or for a GPU job packed K at once its share of the CPUs (CPUs // K, at least
    1), or None (every CPU). A CPU job's default never depends on the launcher: its numbers do."""
    if cfg.get("threads") is not None:
        return int(cfg.threads)
    k = packed_jobs()
    if k > 1 and resolved_device(cfg) == "cuda":
        return max(available_cpus() // k, 1)
    return None
