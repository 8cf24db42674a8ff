"""Range checks: what the schema's types cannot express (ranges, sums, settings that make no
sense together). ``validate`` runs before any work, and each error names the key and the fix in
one line. The limits that depend on the backbone are ``models.checks``, which builds it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from omegaconf import DictConfig, OmegaConf

from fer_lottery.config import settings
from fer_lottery.config.schema import OFFICIAL_SPLIT, enum_value
from fer_lottery.core.criteria import prunes
from fer_lottery.core.errors import ConfigError

# Keys open on purpose: any Lightning Trainer argument, and a preset's published numbers.
OPEN_KEYS = ("trainer.extra", "published", "study")


def unknown_keys(node: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """Keys of ``node`` that the schema dataclass ``schema`` does not declare (recursively).

    ``+key=value`` on the command line adds a key even to a typed node; this finds it.
    """
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    found = []
    for key in node:
        name = f"{prefix}{key}"
        if name in OPEN_KEYS or name == "hydra":  # Hydra's own node, when composed with it
            continue
        if key not in fields:
            found.append(name)
        elif dataclasses.is_dataclass(hints[key]) and isinstance(node[key], DictConfig):
            found += unknown_keys(node[key], hints[key], name + ".")
    return found


def check_tracker_options(overrides: list[str]) -> str | None:
    """One line for an override of ``logger.mlflow.*`` or ``logger.wandb.*`` when ``logger=``
    does not add that tracker (Hydra would print a traceback: the group is not in the config),
    or None."""
    chosen = "tensorboard,csv"
    for override in overrides:
        if override.lstrip("+").startswith("logger="):
            chosen = override.split("=", 1)[1]
    names = {n.strip() for n in chosen.strip("[]").split(",")}
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "logger" and parts[1] not in names:
            tracker = parts[1]
            return (
                f"{key} is set, but logger={chosen} does not add {tracker}: add it, e.g. "
                f"logger=[tensorboard,csv,{tracker}], or drop {key}"
            )
    return None


def check_known_keys(cfg: DictConfig) -> None:
    """A key that no part of fer_lottery reads (a typo added with ``+``) is refused in one line."""
    unknown = unknown_keys(cfg, settings.SCHEMA)
    if unknown:
        key = unknown[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        siblings = [k for k in node if f"{parent}.{k}".lstrip(".") != key]
        close = difflib.get_close_matches(leaf, siblings, n=1)
        hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
        others = (
            f" (and {len(unknown) - 1} more: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        )
        raise ConfigError(
            f"{key} is not a fer_lottery setting{hint}{others}: remove it, or fix its name; "
            f"only {' and '.join(k + '.*' if k == 'trainer.extra' else k for k in OPEN_KEYS)} "
            "take keys of your own (+trainer.extra.NAME=VALUE for other Trainer arguments)"
        )


def flatten_config(cfg: DictConfig) -> dict[str, object]:
    """The config's leaves by dotted key, plain values (lists kept as lists); Hydra's own node,
    when composed with it, is left out."""
    out: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    for key in cfg:
        if key != "hydra":
            node = cfg[key]
            plain = (
                OmegaConf.to_container(node, resolve=True, enum_to_str=True)
                if OmegaConf.is_config(node)
                else node
            )
            walk(getattr(plain, "value", plain), f"{key}.")
    return out


def validate(cfg: DictConfig) -> None:
    """Fail before any work on values that are out of range, naming the key and the fix."""
    check_known_keys(cfg)
    # Each key's own range, as its schema field declares it (config.settings).
    problems = settings.range_problems(flatten_config(cfg))
    if problems:
        raise ConfigError(problems[0])
    data, trainer = cfg.data, cfg.trainer
    _validate_split(data)
    folds, fold = data.get("folds"), data.get("fold")
    if folds is not None and folds < 2:
        raise ConfigError(
            f"data.folds={folds}: k-fold cross-validation needs at least 2 folds, "
            "e.g. data.folds=5; or data.folds=null for one train/val/test split"
        )
    if fold is not None and folds is None:
        raise ConfigError(
            f"data.fold={fold} is set but data.folds is null: set data.folds=k as well "
            "(e.g. data.folds=5 data.fold=0), or data.fold=null"
        )
    if fold is not None and not 0 <= fold < folds:
        raise ConfigError(
            f"data.fold={fold} is out of range for data.folds={folds}: use 0..{folds - 1}, "
            "or data.fold=null to run every fold"
        )
    aug = data.augment
    if not 0 < aug.crop_area_min <= aug.crop_area_max <= 1:
        raise ConfigError(
            f"data.augment.crop_area_min={aug.crop_area_min}, crop_area_max={aug.crop_area_max}: "
            "need 0 < min <= max <= 1"
        )
    _validate_devices(trainer)
    _validate_prune(cfg, trainer.max_epochs)


SPLIT_FIX = (
    "use three fractions for train, val and test, e.g. data.split=[0.7,0.15,0.15] (paper A) or "
    "[0.6,0.2,0.2] (paper B), or data.split=official (SFEW 2.0: train on Train, test on Val)"
)


def _validate_split(data: DictConfig) -> None:
    """``data.split``: three fractions in (0, 1) that sum to 1, or ``official`` (SFEW 2.0's
    Train/Val protocol, which needs SFEW and no k-fold)."""
    split = data.split
    if isinstance(split, str):
        if split != OFFICIAL_SPLIT:
            raise ConfigError(f"data.split={split} is not a split: {SPLIT_FIX}")
        if enum_value(data.name) == "synthetic":
            raise ConfigError(
                "data.split=official is SFEW 2.0's protocol (train on Train, test on Val), and "
                "data=synthetic has no Train and Val folders: use data=sfew with data.root at a "
                "copy of SFEW 2.0, or a fraction split such as data.split=[0.7,0.15,0.15]"
            )
        if data.get("folds") is not None:
            raise ConfigError(
                f"data.split=official with data.folds={data.folds}: the official protocol tests "
                "on SFEW 2.0's Val, so there are no folds to test on: set data.folds=null, or a "
                "fraction split (data.split=[0.7,0.15,0.15]) for k-fold cross-validation"
            )
        return
    numbers = OmegaConf.is_list(split) or isinstance(split, (list, tuple))
    values = list(split) if numbers else []
    if not (numbers and len(values) == 3) or not all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1 for f in values
    ):
        shown = values if numbers else split
        raise ConfigError(f"data.split={shown} must be three fractions in (0, 1): {SPLIT_FIX}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(
            f"data.split={values} sums to {sum(values):.4g}, not 1; "
            "e.g. data.split=[0.7,0.15,0.15] (paper A) or [0.6,0.2,0.2] (paper B)"
        )


def device_count(devices: object) -> int | None:
    """How many devices ``trainer.devices`` asks for: 1 for ``1``, ``"1"``, ``[0]`` or ``"0,"``;
    None for what only the machine decides (``auto``, ``-1``)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return None if devices < 0 else devices
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip().lower()
    if "," in text:  # "0,1": device ids
        return len([part for part in text.split(",") if part.strip()])
    if text.lstrip("-").isdigit():
        return None if int(text) < 0 else int(text)
    return None


def _validate_devices(trainer: DictConfig) -> None:
    """One job, one device: more would start DDP, each rank re-running the whole job."""
    count = device_count(trainer.devices)
    nodes = (trainer.get("extra") or {}).get("num_nodes", 1)
    if count == 1 and nodes in (1, None):
        return
    asked = f"trainer.devices={trainer.devices}" if count != 1 else f"num_nodes={nodes}"
    raise ConfigError(
        f"{asked} would run this job on several devices (DDP), and a 675-image job gains nothing "
        "from that (every rank would also rerun the dense stage and wait on its cache lock): use "
        "trainer.devices=1, and spread a sweep over the GPUs by packing one job per GPU "
        "(README: Where the jobs run)"
    )


def _validate_prune(cfg: DictConfig, max_epochs: int) -> None:
    """The combinations of ``prune``, ``retrain`` and ``stability`` keys. Theta_k's epoch is
    checked for every job (the dense stage keeps theta_k for the sweep's pruning jobs); the rest
    only where the job prunes: in a dense job none of these keys applies (``config.settings``)."""
    retrain = cfg.retrain
    if enum_value(retrain.rewind) == "epoch" and not 0 <= retrain.rewind_epoch <= max_epochs:
        raise ConfigError(
            f"retrain.rewind_epoch={retrain.rewind_epoch} must be in 0..trainer.max_epochs "
            f"({max_epochs}) for retrain.rewind=epoch"
        )
    if not prunes(cfg.prune.method, cfg.prune.ratio):
        return
    if retrain.epochs == 0 and enum_value(retrain.rewind) != "none":
        raise ConfigError(
            f"retrain.epochs=0 tests the pruned model as it is, so retrain.rewind="
            f"{enum_value(retrain.rewind)} would test untrained weights: use retrain.rewind=none"
        )
    _validate_score_at(cfg)
    _validate_gradual(cfg, max_epochs)
    _validate_stability(cfg)


def gradual_epochs(cfg: DictConfig, max_epochs: int) -> tuple[int, int, int]:
    """A gradual stage's (epochs, first pruning epoch, epoch that reaches ``prune.ratio``):
    ``retrain.epochs`` (null: ``trainer.max_epochs``), ``prune.gradual.start`` and
    ``prune.gradual.end`` (null: half the stage). The one home of these defaults: the check and
    the stage read it."""
    epochs = cfg.retrain.epochs if cfg.retrain.epochs is not None else max_epochs
    gradual = cfg.prune.gradual
    end = gradual.end if gradual.end is not None else epochs // 2
    return epochs, gradual.start, end


def _validate_gradual(cfg: DictConfig, max_epochs: int) -> None:
    """``prune.schedule=gradual`` is magnitude pruning of weights while theta0 fine-tunes."""
    prune = cfg.prune
    if enum_value(prune.schedule) != "gradual" or enum_value(prune.method) == "none":
        return
    odd = {
        "prune.method": (enum_value(prune.method), "magnitude"),
        "prune.granularity": (enum_value(prune.granularity), "weight"),
        "prune.score_at": (enum_value(prune.score_at), "finetuned"),
        "retrain.rewind": (enum_value(cfg.retrain.rewind), "none"),
        "prune.iterations": (prune.iterations, 1),
    }
    for key, (value, wanted) in odd.items():
        if value != wanted:
            raise ConfigError(
                f"prune.schedule=gradual with {key}={value}: gradual pruning is magnitude pruning "
                f"of weights during one fine-tune from theta0; use {key}={wanted}, or "
                "prune.schedule=oneshot"
            )
    epochs, _, end = gradual_epochs(cfg, max_epochs)
    if epochs < 1 or not 0 <= prune.gradual.start <= end < epochs:
        raise ConfigError(
            f"prune.gradual.start={prune.gradual.start}, prune.gradual.end={end} in a gradual "
            f"stage of {epochs} epoch(s) (retrain.epochs, null: trainer.max_epochs): "
            f"need 0 <= start <= end < {max(epochs, 1)}"
        )


def _validate_stability(cfg: DictConfig) -> None:
    """``stability.enabled=true`` retrains the pruned network twice and walks the line between."""
    prune, stability = cfg.prune, cfg.stability
    if not stability.enabled or not prunes(prune.method, prune.ratio):
        return  # a dense job of a stability sweep (prune.ratio=0) is the dense model alone
    if cfg.retrain.epochs == 0:
        raise ConfigError(
            "stability.enabled=true with retrain.epochs=0: there is no retraining to repeat; "
            "set retrain.epochs to at least 1, or stability.enabled=false"
        )
    if enum_value(prune.schedule) == "gradual":
        raise ConfigError(
            "stability.enabled=true with prune.schedule=gradual: the stability analysis repeats a "
            "retraining from fixed start weights and mask; use prune.schedule=oneshot"
        )
    if stability.points < 3 or stability.points % 2 == 0:
        raise ConfigError(
            f"stability.points={stability.points} must be odd and at least 3, so "
            "that the midpoint alpha=0.5 is on the path (the default 11: alpha 0, 0.1, ..., 1)"
        )


# The criteria that can score theta0: a mask of weights from the weights (or at random).
SCORE_AT_PRETRAINED = ("magnitude", "gradient", "random")


def _validate_score_at(cfg: DictConfig) -> None:
    """``prune.score_at=pretrained`` prunes before fine-tuning: the masked theta0 trains."""
    prune = cfg.prune
    if enum_value(prune.score_at) != "pretrained":
        return
    method, rewind = enum_value(prune.method), enum_value(cfg.retrain.rewind)
    if method not in (*SCORE_AT_PRETRAINED, "none"):
        raise ConfigError(
            f"prune.score_at=pretrained with prune.method={method}: only "
            f"{', '.join(SCORE_AT_PRETRAINED)} can score the pretrained weights; use one of "
            "them, or prune.score_at=finetuned"
        )
    if rewind not in ("pretrained", "random"):
        raise ConfigError(
            f"prune.score_at=pretrained prunes before fine-tuning, so the masked theta0 is what "
            f"trains, and retrain.rewind={rewind} would start from other weights: use "
            "retrain.rewind=pretrained (or random, the re-initialised control)"
        )
    if prune.iterations != 1:
        raise ConfigError(
            f"prune.score_at=pretrained with prune.iterations={prune.iterations}: pruning before "
            "fine-tuning is one shot; use prune.iterations=1 (or prune.score_at=finetuned for IMP)"
        )


def check_range(key: str, value: object) -> None:
    """One key's declared range (``config.settings``), for a value set outside a config (a
    strategy called directly): one line naming the key, as ``validate`` would."""
    problems = settings.range_problems({key: value})
    if problems:
        raise ConfigError(problems[0])


def check_angle(angle: float) -> None:
    """Distinctiveness' threshold tau, as ``prune.distinctiveness.angle`` declares it:
    0 < tau <= 90 degrees."""
    check_range("prune.distinctiveness.angle", angle)


def check_norm_std(norm_std: float | None) -> None:
    """paper B's norm filter, as ``prune.distinctiveness.norm_std`` declares it: null, or k >= 0."""
    check_range("prune.distinctiveness.norm_std", norm_std)


def check_accelerator(cfg: DictConfig) -> None:
    """A job that asks for a GPU (``trainer.accelerator=gpu`` or ``cuda``) and finds none usable
    fails here, before any work, in one line, instead of in Lightning after the data is loaded.
    Not part of ``validate``: it imports torch, which ``--cfg job`` and config errors never do."""
    from fer_lottery.core.devices import AUTO_GPU, cuda_problem, cuda_usable

    accelerator = str(cfg.trainer.accelerator).lower()
    if accelerator not in AUTO_GPU or accelerator == "auto" or cuda_usable():
        return
    problem = (
        cuda_problem() or "torch sees no CUDA device here (torch.cuda.is_available() is False)"
    )
    raise ConfigError(
        f"trainer.accelerator={cfg.trainer.accelerator}: {problem}, so this job cannot train on a "
        "GPU: run it where one is usable (a GPU node: check CUDA_VISIBLE_DEVICES and the driver), "
        "or set trainer.accelerator=auto (the CPU when no GPU is usable) or cpu"
    )
