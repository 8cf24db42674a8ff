"""What a user can set: the typed schema, the range checks, and the sweep naming.

- ``schema``: every key, type, default and choice list, once (registered as ``config_schema``);
- ``checks``: ``validate``, the ranges and combinations that types cannot express;
- ``sweeps``: sweep job folder names (a Hydra resolver) and the swept keys of a job;
- ``declaration`` and ``settings``: what each key changes, when it applies and its range,
  declared on its schema field, and what follows from that.

``register_configs`` makes Hydra check ``conf/`` against the schema; ``prunes`` answers "does
this run prune?" for every caller.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from fer_lottery.config import settings
from fer_lottery.config.checks import check_angle, check_norm_std, validate
from fer_lottery.config.renamed import upgrade
from fer_lottery.config.schema import Config, choices, enum_value
from fer_lottery.config.sweeps import swept_dirname
from fer_lottery.core.criteria import prunes

__all__ = [
    "CONF_DIR",
    "Config",
    "check_angle",
    "check_norm_std",
    "choices",
    "config_changes",
    "flatten",
    "schema_defaults",
    "resolved",
    "enum_value",
    "prune_seed",
    "prunes",
    "register_configs",
    "run_prunes",
    "validate",
]

# The Hydra config tree (conf/ beside the package; the package is installed editable).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def register_configs() -> None:
    """Register the schema so that YAML files in conf/ are checked against it, the
    ``swept_dirname`` resolver that names sweep job folders, ``min`` and ``slurm_accelerator``."""
    ConfigStore.instance().store(name="config_schema", node=Config)
    OmegaConf.register_new_resolver("swept_dirname", swept_dirname, replace=True)
    # ${min:4,${trainer.max_epochs}}: a preset's epoch count that debug=tiny's shrinks too.
    OmegaConf.register_new_resolver("min", lambda *values: min(values), replace=True)
    OmegaConf.register_new_resolver("slurm_accelerator", slurm_accelerator, replace=True)


def slurm_accelerator(gpus_per_node: object) -> str:
    """What the SLURM preset exports as FER_LOTTERY_ACCELERATOR: ``gpu`` for jobs that ask for
    GPUs (``hydra.launcher.gpus_per_node``), ``auto`` for jobs that ask for none (a CPU
    partition), so that asking for no GPU never makes a job demand one."""
    return "gpu" if gpus_per_node not in (None, "") and int(gpus_per_node) > 0 else "auto"


def flatten(node: dict, prefix: str = "") -> dict[str, object]:
    """Nested dict -> ``{"data.split_seed": 1, ...}``; lists become JSON strings (hashable)."""
    out: dict[str, object] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data, as ``results.json`` records it."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


@functools.cache
def schema_defaults() -> dict[str, object]:
    """Every key of the schema with its default, flattened as ``flatten`` does (one dict, shared:
    do not change it)."""
    hints = typing.get_type_hints(Config)
    out: dict[str, object] = {}
    for field in dataclasses.fields(Config):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            node = OmegaConf.to_container(OmegaConf.structured(kind), enum_to_str=True)
            out.update(flatten(node, f"{field.name}."))
        elif field.default is not dataclasses.MISSING:
            out.update(flatten({field.name: getattr(field.default, "value", field.default)}))
    return out


def config_changes(recorded: dict, cfg: DictConfig) -> list[str]:
    """``key: recorded -> now`` for each setting that differs between a recorded config (from a
    results.json or a checkpoint) and ``cfg``, among the keys that change a number and apply to
    the job (``config.settings``): a key that applies to neither is no change, whatever its
    values.

    A recorded config from before a key moved (``config.renamed``) is read with the key at its
    new place. A key the recorded config lacks, set now to its schema default, is no change: an
    older version wrote that config before the key existed, and a new key's default always does what
    the versions before it did (``stability.enabled=false``, say)."""
    old_flat, new_flat = flatten(upgrade(recorded)), flatten(resolved(cfg))
    old, new = settings.effective(old_flat), settings.effective(new_flat)
    defaults = schema_defaults()
    changes = [
        f"{k}: {old.get(k)} -> {new.get(k)}"
        for k in dict.fromkeys([*new, *old])
        if old.get(k) != new.get(k)
        and not (k not in old_flat and k in defaults and new_flat[k] == defaults[k])
    ]
    # What the dense stage writes besides its numbers: theta_k, for every job of a sweep.
    k_old, k_new = settings.snapshot_epoch(old_flat), settings.snapshot_epoch(new_flat)
    if k_old != k_new and not any(c.startswith("retrain.rewind") for c in changes):
        changes.append(
            f"theta_k epoch (retrain.rewind=epoch, retrain.rewind_epoch): {k_old} -> {k_new}"
        )
    return changes


def run_prunes(cfg) -> bool:
    """Whether the job ``cfg`` describes prunes (``prunes`` of its method and ratio)."""
    return prunes(cfg.prune.method, cfg.prune.ratio)


def prune_seed(cfg) -> int:
    """The seed of random pruning and of the random re-initialisation: ``prune.seed``, or the
    run's ``seed`` when it is null."""
    return cfg.seed if cfg.prune.seed is None else cfg.prune.seed
