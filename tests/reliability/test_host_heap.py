"""The training process's heaps (#16 point 6, epoch overhead): glibc keeps freed memory unless
the user chose an allocator, and a real stage's fit runs with the setup objects frozen out of
Python's cycle collector, and unfreezes them afterwards."""

from __future__ import annotations

import gc
import platform
from pathlib import Path

import pytest
import pytorch_lightning as pl

from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.models import build_model
from fer_lottery.training import host_heap
from fer_lottery.training.classifier import FERClassifier
from fer_lottery.training.stage import Stage, train_stage
from tests.helpers import TINY_SYNTHETIC

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def fresh_tuning(monkeypatch):
    for name in host_heap.USER_ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(host_heap, "_tuned", None)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_glibc_is_tuned_once_per_process(fresh_tuning, monkeypatch):
    assert host_heap.keep_freed_memory() is True
    # The answer is kept: a second call does not ask glibc again (nor the environment).
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
    assert host_heap.keep_freed_memory() is True


@pytest.mark.parametrize("name", ["MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"])
def test_an_allocator_the_user_chose_is_left_alone(fresh_tuning, monkeypatch, name):
    monkeypatch.setenv(name, "glibc.malloc.trim_threshold=1" if name == "GLIBC_TUNABLES" else "1")
    assert host_heap.keep_freed_memory() is False


class FreezeProbe(pl.Callback):
    """What the collector saw at each epoch of a real fit."""

    def __init__(self):
        self.frozen: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.frozen.append(gc.get_freeze_count())


def test_a_real_fit_runs_with_the_setup_heap_frozen(compose_cfg, tmp_path: Path):
    cfg = compose_cfg(*TINY_SYNTHETIC, "trainer.max_epochs=2")
    dm = FaceDataModule(cfg.data, None, seed=0)
    dm.setup()
    module = FERClassifier(build_model("resnet18", None, 7), cfg.optim, dm.class_names)
    probe = FreezeProbe()
    assert gc.get_freeze_count() == 0
    train_stage(cfg, dm, module, tmp_path, Stage("dense", callbacks=[probe]))
    # Every object alive before fit (the model, the data, the libraries) was frozen...
    assert len(probe.frozen) == 2 and min(probe.frozen) > 10_000, probe.frozen
    # ...and is back under the collector afterwards, so garbage made meanwhile is collected.
    assert gc.get_freeze_count() == 0
