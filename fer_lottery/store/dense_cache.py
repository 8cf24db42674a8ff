"""The dense fine-tune, cached by a hash of what determines it (not ``prune.*``).

Every job of a prune sweep shares one dense run: the first job trains it into
``<cache_dir>/dense/<key>.partial`` and renames that folder into place once every file it
promises is there and loads, while the other jobs wait on a file lock (at most
``cache_lock_timeout_s``) instead of training the same model twice. A killed job leaves the
``.partial`` folder behind, and the next job resumes it from its last checkpoint. A finished
entry is checked whenever a job looks it up: if a file it promises is missing or does not load,
the entry is moved into ``dense/quarantine/`` with one warning, and the dense model is trained
again.

The key covers what the settings *resolve to*: the content of a ``model.weights`` file (not its
path), the precision and device that ``trainer.precision: null`` and ``accelerator: auto`` pick,
and on a CPU the torch thread count (CPU float results depend on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from fer_lottery.config import enum_value
from fer_lottery.errors import CacheError
from fer_lottery.store.atomic import write_atomic, write_json_atomic
from fer_lottery.store.cache_dir import move_aside

log = logging.getLogger(__name__)

# Bump when the dense stage's training changes, so stale entries stop matching.
CACHE_VERSION = 2
# Settings that do not change what the dense stage computes.
_IGNORED = {
    # Settings that change no number: when and how often the stage reports or checkpoints.
    "trainer": (
        "enable_progress_bar",
        "log_every_n_steps",
        "num_sanity_val_steps",
        "checkpoint_every_n_epochs",
    ),
    "data": ("num_workers", "detect_batch_size"),
}
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def snapshot_epoch(cfg: DictConfig) -> int | None:
    """The dense epoch whose weights ``prune.rewind=epoch`` needs, else None."""
    rewind = enum_value(cfg.prune.rewind)
    return int(cfg.prune.rewind_epoch) if rewind == "epoch" else None


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def dense_key(cfg: DictConfig, data_fingerprint: str = "") -> str:
    """Hash of data, model, optim, trainer and seed (plus theta_k's epoch when it is needed).

    ``data_fingerprint`` (a hash of the split tensors) makes the key follow the data itself, so
    a changed crop or synthetic generator cannot reuse a model trained on other images.
    """
    from fer_lottery.seeding import resolve_threads
    from fer_lottery.training.stage import resolved_device, trainer_kwargs

    parts = {}
    for section in ("data", "model", "optim", "trainer"):
        node = OmegaConf.to_container(cfg[section], resolve=True, enum_to_str=True)
        for key in _IGNORED.get(section, ()):
            node.pop(key, None)
        parts[section] = node
    weights = parts["model"]["weights"]
    if weights and Path(str(weights)).expanduser().is_file():
        parts["model"]["weights"] = "sha256:" + file_sha256(Path(str(weights)).expanduser())
    if parts["data"]["name"] == "synthetic":  # generated, not read: where it would be is moot
        parts["data"].pop("root", None)
    else:
        parts["data"]["root"] = str(Path(str(parts["data"]["root"])).expanduser().resolve())
    device = resolved_device(cfg)
    parts["trainer"]["precision"] = str(trainer_kwargs(cfg)["precision"])
    parts["trainer"]["accelerator"] = device
    if device == "cpu":
        parts["threads"] = resolve_threads(cfg.get("threads"))
    parts.update(seed=cfg.seed, snapshot_epoch=snapshot_epoch(cfg), version=CACHE_VERSION)
    parts["data_fingerprint"] = data_fingerprint
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``; a ValueError saying why when it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).splitlines() or [""])[0].split(". ")[0]  # torch's first sentence
        raise ValueError(f"cannot be read ({type(exc).__name__}: {reason})") from None
    if not isinstance(state, dict) or not state or not all(map(torch.is_tensor, state.values())):
        raise ValueError(f"holds a {type(state).__name__}, not a state dict of tensors")
    return state


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``; a CacheError naming the file when it is not one."""
    try:
        return read_state(path)
    except ValueError as exc:
        raise CacheError(
            f"dense cache file {path} {exc}; delete its folder {path.parent} and run again, or "
            "set cache_dense=false"
        ) from None


class DenseEntry:
    """One cached dense run: its folder, its lock, and the files a finished one holds."""

    def __init__(self, cache_dir: str | Path, key: str):
        self.root = Path(cache_dir) / "dense"
        self.key = key
        self.final = self.root / key
        self.partial = self.root / f"{key}.partial"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.root / f"{key}.lock"
        self.holder_path = self.root / f"{key}.holder.json"
        self.lock = FileLock(str(self.lock_path))
        self._checked: dict[str, dict[str, torch.Tensor]] = {}  # files check() read

    def done(self) -> bool:
        """Whether a whole finished entry is here; a broken one is moved aside (see ``check``)."""
        return self.check()

    def check(self, required: tuple[str, ...] = ("theta0.pt", "best.pt")) -> bool:
        """Validate the finished entry: metrics.json parses, and every file it lists (and each of
        ``required``) loads as a state dict of the same tensors' names and shapes.

        A broken entry gets one warning naming the file and is moved into ``quarantine/``, so the
        caller sees a miss and trains the model again. Call it with the lock held.
        """
        self._checked = {}
        if not self.final.exists():
            return False
        problem = self._problem(required)
        if problem is None:
            return True
        what = move_aside(self.final)
        log.warning(
            "dense cache entry %s is unusable: %s; %s; the dense model is trained again",
            self.key,
            problem,
            what,
        )
        return False

    def _problem(self, required: tuple[str, ...]) -> str | None:
        """What is wrong with the finished entry (naming the file), or None when it is whole."""
        path = self.final / "metrics.json"
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return f"{path} cannot be read ({type(exc).__name__}: {exc})"
        files = metrics.get("files") if isinstance(metrics, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            return f"{path} does not list the entry's files"
        first: tuple[str, dict[str, torch.Size]] | None = None
        for name in dict.fromkeys([*required, *files]):
            path = self.final / name
            if not path.is_file():
                return f"{path} is missing"
            try:
                state = read_state(path)
            except ValueError as exc:
                return f"{path} {exc}"
            self._checked[name] = state  # loaded once: ``load`` hands it out
            shapes = {k: v.shape for k, v in state.items()}
            if first is not None and shapes != first[1]:
                return f"{path} holds other tensors than {first[0]}"
            first = first or (name, shapes)
        return None

    def acquire(self, timeout_s: float = 14400.0, job: str = "") -> None:
        """Take the lock, waiting at most ``timeout_s`` for the job that holds it.

        The holder writes who it is beside the lock, so a job that gives up can say which job
        (host, pid, run dir) it waited for.
        """
        start = time.perf_counter()
        try:
            self.lock.acquire(timeout=min(1.0, timeout_s))
        except Timeout:
            log.info("dense cache %s: another job is training this dense model; waiting", self.key)
            try:
                self.lock.acquire(timeout=max(0.0, timeout_s - (time.perf_counter() - start)))
            except Timeout:
                raise CacheError(
                    f"waited {timeout_s:.0f} s for the dense cache lock {self.lock_path}, held by "
                    f"{self.holder()}. That job is training the same dense model: let it finish, "
                    "raise cache_lock_timeout_s=..., or set cache_dense=false to train this job's "
                    "own copy"
                ) from None
            log.info("dense cache %s: waited %.0f s", self.key, time.perf_counter() - start)
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "job": job,
        }
        write_json_atomic(self.holder_path, holder)

    def holder(self) -> str:
        """Who holds the lock, as its holder file says (or that it says nothing)."""
        try:
            h = json.loads(self.holder_path.read_text())
            return f"pid {h['pid']} on {h['host']} since {h['since']} (job {h['job'] or '?'})"
        except (OSError, ValueError, KeyError):
            return f"an unknown process (no readable {self.holder_path.name})"

    def release(self) -> None:
        self.holder_path.unlink(missing_ok=True)
        self.lock.release()

    @staticmethod
    def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    def finish(self, metrics: dict, files: list[str]) -> None:
        """Check every promised state file, write the metrics, move the entry into place.

        An entry is published only when each of ``files`` is present and loads as a state dict,
        so no later job can find a broken entry under this key.
        """
        for name in files:
            path = self.partial / name
            if not path.is_file():
                raise CacheError(f"dense cache entry {self.partial} lacks {name}; not published")
            load_state(path)
        shutil.rmtree(self.partial / "checkpoints", ignore_errors=True)
        write_json_atomic(self.partial / "metrics.json", {**metrics, "files": files})
        if self.final.exists():  # a stale, unfinished copy
            shutil.rmtree(self.final)
        self.partial.rename(self.final)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        """A state file of the finished entry (the copy ``check`` already read, if it did)."""
        state = self._checked.pop(name, None)
        return state if state is not None else load_state(self.final / name)

    def load_partial(self, name: str) -> dict[str, torch.Tensor] | None:
        """A state file of the unfinished entry, or None when it is missing or unreadable."""
        path = self.partial / name
        try:
            return load_state(path) if path.is_file() else None
        except CacheError:
            return None

    def metrics(self) -> dict:
        """The finished entry's metrics (without its file list)."""
        metrics = json.loads((self.final / "metrics.json").read_text())
        metrics.pop("files", None)
        return metrics

    def copy_logs(self, run_dir: Path) -> None:
        """Copy the dense curves and confusion matrix into a job's run dir (for TensorBoard)."""
        for sub in ("tb/dense", "csv/dense"):
            if (self.final / sub).is_dir():
                shutil.copytree(self.final / sub, run_dir / sub, dirs_exist_ok=True)
        if (self.final / "confusion_dense.png").is_file():
            shutil.copy2(self.final / "confusion_dense.png", run_dir / "confusion_dense.png")
