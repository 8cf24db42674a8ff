"""Shared parts of the benchmarks: alternating timed repeats, medians, one JSON line each.

Every benchmark runs ours and its baseline in one process, alternating (and swapping the order
on every other repeat, so neither always runs second), and quotes the medians.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable

import torch


def bench_device() -> torch.device:
    """The device both sides of a benchmark run on: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bench_precision() -> str:
    """The precision fer_lottery trains in on ``bench_device`` (bf16-mixed on a GPU)."""
    return "bf16-mixed" if bench_device().type == "cuda" else "32-true"


def device_string(device: torch.device | str | None = None) -> str:
    """Where a benchmark line ran: ``cuda (<GPU name>)``, or ``cpu (N threads, machine)``."""
    device = torch.device(device) if device is not None else bench_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (synchronising the GPU on both sides)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternate(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each function; they alternate, and so does their order.

    A function may return a float instead of None: that number is taken as its measurement
    (for benchmarks that time only part of what they run).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            value = fns[name]()
            elapsed = time.perf_counter() - start
            times[name].append(float(value) if isinstance(value, float) else elapsed)
    return {name: statistics.median(t) for name, t in times.items()}


def emit(
    name: str,
    ours: float,
    baseline: float,
    unit: str,
    digits: int = 3,
    device: torch.device | str | None = None,
    **extra,
) -> dict:
    """Print (and return) one benchmark line: name, ours, baseline, unit, ratio, device, extras.

    ``device``: where both sides ran (default ``bench_device``); a line whose work runs on the
    CPU on any machine (face detection baselines, say) names the CPU."""
    line = {
        "name": name,
        "ours": round(ours, digits),
        "baseline": round(baseline, digits),
        "unit": unit,
        "ratio": round(ours / baseline, 3) if baseline else None,
        "device": device_string(device),
        **extra,
    }
    print(json.dumps(line), flush=True)
    return line


def compose(*overrides: str):
    """The project config composed from ``conf/`` with overrides, as ``python -m fer_lottery``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fer_lottery.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose("config", list(overrides))


def quiet_lightning() -> None:
    """Silence Lightning's info lines and warnings, so that stdout carries the JSON lines only."""
    import logging
    import warnings

    for name in ("lightning", "pytorch_lightning", "lightning.pytorch", "fer_lottery"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
