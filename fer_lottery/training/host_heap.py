"""The training process's two heaps: glibc's, which should keep freed memory, and Python's,
whose cycle collector should leave the objects made before training alone.

Both are per-process costs that Lightning's epoch loop makes visible on a CPU, where a stage's
epoch is only a few hundred milliseconds at small image sizes (``benchmarks.bench_jobs``,
``epoch_overhead_resnet18``).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Freed memory at the top of the heap up to this size stays with the process.
TRIM_THRESHOLD = 1 << 30
# Blocks up to this size come from the heap, not from mmap; glibc's maximum on 64-bit systems.
MMAP_THRESHOLD = 32 << 20

# A user who tunes the allocator (or swaps it) keeps their choice.
USER_ALLOCATOR_ENV = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
)

_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to keep the memory a training step frees, for the next step (once per process).

    By default glibc hands large freed blocks back to the kernel (``munmap``, heap trimming),
    and the next step's tensors of the same sizes fault their pages in again: about 15,000
    page faults per epoch of a ResNet-18 stage at 32 px, a quarter of its CPU time. With a
    fixed mmap threshold of 32 MiB and a trim threshold of 1 GiB, the freed blocks are reused.
    The process keeps its peak heap (which every step reaches again anyway). Nothing happens on
    other C libraries, or when the environment already tunes or replaces the allocator
    (``MALLOC_*_``, ``GLIBC_TUNABLES``, ``LD_PRELOAD``). Returns whether glibc was tuned.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    chosen = [name for name in USER_ALLOCATOR_ENV if os.environ.get(name)]
    if chosen:
        log.debug("allocator left as the environment sets it (%s)", ", ".join(chosen))
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _tuned


@contextmanager
def setup_heap_frozen() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off the objects that exist before training.

    A job holds about half a million long-lived objects (Hydra, torch, Lightning, the data)
    before its first epoch, and Lightning's loop allocates enough per epoch to trigger a full
    collection now and then, which walks them all: about 0.3 s each time on a CPU, 30 ms per
    epoch over a 10-epoch stage. ``gc.freeze`` moves them to a generation that collections skip;
    ``gc.unfreeze`` puts them back afterwards, so whatever became garbage meanwhile is still
    collected. Objects made during training are collected as usual.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
