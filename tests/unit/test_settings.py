"""One declaration per setting: a key declared once, on its schema field, reaches the dense cache
key, the relaunch check, the report's conditions, the range checks and the Trainer's arguments,
with nothing else edited; and the lists that used to disagree now agree, because they are one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from fer_lottery.config import config_changes, flatten, resolved, settings, validate
from fer_lottery.config.declaration import NOTHING, between, setting, when
from fer_lottery.config.schema import Config, TrainerConfig
from fer_lottery.core.errors import ConfigError
from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import condition_keys
from fer_lottery.store.dense_cache import dense_key


@dataclass
class _Trainer(TrainerConfig):
    # Changes the dense stage (the trainer section's effect), with a range.
    warmup_share: float = setting(0.0, check=between(0, 1, "a fraction of the epochs"))
    # Changes no number.
    report_every: int = setting(1, changes=NOTHING)
    # Read only with a step schedule.
    step_warmup: int = setting(0, applies=when("optim.scheduler", "step"))
    # fer_lottery's own: never handed to Lightning's Trainer.
    own_flag: bool = setting(False, changes=NOTHING, lightning=False)


@dataclass
class _Config(Config):
    trainer: _Trainer = MISSING


@pytest.fixture
def extended(monkeypatch):
    """The schema with four keys added to ``trainer`` in one place: their fields above."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=_Config)
    monkeypatch.setattr(settings, "SCHEMA", _Config)
    yield
    store.store(name="config_schema", node=Config)


def _key(cfg) -> str:
    return dense_key(cfg, "data", device="cpu", precision="32-true", snapshot_epoch=None)


def _conditions(*cfgs) -> list[str]:
    jobs = [Job(Path(f"job{i}"), {}, flatten(resolved(c))) for i, c in enumerate(cfgs)]
    return condition_keys(jobs)


def test_a_key_declared_once_reaches_cache_key_relaunch_check_conditions_and_ranges(
    extended, compose_cfg
):
    base = compose_cfg("data=synthetic")
    warm = compose_cfg("data=synthetic", "trainer.warmup_share=0.5")
    # The dense cache key, the relaunch check and the report's conditions all see it.
    assert _key(base) != _key(warm)
    assert config_changes(resolved(base), warm) == ["trainer.warmup_share: 0.0 -> 0.5"]
    assert _conditions(base, warm) == ["trainer.warmup_share"]
    # Its range is checked before any work, in one line naming the key and the range.
    validate(warm)
    with pytest.raises(ConfigError, match=r"trainer\.warmup_share=1\.5 must be in \[0, 1\]"):
        validate(compose_cfg("data=synthetic", "trainer.warmup_share=1.5"))

    # Declared to change no number: none of the three sees it.
    quiet = compose_cfg("data=synthetic", "trainer.report_every=5")
    assert _key(base) == _key(quiet)
    assert config_changes(resolved(base), quiet) == []
    assert _conditions(base, quiet) == []

    # Declared to apply only with a step schedule: it splits nothing without one, and does with.
    assert _key(base) == _key(compose_cfg("data=synthetic", "trainer.step_warmup=3"))
    step = ("data=synthetic", "optim.scheduler=step")
    stepped = compose_cfg(*step, "trainer.step_warmup=3")
    assert _key(compose_cfg(*step)) != _key(stepped)
    assert _conditions(compose_cfg(*step), stepped) == ["trainer.step_warmup"]


def test_a_key_lightning_does_not_take_never_reaches_the_trainer(extended, compose_cfg):
    from fer_lottery.training.stage import trainer_kwargs

    cfg = compose_cfg("debug=tiny", "trainer.own_flag=true", "trainer.warmup_share=0.5")
    assert "own_flag" in settings.trainer_own_keys()
    kwargs = trainer_kwargs(cfg)
    assert "own_flag" not in kwargs and "checkpoint_every_s" not in kwargs
    assert "max_epochs" in kwargs


@pytest.mark.parametrize(
    "override",
    [
        "trainer.devices=1",  # which single device: the report used to split on it
        "trainer.num_sanity_val_steps=2",  # the report used to split on it
        "data.detect_batch_size=8",  # the report used to split on it
        "study=null",
    ],
)
def test_keys_that_change_no_number_split_nothing_anywhere(compose_cfg, override):
    base = compose_cfg("data=synthetic", "prune.ratio=0.5")
    other = compose_cfg("data=synthetic", "prune.ratio=0.5", override)
    assert config_changes(resolved(base), other) == []
    assert _key(base) == _key(other)
    key = override.split("=")[0]
    assert settings.no_effect(key)


@pytest.mark.parametrize(
    "overrides",
    [
        ("prune.method=magnitude", "prune.distinctiveness.angle=30"),  # distinctiveness' option
        ("retrain.rewind=none", "retrain.rewind_epoch=3"),  # read only with rewind=epoch
        ("prune.schedule=oneshot", "prune.gradual.start=2"),  # read only when gradual
        ("optim.scheduler=none", "retrain.lr=final"),  # a constant rate: the same run
        # A gradual stage has no retraining: the false +0.00 condition of an earlier round.
        ("optim.scheduler=cosine", "prune.schedule=gradual", "retrain.lr=final"),
        (
            "prune.method=distinctiveness",
            "prune.distinctiveness.variant=paper_a",
            "prune.distinctiveness.normalize=center",
        ),
        ("optim.name=adam", "optim.momentum=0.5"),  # SGD's
        ("data=synthetic", "data.crop=none"),  # SFEW's face crops
        ("data.split=[0.7,0.15,0.15]", "data.official_val_fraction=0.3"),
    ],
)
def test_a_key_that_does_not_apply_splits_neither_the_cache_nor_the_conditions(
    compose_cfg, overrides
):
    *setup, change = overrides
    base = compose_cfg("data=synthetic", "prune.ratio=0.5", *setup)
    other = compose_cfg("data=synthetic", "prune.ratio=0.5", *setup, change)
    assert _key(base) == _key(other)
    assert config_changes(resolved(base), other) == []
    assert _conditions(base, other) == []


def test_a_key_every_criterion_reads_applies_to_each(compose_cfg):
    """prune.include names the weights the sparsity is measured over, for distinctiveness too."""
    flat = flatten(resolved(compose_cfg("data=synthetic", "prune.method=distinctiveness")))
    assert settings.applies("prune.include", flat)
    assert not settings.applies("prune.scope", flat)  # magnitude's, gradient's, random's


def test_a_dense_job_relaunched_to_keep_theta_k_is_another_job(compose_cfg):
    """A dense job writes theta_k when retrain.rewind=epoch, though no prune.* key applies to it."""
    base = compose_cfg("data=synthetic")
    other = compose_cfg("data=synthetic", "retrain.rewind=epoch", "retrain.rewind_epoch=2")
    assert _conditions(base, other) == []  # the same dense numbers
    (change,) = config_changes(resolved(base), other)
    assert change.startswith("theta_k epoch") and change.endswith("None -> 2")


def test_a_dense_job_is_split_by_no_prune_key(compose_cfg):
    base = compose_cfg("data=synthetic")
    other = compose_cfg("data=synthetic", "prune.distinctiveness.angle=30", "prune.scope=layer")
    assert _conditions(base, other) == [] and config_changes(resolved(base), other) == []


def test_every_declared_range_names_its_key(compose_cfg):
    """Each range check comes from the declaration: a value just outside names the key."""
    outside = {
        "data.batch_size": 0,
        "data.augment.hflip": 1.5,
        "optim.lr": 0,
        "optim.step_gamma": 0,
        "trainer.max_epochs": 0,
        "trainer.checkpoint_every_s": -1,
        "prune.ratio": 1,
        "prune.distinctiveness.angle": 91,
        "prune.distinctiveness.norm_std": -1,
        "threads": 0,
        "cache_lock_timeout_s": 0,
    }
    declared = {k for k, s in settings.table().items() if s.check is not None}
    assert set(outside) <= declared
    for key, value in outside.items():
        with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}={value}"):
            validate(compose_cfg("data=synthetic", f"{key}={value}"))
