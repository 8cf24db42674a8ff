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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig

from fer_lottery.config import flatten, resolved, settings
from fer_lottery.config.declaration import DENSE
from fer_lottery.core import paths
from fer_lottery.core.errors import CacheError
from fer_lottery.core.seeding import resolve_threads
from fer_lottery.store.atomic import move_aside, save_torch, write_json_atomic

log = logging.getLogger(__name__)

# Bump when the dense stage's training changes, so stale entries stop matching.
CACHE_VERSION = 3
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


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


def dense_key(
    cfg: DictConfig,
    data_fingerprint: str,
    *,
    device: str,
    precision: str,
    snapshot_epoch: int | None,
    weights_sha256: str | None = None,
) -> str:
    """Hash of the settings that change the dense stage and apply to this job (declared in the
    schema, read by ``config.settings``), with the values they resolve to.

    ``data_fingerprint`` (a hash of the split tensors) makes the key follow the data itself, so
    a changed crop or synthetic generator cannot reuse a model trained on other images.
    ``device`` (``cuda`` or ``cpu``) and ``precision`` are what ``trainer.accelerator`` and
    ``trainer.precision`` resolve to (``core.devices.resolved_device`` and
    ``trainer_kwargs``); ``snapshot_epoch`` is theta_k's epoch when the job needs one
    (``pruning.rewind.snapshot_epoch``). ``weights_sha256``: the hash of the start weights a
    ``model.weights`` name resolved to (``models.weights``): ``imagenet`` may come from a
    download on one machine and a packaged port on another, which are not the same theta0.
    """
    # What changes the dense stage and applies to this job (config.settings), as set.
    flat = flatten(resolved(cfg))
    parts: dict[str, object] = {
        k: v for k, v in settings.effective(flat, (DENSE,)).items() if v is not None
    }
    weights = parts.get("model.weights")
    if weights and Path(str(weights)).expanduser().is_file():
        parts["model.weights"] = "sha256:" + file_sha256(Path(str(weights)).expanduser())
    elif weights and weights_sha256:
        parts["model.weights"] = f"{weights}@sha256:{weights_sha256}"
    if "data.root" in parts:
        parts["data.root"] = str(Path(str(parts["data.root"])).expanduser().resolve())
    # What the device settings resolve to; the thread count only matters on a CPU.
    parts["trainer.precision"] = str(precision)
    parts["trainer.accelerator"] = device
    parts.pop("threads", None)
    if device == "cpu":
        parts["threads"] = resolve_threads(cfg.get("threads"))
    parts.update(snapshot_epoch=snapshot_epoch, version=CACHE_VERSION)
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
    """One cached dense run: its folder, its lock, and the whole protocol of filling it.

    A job holds the lock (``locked``) while it looks the entry up and, on a miss, trains it:
    ``check`` (a whole finished entry, or a broken one moved aside), else ``start`` (the
    ``.partial`` folder, theta0 written once), training into ``partial`` (which writes theta_k
    there, at ``theta_k_path``), then ``publish`` (best.pt written, theta_k = theta0 for rewind
    epoch 0, every promised file checked, the folder renamed into place). ``start_weights``
    hands out theta0 and theta_k for rewinding.
    """

    def __init__(self, cache_dir: str | Path, key: str, snapshot_epoch: int | None = None):
        self.root = Path(cache_dir) / paths.DENSE
        self.key = key
        self.snapshot_epoch = snapshot_epoch  # theta_k's epoch, when the entry holds one
        self.final = paths.dense_entry(cache_dir, key)
        self.partial = paths.dense_entry(cache_dir, key, paths.PARTIAL)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock_path = paths.dense_entry(cache_dir, key, paths.LOCK)
        self.holder_path = paths.dense_entry(cache_dir, key, paths.HOLDER)
        self.lock = FileLock(str(self.lock_path))
        self._checked: dict[str, dict[str, torch.Tensor]] = {}  # files check() read

    @property
    def files(self) -> list[str]:
        """The state files a finished entry holds."""
        return [paths.THETA0, paths.BEST] + (
            [paths.THETA_K] if self.snapshot_epoch is not None else []
        )

    # -- looking it up -------------------------------------------------------------------------

    def check(self) -> bool:
        """Validate the finished entry: metrics.json parses, and every file it lists (and theta0
        and best, which every entry has) loads as a state dict of the same tensors' names and
        shapes.

        A broken entry gets one warning naming the file and is moved into ``quarantine/``, so the
        caller sees a miss and trains the model again. Call it with the lock held.
        """
        self._checked = {}
        if not self.final.exists():
            return False
        problem = self._problem((paths.THETA0, paths.BEST))
        if problem is None:
            return True
        what = move_aside(self.final, folder=self.root / paths.QUARANTINE)
        log.warning(
            "dense cache entry %s is unusable: %s; %s; the dense model is trained again",
            self.key,
            problem,
            what,
        )
        return False

    def _problem(self, required: tuple[str, ...]) -> str | None:
        """What is wrong with the finished entry (naming the file), or None when it is whole."""
        path = self.final / paths.ENTRY_METRICS
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

    # -- the lock ------------------------------------------------------------------------------

    @contextmanager
    def locked(self, timeout_s: float = 14400.0, job: str = "") -> Iterator[DenseEntry]:
        """Hold the entry's lock for the block (see ``acquire``)."""
        self.acquire(timeout_s, job)
        try:
            yield self
        finally:
            self.release()

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

    # -- filling it ----------------------------------------------------------------------------

    def start(self, theta0: dict[str, torch.Tensor]) -> str:
        """Open the unfinished entry for training: ``"miss"``, or ``"resumed"`` when a killed
        job left one. theta0 is written once, by the job that starts the entry: a resumed job
        keeps it (its own theta0 is the same, as the key says)."""
        status = "resumed" if self.partial.is_dir() else "miss"
        self.partial.mkdir(parents=True, exist_ok=True)
        if self._load_partial(paths.THETA0) is None:
            save_state(self.partial / paths.THETA0, theta0)
        return status

    @property
    def theta_k_path(self) -> Path:
        """Where the training writes theta_k (``pruning.mask_callbacks.SnapshotAtEpoch``)."""
        return self.partial / paths.THETA_K

    def publish(self, metrics: dict, best: dict[str, torch.Tensor]) -> None:
        """Store the best weights (and theta_k = theta0 for rewind epoch 0), check every promised
        state file, write the metrics, and move the entry into place.

        An entry is published only when each of its files is present and loads as a state dict,
        so no later job can find a broken entry under this key.
        """
        save_state(
            self.partial / paths.BEST, {k: v.detach().cpu().clone() for k, v in best.items()}
        )
        if self.snapshot_epoch == 0:
            shutil.copy2(self.partial / paths.THETA0, self.theta_k_path)
        files = self.files
        for name in files:
            path = self.partial / name
            if not path.is_file():
                raise CacheError(f"dense cache entry {self.partial} lacks {name}; not published")
            load_state(path)
        shutil.rmtree(self.partial / paths.CHECKPOINTS, ignore_errors=True)
        write_json_atomic(self.partial / paths.ENTRY_METRICS, {**metrics, "files": files})
        if self.final.exists():  # a stale, unfinished copy
            shutil.rmtree(self.final)
        self.partial.rename(self.final)

    def _load_partial(self, name: str) -> dict[str, torch.Tensor] | None:
        """A state file of the unfinished entry, or None when it is missing or unreadable."""
        path = self.partial / name
        try:
            return load_state(path) if path.is_file() else None
        except CacheError:
            return None

    # -- reading it ----------------------------------------------------------------------------

    def load(self, name: str) -> dict[str, torch.Tensor]:
        """A state file of the finished entry (the copy ``check`` already read, if it did)."""
        state = self._checked.pop(name, None)
        return state if state is not None else load_state(self.final / name)

    def start_weights(self) -> dict[str, dict[str, torch.Tensor] | None]:
        """The states to rewind to: ``theta0``, and ``theta_k`` when the entry holds one."""
        theta_k = self.load(paths.THETA_K) if self.snapshot_epoch is not None else None
        return {"theta0": self.load(paths.THETA0), "theta_k": theta_k}

    def metrics(self) -> dict:
        """The finished entry's metrics (without its file list)."""
        metrics = json.loads((self.final / paths.ENTRY_METRICS).read_text())
        metrics.pop("files", None)
        return metrics

    def copy_logs(self, run_dir: Path) -> None:
        """Copy the dense curves, confusion matrix and per-image predictions into a job's run dir
        (an entry written by an older version may lack the predictions)."""
        for folder in (paths.stage_tensorboard, paths.stage_csv):
            source = folder(self.final, "dense")
            for file in sorted(source.rglob("*")) if source.is_dir() else ():
                # file by file, not copytree: a full disk then raises its own OSError
                if file.is_file():
                    dest = folder(run_dir, "dense") / file.relative_to(source)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, dest)
        for name in (paths.confusion_png, paths.predictions_csv):
            if name(self.final, "dense").is_file():
                shutil.copy2(name(self.final, "dense"), name(run_dir, "dense"))


def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict atomically."""
    save_torch(path, state)
