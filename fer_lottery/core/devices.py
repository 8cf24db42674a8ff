"""Where a job trains, decided once and recorded: the device kind, its name, the precision and
the CUDA capability.

``trainer.accelerator=auto`` trains on the GPU only when this torch build can run on it. A GPU
that is present but unusable (a driver too old for the wheel's CUDA, or a GPU older than the
wheel's architectures, such as a V100 or P100 below sm_75) gives one warning, and the job trains
on the CPU in fp32. ``results.json`` records what was used (``device/*``), so that the report
never mixes CPU and GPU jobs into one condition without saying so.
"""

from __future__ import annotations

import functools
import logging
import os
import platform

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

AUTO_GPU = ("auto", "gpu", "cuda")
# Set by the entry point in a sweep: the job's index (Hydra's hydra.job.num), which picks its GPU.
JOB_ENV = "FER_LOTTERY_JOB_NUM"


def gpu_for_job(job_num: int | None, visible: int) -> int:
    """The GPU a sweep job trains on: its index modulo the visible GPUs (0 outside a sweep, or
    with one GPU visible, as under submitit, which gives each job its own CUDA_VISIBLE_DEVICES)."""
    if job_num is None or visible <= 1:
        return 0
    return int(job_num) % visible


def assigned_gpu() -> int:
    """This job's GPU index among the visible ones (asks the driver only: no CUDA context)."""
    num = os.environ.get(JOB_ENV)
    return gpu_for_job(int(num) if num not in (None, "") else None, torch.cuda.device_count())


class _Job:
    """Whether this job has touched its GPU yet (a joblib worker runs several jobs)."""

    started = False


def new_job() -> None:
    """At a job's start: it has not used the GPU yet (no CUDA context is made here)."""
    _Job.started = False


def cuda_device() -> torch.device:
    """This job's GPU, when the job first needs it: made current, and its peak-memory counters
    reset, so that ``gpu/max_memory_*`` are this job's own. Nothing touches CUDA before: a job
    waiting on the dense-cache lock holds no context."""
    device = torch.device("cuda", assigned_gpu())
    if not _Job.started:
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
        _Job.started = True
    return device


def used_gpu() -> bool:
    """Whether this job has used its GPU (``cuda_device`` was called)."""
    return _Job.started


def compute_device(cfg: DictConfig) -> torch.device:
    """Where this job computes now: its GPU (made current), or the CPU."""
    return cuda_device() if resolved_device(cfg) == "cuda" else torch.device("cpu")


@functools.cache
def cuda_problem() -> str | None:
    """Why CUDA cannot be used here while a GPU seems present, or None (usable, or no GPU)."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        arch = f"sm_{major}{minor}"
        supported = torch.cuda.get_arch_list()
        if supported and arch not in supported and f"compute_{major}{minor}" not in supported:
            name = torch.cuda.get_device_name(0)
            return (
                f"{name} is {arch}, which this torch build does not support "
                f"({', '.join(supported)})"
            )
        return None
    if os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl"):
        return "a GPU is present (/dev/nvidia0) but torch cannot use it (a driver too old?)"
    return None


def cuda_usable() -> bool:
    return torch.cuda.is_available() and cuda_problem() is None


@functools.cache
def _warn_fallback(problem: str) -> None:
    log.warning(
        "trainer.accelerator=auto: %s; training on the CPU in fp32. results.json records it "
        "(device/accelerator: cpu). Use a torch wheel that supports this GPU, or set "
        "trainer.accelerator=cpu to silence this",
        problem,
    )


def resolved_device(cfg: DictConfig) -> str:
    """``cuda`` or ``cpu``: where ``trainer.accelerator`` puts the training."""
    accelerator = str(cfg.trainer.accelerator).lower()
    if accelerator not in AUTO_GPU:
        return "cpu"
    problem = cuda_problem()
    if accelerator == "auto" and problem is not None:
        _warn_fallback(problem)
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def lightning_accelerator(cfg: DictConfig) -> str:
    """The ``accelerator`` the Trainer gets: ``auto`` resolved, so that Lightning never picks an
    unusable GPU that ``resolved_device`` turned down."""
    accelerator = str(cfg.trainer.accelerator).lower()
    if accelerator == "auto":
        return "gpu" if resolved_device(cfg) == "cuda" else "cpu"
    return str(cfg.trainer.accelerator)


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_facts(cfg: DictConfig, precision: str) -> dict[str, object]:
    """The ``results.json`` keys of the device a job trained on."""
    device = resolved_device(cfg)
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability(0)
        name, capability = torch.cuda.get_device_name(0), f"{major}.{minor}"
    else:
        name, capability = _cpu_name(), None
    return {
        "device/accelerator": device,
        "device/name": name,
        "device/precision": str(precision),
        "device/cuda_capability": capability,
    }
