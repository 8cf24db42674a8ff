"""The dense fine-tune, cached by a hash of the config that determines it (not ``prune.*``).

Every job of a prune sweep shares one dense run: the first job trains it into
``<cache_dir>/dense/<key>.partial`` and renames that folder into place when it is complete, while
the other jobs wait on a file lock instead of training the same model twice. A killed job leaves
the ``.partial`` folder behind, and the next job resumes it from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from fer_lottery.config import enum_value
from fer_lottery.io import write_atomic, write_json_atomic

log = logging.getLogger(__name__)

# Bump when the dense stage's training changes, so stale entries stop matching.
CACHE_VERSION = 1
# Settings that do not change what the dense stage computes.
_IGNORED = {
    "trainer": ("enable_progress_bar", "log_every_n_steps"),
    "data": ("num_workers", "detect_batch_size"),
}


def snapshot_epoch(cfg: DictConfig) -> int | None:
    """The dense epoch whose weights ``prune.rewind=epoch`` needs, else None."""
    rewind = enum_value(cfg.prune.rewind)
    return int(cfg.prune.rewind_epoch) if rewind == "epoch" else None


def dense_key(cfg: DictConfig, data_fingerprint: str = "") -> str:
    """Hash of data, model, optim, trainer and seed (plus theta_k's epoch when it is needed).

    ``data_fingerprint`` (a hash of the split tensors) makes the key follow the data itself, so
    a changed crop or synthetic generator cannot reuse a model trained on other images.
    """
    parts = {}
    for section in ("data", "model", "optim", "trainer"):
        node = OmegaConf.to_container(cfg[section], resolve=True, enum_to_str=True)
        for key in _IGNORED.get(section, ()):
            node.pop(key, None)
        parts[section] = node
    if parts["model"]["weights"] and Path(str(parts["model"]["weights"])).is_file():
        parts["model"]["weights"] = str(Path(parts["model"]["weights"]).resolve())
    parts["data"]["root"] = str(Path(str(parts["data"]["root"])).expanduser().resolve())
    parts.update(seed=cfg.seed, snapshot_epoch=snapshot_epoch(cfg), version=CACHE_VERSION)
    parts["data_fingerprint"] = data_fingerprint
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DenseEntry:
    """One cached dense run: its folder, and the files a finished one holds."""

    def __init__(self, cache_dir: str | Path, key: str):
        self.root = Path(cache_dir) / "dense"
        self.key = key
        self.final = self.root / key
        self.partial = self.root / f"{key}.partial"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.root / f"{key}.lock"))

    def done(self) -> bool:
        return (self.final / "metrics.json").is_file()

    def acquire(self) -> None:
        """Take the lock; say so when another job holds it (it is training this model)."""
        start = time.perf_counter()
        try:
            self.lock.acquire(timeout=1)
        except TimeoutError:
            log.info("dense cache %s: another job is training this dense model; waiting", self.key)
            self.lock.acquire()
            log.info("dense cache %s: waited %.0f s", self.key, time.perf_counter() - start)

    def release(self) -> None:
        self.lock.release()

    @staticmethod
    def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    def finish(self, metrics: dict) -> None:
        """Write the metrics, drop the Lightning checkpoints, and move the entry into place."""
        shutil.rmtree(self.partial / "checkpoints", ignore_errors=True)
        write_json_atomic(self.partial / "metrics.json", metrics)
        if self.final.exists():  # a stale, unfinished copy
            shutil.rmtree(self.final)
        self.partial.rename(self.final)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        return torch.load(self.final / name, map_location="cpu", weights_only=True)

    def metrics(self) -> dict:
        return json.loads((self.final / "metrics.json").read_text())

    def copy_logs(self, run_dir: Path) -> None:
        """Copy the dense curves and confusion matrix into a job's run dir (for TensorBoard)."""
        for sub in ("tb/dense", "csv/dense"):
            if (self.final / sub).is_dir():
                shutil.copytree(self.final / sub, run_dir / sub, dirs_exist_ok=True)
        if (self.final / "confusion_dense.png").is_file():
            shutil.copy2(self.final / "confusion_dense.png", run_dir / "confusion_dense.png")
