"""Typed config schemas, registered in Hydra's ConfigStore, plus range checks.

OmegaConf checks types and enum values while Hydra composes (an unknown ``model.name`` fails
there, naming the key and the allowed values). ``validate`` checks what types cannot express
(ranges, sums, per-model limits) before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fer_lottery.errors import ConfigError


class DataName(str, Enum):
    sfew = "sfew"
    synthetic = "synthetic"


class CropMethod(str, Enum):
    mtcnn = "mtcnn"
    none = "none"


class CropFallback(str, Enum):
    center = "center"
    full = "full"


class Normalize(str, Enum):
    imagenet = "imagenet"
    none = "none"


class ModelName(str, Enum):
    resnet18 = "resnet18"
    alexnet = "alexnet"


class OptimName(str, Enum):
    sgd = "sgd"
    adam = "adam"


@dataclass
class AugmentConfig:
    """Training-time augmentation (paper A: hflip 0.5, +-15 deg, square crop of 90-100% area)."""

    hflip: float = 0.5
    rotation: float = 15.0
    crop_area_min: float = 0.9
    crop_area_max: float = 1.0


@dataclass
class SyntheticConfig:
    """Size and seed of the built-in synthetic face dataset (not SFEW)."""

    per_class: int = 150
    seed: int = 0


@dataclass
class DataConfig:
    name: DataName = DataName.sfew
    root: str = "${oc.env:SFEW_ROOT,data/SFEW}"
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    split_seed: int = 1
    # k-fold cross-validation: folds=k tests on each of k stratified folds in turn (split[2] is
    # then ignored); fold=i runs only fold i (to spread folds over sweep jobs); null runs all k.
    folds: int | None = None
    fold: int | None = None
    crop: CropMethod = CropMethod.mtcnn
    crop_fallback: CropFallback = CropFallback.center
    # Manual boxes (file,x1,y1,x2,y2); null looks for <root>/crops.csv.
    crops_csv: str | None = None
    # Margin around the detected box, as a fraction of the box side.
    face_margin: float = 0.0
    # Frames larger than this (longest side, px) are shrunk for detection only.
    detect_max_side: int = 1024
    detect_batch_size: int = 4
    image_size: int = 224
    batch_size: int = 64
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    normalize: Normalize = Normalize.imagenet
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    name: ModelName = ModelName.resnet18
    # IMAGENET1K_V1, null (random init) or a path to a state-dict file.
    weights: str | None = "IMAGENET1K_V1"
    frozen_layers: int = 0
    num_classes: int = 7


@dataclass
class OptimConfig:
    name: OptimName = OptimName.sgd
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments, passed through. ``extra`` takes any other Trainer argument."""

    max_epochs: int = 50
    accelerator: str = "auto"
    devices: Any = "auto"
    precision: Any = None
    deterministic: bool = False
    log_every_n_steps: int = 1
    enable_progress_bar: bool = True
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    num_sanity_val_steps: int = 0
    # fer_lottery's own keys (not Trainer arguments):
    checkpoint_every_n_epochs: int = 5
    compile: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class PruneMethod(str, Enum):
    none = "none"
    magnitude = "magnitude"
    random = "random"
    distinctiveness = "distinctiveness"


class RewindMode(str, Enum):
    none = "none"
    pretrained = "pretrained"
    epoch = "epoch"
    random = "random"


class Variant(str, Enum):
    honest = "honest"
    paper_a = "paper_a"
    paper_b = "paper_b"


class UnitNormalize(str, Enum):
    minmax = "minmax"
    center = "center"


@dataclass
class PruneConfig:
    """What to prune after the dense fine-tune, and which weights to retrain from."""

    method: PruneMethod = PruneMethod.magnitude
    ratio: float = 0.0  # fraction of prunable weights to remove; 0: dense only
    scope: str = "global"  # global | layer
    include: list[str] = field(default_factory=lambda: ["*"])  # module-name globs
    rewind: RewindMode = RewindMode.none
    rewind_epoch: int = 1  # k for rewind=epoch: the weights after k dense epochs
    iterations: int = 1  # IMP rounds; each prunes 1-(1-ratio)^(1/n) of what remains
    retrain_epochs: int | None = None  # null: trainer.max_epochs
    # Distinctiveness (Gedeon): angle threshold tau in degrees, and its options.
    angle: float = 15.0
    complementary: bool = False
    normalize: UnitNormalize = UnitNormalize.minmax
    norm_std: float | None = None
    variant: Variant = Variant.honest
    layers: list[str] | None = None  # module names to restrict to, e.g. [classifier.4] (fc7)
    seed: int | None = None  # random pruning / re-init seed; null: the run's seed


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    prune: PruneConfig = field(default_factory=PruneConfig)
    seed: int = 1
    # Face crops (crops/) and dense fine-tunes shared by sweep jobs (dense/) live here.
    cache_dir: str = "${oc.env:FER_LOTTERY_CACHE,.cache/fer_lottery}"
    # Reuse a dense fine-tune with the same data/model/optim/trainer/seed config (sweeps).
    cache_dense: bool = True
    # How long a job waits for another job that is training the same dense model (seconds).
    cache_lock_timeout_s: float = 14400.0
    # torch CPU threads for the job; null: every CPU the process may use. CPU float results
    # depend on it, so it is a setting (the same under every launcher) and is recorded.
    threads: int | None = None
    # A preset's published numbers (paper, table, rows); read by the report, never by training.
    published: Any = None


# The Hydra config tree (conf/ beside the package; the package is installed editable).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# Layer groups that ``model.frozen_layers`` counts (DESIGN: AlexNet 8, ResNet-18 6).
LAYER_COUNTS = {"resnet18": 6, "alexnet": 8}


def register_configs() -> None:
    """Register the schemas so that YAML files in conf/ are checked against them."""
    from fer_lottery.config.sweeps import swept_dirname

    ConfigStore.instance().store(name="config_schema", node=Config)
    OmegaConf.register_new_resolver("swept_dirname", swept_dirname, replace=True)


def enum_value(value: Any) -> str:
    """The plain string of a config enum (``ModelName.resnet18`` -> ``"resnet18"``)."""
    return value.value if isinstance(value, Enum) else str(value)


def validate(cfg: DictConfig) -> None:
    """Fail before any work on values that are out of range, naming the key and the fix."""
    data, model, optim, trainer = cfg.data, cfg.model, cfg.optim, cfg.trainer
    split = list(data.split)
    if len(split) != 3 or any(f <= 0 or f >= 1 for f in split):
        raise ConfigError(
            f"data.split={split} must be three fractions in (0, 1) for train, val and test, "
            "e.g. data.split=[0.7,0.15,0.15]"
        )
    if abs(sum(split) - 1.0) > 1e-6:
        raise ConfigError(
            f"data.split={split} sums to {sum(split):.4g}, not 1; "
            "e.g. data.split=[0.7,0.15,0.15] (paper A) or [0.6,0.2,0.2] (paper B)"
        )
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
    if data.image_size < 32:
        raise ConfigError(f"data.image_size={data.image_size} is too small; use at least 32")
    if data.batch_size < 1:
        raise ConfigError(f"data.batch_size={data.batch_size} must be at least 1")
    if data.face_margin < 0:
        raise ConfigError(f"data.face_margin={data.face_margin} must be >= 0 (a fraction)")
    if data.detect_max_side < 64 or data.detect_batch_size < 1:
        raise ConfigError("data.detect_max_side must be >= 64 and data.detect_batch_size >= 1")
    aug = data.augment
    if not 0 <= aug.hflip <= 1:
        raise ConfigError(f"data.augment.hflip={aug.hflip} is a probability in [0, 1]")
    if aug.rotation < 0 or aug.rotation > 180:
        raise ConfigError(f"data.augment.rotation={aug.rotation} must be in [0, 180] degrees")
    if not 0 < aug.crop_area_min <= aug.crop_area_max <= 1:
        raise ConfigError(
            f"data.augment.crop_area_min={aug.crop_area_min}, crop_area_max={aug.crop_area_max}: "
            "need 0 < min <= max <= 1"
        )
    if data.synthetic.per_class < 5:
        raise ConfigError(
            f"data.synthetic.per_class={data.synthetic.per_class}: need at least 5 images "
            "per class so that every split gets each class"
        )
    name = enum_value(model.name)
    n_layers = LAYER_COUNTS[name]
    if not 0 <= model.frozen_layers <= n_layers:
        raise ConfigError(
            f"model.frozen_layers={model.frozen_layers} is out of range for {name}, "
            f"which has {n_layers} layers: use 0..{n_layers}"
        )
    if name == "alexnet" and data.image_size < 63:
        raise ConfigError(
            f"data.image_size={data.image_size} is too small for alexnet: use at least 63"
        )
    if model.num_classes < 2:
        raise ConfigError(f"model.num_classes={model.num_classes} must be at least 2")
    if optim.lr <= 0:
        raise ConfigError(f"optim.lr={optim.lr} must be > 0")
    if optim.weight_decay < 0 or optim.momentum < 0:
        raise ConfigError("optim.weight_decay and optim.momentum must be >= 0")
    if trainer.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs={trainer.max_epochs} must be at least 1")
    if trainer.get("checkpoint_every_n_epochs", 1) < 0:
        raise ConfigError(
            f"trainer.checkpoint_every_n_epochs={trainer.checkpoint_every_n_epochs} must be >= 0 "
            "(0: no resumable checkpoints)"
        )
    if cfg.get("threads") is not None and cfg.threads < 1:
        raise ConfigError(f"threads={cfg.threads} must be at least 1, or null for every CPU")
    if cfg.get("cache_lock_timeout_s", 1) <= 0:
        raise ConfigError(f"cache_lock_timeout_s={cfg.cache_lock_timeout_s} must be > 0 seconds")
    _validate_prune(cfg.prune, trainer.max_epochs)


def _validate_prune(prune: DictConfig, max_epochs: int) -> None:
    if not 0 <= prune.ratio < 1:
        raise ConfigError(
            f"prune.ratio={prune.ratio} must be in [0, 1): the fraction of weights to remove"
        )
    if prune.scope not in ("global", "layer"):
        raise ConfigError(f"prune.scope={prune.scope!r}: use global or layer")
    if prune.iterations < 1:
        raise ConfigError(f"prune.iterations={prune.iterations} must be at least 1")
    if prune.retrain_epochs is not None and prune.retrain_epochs < 0:
        raise ConfigError(f"prune.retrain_epochs={prune.retrain_epochs} must be >= 0 or null")
    if prune.retrain_epochs == 0 and enum_value(prune.rewind) != "none":
        raise ConfigError(
            f"prune.retrain_epochs=0 tests the pruned model as it is, so prune.rewind="
            f"{enum_value(prune.rewind)} would test untrained weights: use prune.rewind=none"
        )
    if enum_value(prune.rewind) == "epoch" and not 0 <= prune.rewind_epoch <= max_epochs:
        raise ConfigError(
            f"prune.rewind_epoch={prune.rewind_epoch} must be in 0..trainer.max_epochs "
            f"({max_epochs}) for prune.rewind=epoch"
        )
    if not 0 < prune.angle < 90:
        raise ConfigError(f"prune.angle={prune.angle} must be in (0, 90) degrees")
    if prune.norm_std is not None and prune.norm_std < 0:
        raise ConfigError(f"prune.norm_std={prune.norm_std} must be >= 0 or null")
