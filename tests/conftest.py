"""Shared fixtures: a config composed from conf/, and small SFEW-layout folders of real photos.

Under pytest-xdist each worker runs on its own share of the CPUs (``pytest_configure``), as a
SLURM allocation would give it: a job's default thread count (``threads=null``: every CPU the
process may use) then matches the CPUs it really has, instead of two workers each running one
torch thread per core of the machine and spinning against each other.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from fer_lottery.config import CONF_DIR, register_configs
from fer_lottery.core.classes import CLASSES
from tests.helpers import TINY_SYNTHETIC

register_configs()


def pytest_configure(config):
    """Give xdist worker i of n the CPUs i, i+n, ... of the ones this process may use (a worker
    beyond the CPU count shares). Jobs, subprocesses included, inherit the share."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    index = int(worker[2:])
    share = cpus[index % len(cpus) :: count] or cpus
    os.sched_setaffinity(0, share)
    import torch

    torch.set_num_threads(len(share))


@pytest.fixture(autouse=True)
def _signal_handlers_put_back():
    """What a test leaves in this worker's signal handlers does not reach the next test: a job
    run in-process that Lightning saw interrupted sets SIGINT to SIG_IGN for good, and every
    ``python -m fer_lottery`` started from this worker afterwards would inherit it, so Ctrl-C
    would not reach it."""
    import signal

    kept = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    saved = {s: signal.getsignal(s) for s in kept}
    yield
    for s, handler in saved.items():
        if signal.getsignal(s) is not handler:
            signal.signal(s, handler)


@pytest.fixture
def compose_cfg():
    """Compose conf/config.yaml with overrides, as `python -m fer_lottery` would."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


def astronaut() -> Image.Image:
    """A real photo with one clear face (shipped inside scikit-image)."""
    from skimage import data

    return Image.fromarray(data.astronaut())


def movie_frame(rng: np.random.Generator, with_face: bool, size=(720, 576)) -> Image.Image:
    """A 720x576 RGB frame: a textured background with the astronaut photo pasted in, or not."""
    background = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    frame = Image.fromarray(background).resize(size, Image.BILINEAR)
    if with_face:
        side = int(rng.integers(300, 420))
        face = astronaut().resize((side, side))
        x = int(rng.integers(0, size[0] - side))
        y = int(rng.integers(0, size[1] - side))
        frame.paste(face, (x, y))
    return frame


def write_sfew(
    root: Path, per_class: int = 3, no_face_every: int = 0, layout: str = "flat", seed: int = 0
) -> Path:
    """Write an SFEW-layout folder of 720x576 PNG frames. ``layout``: flat or sfew2."""
    rng = np.random.default_rng(seed)
    count = 0
    for i, name in enumerate(CLASSES):
        # Vary case, as real copies do.
        folder_name = name.lower() if i % 2 else name
        folders = (
            [root / folder_name]
            if layout == "flat"
            else [root / "Train" / folder_name, root / "Val" / folder_name]
        )
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                count += 1
                face = not (no_face_every and count % no_face_every == 0)
                movie_frame(rng, face).save(folder / f"Movie_{i:03d}_{j:05d}.png")
    return root


@pytest.fixture(scope="session")
def sfew_frames(tmp_path_factory) -> Path:
    """Seven class folders with three 720x576 frames each; every fifth frame has no face.

    Written once per session; tests copy it before changing it.
    """
    return write_sfew(tmp_path_factory.mktemp("frames") / "SFEW", per_class=3, no_face_every=5)


@pytest.fixture(scope="session")
def crop_cache(tmp_path_factory) -> Path:
    """A face-crop cache shared by the tests that only need crops, not a fresh detection."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def sfew_root(tmp_path, sfew_frames) -> Path:
    """A private copy of the session's SFEW frames, free to modify."""
    return Path(shutil.copytree(sfew_frames, tmp_path / "SFEW"))


@pytest.fixture
def run_job(compose_cfg, tmp_path):
    """Run one experiment in-process (the real pipeline and Trainer) in ``tmp_path/<name>``, at
    ``TINY_SYNTHETIC`` (tests/helpers.py) plus ``overrides``.

    Returns (results, run_dir). The dense cache lives in ``tmp_path/cache`` unless ``cache=``
    names another folder.
    """

    def _run(name: str, *overrides: str, cache: Path | None = None):
        from fer_lottery.experiment.runner import run_experiment

        cfg = compose_cfg(*TINY_SYNTHETIC, f"cache_dir={cache or tmp_path / 'cache'}", *overrides)
        run_dir = tmp_path / name
        return run_experiment(cfg, run_dir), run_dir

    return _run
