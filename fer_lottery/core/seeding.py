"""Seeds and thread counts: what makes a job's numbers independent of cache state and launcher.

Every point that draws random numbers is seeded on its own, from the job's ``seed`` and the
point's name (``model``, ``dense``, ``retrain``, ...), right before it draws. So what a stage
computes does not depend on what ran before it in the process: a face detector that was or was
not built, a dense stage that was trained here or loaded from the cache, an earlier job in the
same joblib worker.

CPU float results also depend on the number of torch threads (a reduction split over two
threads rounds differently than over one), and launchers differ in what they give a worker
(joblib's workers are limited to fewer threads). So the count is a setting of the job
(``threads``; null: every CPU this process may use), set once before any work and recorded in
``results.json`` as ``torch/threads``.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derived_seed(seed: int, what: str) -> int:
    """A 31-bit seed for one named point of a job, fixed by the job's seed and the name."""
    digest = hashlib.sha256(f"{seed}/{what}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


def seed_all(seed: int, what: str) -> int:
    """Seed python, numpy and torch (CPU and CUDA) for ``what``; returns the seed used.

    What Lightning's ``seed_everything(value, workers=True)`` does, with its environment
    variables, so that DataLoader workers are seeded from it too; but where no GPU is visible
    (or CUDA already runs) without ``torch.manual_seed``'s lazy seeding of CUDA, XPU and MTIA,
    which records a stack trace for each of them on every call: about 1.5 ms of a CPU epoch,
    since every epoch reseeds. The generators get the same seeds either way.
    """
    value = derived_seed(seed, what)
    os.environ["PL_GLOBAL_SEED"] = str(value)
    os.environ["PL_SEED_WORKERS"] = "1"
    random.seed(value)
    np.random.seed(value)
    if torch.cuda.is_available() and not torch.cuda.is_initialized():
        torch.manual_seed(value)  # CUDA is seeded when it starts
    else:
        torch.default_generator.manual_seed(value)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(value)
    return value


@contextmanager
def seeded(seed: int, what: str) -> Iterator[None]:
    """Run a block with every RNG seeded for ``what``, then restore the RNG states as they were."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        value = derived_seed(seed, what)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | None) -> int:
    """The torch thread count a job runs with: ``threads``, or every available CPU."""
    return int(threads) if threads else available_cpus()


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count for this job; returns the count."""
    n = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
