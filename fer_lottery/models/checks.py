"""The limits that depend on the backbone, checked before any work (``check_model``), each in
one line naming the key and the fix: the name, the weights, ``model.frozen_layers``,
``data.image_size``, batches of one while BatchNorm trains, the paper rules' backbones, and
the globs that must match a unit layer (``prune.include`` with ``prune.granularity=unit``,
``prune.distinctiveness.layers`` with distinctiveness).

``config.checks.validate`` checks what the config alone decides, without torch; this module
builds the backbone on the meta device (``backbone.describe``: no weights, no memory).
"""

from __future__ import annotations

from fnmatch import fnmatch

import torch
from omegaconf import DictConfig

from fer_lottery.config import run_prunes
from fer_lottery.config.schema import Variant, enum_value
from fer_lottery.core.errors import ConfigError
from fer_lottery.models.backbone import describe, spec
from fer_lottery.models.weights import is_file_like, timm_cfg, torchvision_enum

# The paper rules' published code ran on these backbones only.
PAPER_BACKBONES = ("resnet18", "alexnet")


def batchnorm_trains(name: str, frozen_layers: int) -> bool:
    """Whether a BatchNorm layer of the model trains (is not frozen), so batches of one fail."""
    return frozen_layers < describe(name).batchnorm_groups


def check_model(cfg: DictConfig) -> None:
    """Refuse a config that this backbone cannot run, in one line."""
    data, model, prune = cfg.data, cfg.model, cfg.prune
    name = str(model.name)
    s = spec(name)
    weights = model.weights
    if weights is not None and not is_file_like(str(weights)):
        (timm_cfg if s.is_timm else torchvision_enum)(s, str(weights))
    d = describe(name, model.num_classes)
    n_layers = len(d.groups)
    labels = ", ".join(label for label, _ in d.groups)
    if not 0 <= model.frozen_layers < n_layers:
        raise ConfigError(
            f"model.frozen_layers={model.frozen_layers} is out of range for {name}, which has "
            f"{n_layers} layer groups ({labels}): use 0..{n_layers - 1} (the last one, with the "
            "new head, must train; python -m fer_lottery.models NAME lists them)"
        )
    if data.image_size < d.min_image_size:
        raise ConfigError(
            f"data.image_size={data.image_size} is too small for {name}: use at least "
            f"{d.min_image_size}"
        )
    if data.batch_size < 2 and batchnorm_trains(name, model.frozen_layers):
        raise ConfigError(
            f"data.batch_size={data.batch_size}: {name}'s BatchNorm layers train, and they need "
            f"at least 2 images per batch: use data.batch_size=2 or more (or freeze them: "
            f"model.frozen_layers={d.batchnorm_groups})"
        )
    variant = enum_value(prune.distinctiveness.variant)
    if (
        enum_value(prune.method) == "distinctiveness"
        and variant != Variant.honest.value
        and name not in PAPER_BACKBONES
    ):
        raise ConfigError(
            f"prune.distinctiveness.variant={variant} reproduces what that paper's code did on "
            f"{' and '.join(PAPER_BACKBONES)}, not on {name}: use "
            "prune.distinctiveness.variant=honest"
        )
    _check_unit_globs(cfg, name)
    _check_include(cfg, name)


def _check_include(cfg: DictConfig, name: str) -> None:
    """A pruning job's ``prune.include`` must match a conv or linear layer of the backbone: the
    weights it may prune and that its sparsity is measured over. Matching none, a job would
    prune nothing and record sparsity 0, or fail after the dense training."""
    if not run_prunes(cfg):
        return
    include = list(cfg.prune.include)
    layers = describe(name, cfg.model.num_classes).layers
    if not any(fnmatch(layer, p) for layer in layers for p in include):
        shown = ", ".join(layers[:6]) + (f", ... ({len(layers)} in all)" if len(layers) > 6 else "")
        raise ConfigError(
            f"prune.include={include} matches none of the conv and linear layers of {name} "
            f"({shown}): widen it, e.g. prune.include=['*'] (python -m fer_lottery.models "
            f"{name} lists them)"
        )


def _check_unit_globs(cfg: DictConfig, name: str) -> None:
    """Unit pruning and distinctiveness need unit layers that their globs match: found on a
    random-init model (``models.units``; the job finds the same ones from the cache)."""
    prune = cfg.prune
    method, variant = enum_value(prune.method), enum_value(prune.distinctiveness.variant)
    unit = enum_value(prune.get("granularity", "weight")) == "unit" and method != "distinctiveness"
    distinct = method == "distinctiveness" and variant != Variant.paper_a.value
    if not run_prunes(cfg) or not (unit or distinct):
        return
    from fer_lottery.models.build import build_model
    from fer_lottery.models.units import prunable_units

    with torch.random.fork_rng():  # every draw of the job is seeded where it happens anyway
        units = [
            u.name for u in prunable_units(build_model(name, None, cfg.model.num_classes), name)
        ]
    if unit:
        include = list(prune.include)
        if not any(fnmatch(u, p) for u in units for p in include):
            raise ConfigError(
                f"prune.include={include} matches none of the unit layers of {name} "
                f"({', '.join(units) or 'none'}): widen it (python -m fer_lottery.models {name})"
            )
    for pattern in list(prune.distinctiveness.layers or []) if distinct else []:
        if not any(fnmatch(u, pattern) for u in units):
            raise ConfigError(
                f"prune.distinctiveness.layers: {pattern!r} matches no unit layer of {name}; "
                f"choose from {', '.join(units) or 'none'}"
            )
