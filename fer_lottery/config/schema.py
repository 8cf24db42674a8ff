"""The typed config schema: every key, its type, its default, its choices, and its declaration
(what it changes, when it applies, its range: ``config.declaration``), written once.

Hydra composes ``conf/config.yaml`` onto these dataclasses (registered as ``config_schema``), so
OmegaConf checks types and enum values while composing: an unknown ``model.name`` fails there,
naming the key and the allowed values. The YAML files in ``conf/`` set only what an option or a
preset changes; every default lives here. ``config.settings`` reads the declarations, and the
dense cache key, the relaunch check, the report's conditions and the range checks follow from
them; ``checks.validate`` adds the rules that join several keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from fer_lottery.config.declaration import (
    NOTHING,
    above,
    all_of,
    at_least,
    between,
    is_set,
    setting,
    unless,
    when,
)
from fer_lottery.core.criteria import method_names


def choices(enum: type[Enum]) -> tuple[str, ...]:
    """The allowed values of a config enum, as plain strings."""
    return tuple(member.value for member in enum)


class DataName(str, Enum):
    sfew = "sfew"
    synthetic = "synthetic"


class CropMethod(str, Enum):
    mtcnn = "mtcnn"
    none = "none"


class CropFallback(str, Enum):
    center = "center"
    full = "full"


class DuplicatePolicy(str, Enum):
    """Images with identical bytes (fer_lottery.data.duplicates)."""

    keep = "keep"
    drop = "drop"
    error = "error"


class Normalize(str, Enum):
    """The input normalisation (mean and std per channel)."""

    auto = "auto"  # the weights' own preprocessing (torchvision's meta, timm's pretrained_cfg)
    imagenet = "imagenet"  # 0.485/0.456/0.406, 0.229/0.224/0.225
    inception = "inception"  # 0.5/0.5 (TF EfficientNet-Lite, Inception)
    none = "none"  # [0, 1] values


class OptimName(str, Enum):
    sgd = "sgd"
    adam = "adam"


class Scheduler(str, Enum):
    """The learning rate over a stage's epochs (stepped once per epoch)."""

    none = "none"  # constant, as both papers trained
    cosine = "cosine"  # cosine annealing from lr to 0 over the stage's epochs
    step = "step"  # times step_gamma every step_size epochs


class RetrainLR(str, Enum):
    """The learning rate a retraining uses (Renda et al. 2020)."""

    restart = "restart"  # replay the schedule from its start (with rewind=none: LR rewinding)
    final = "final"  # constant, the dense stage's last learning rate (Han et al. fine-tuning)


# When a data key is read: the synthetic generator's, SFEW's, the face detector's.
SYNTHETIC = when("data.name", "synthetic")
SFEW = when("data.name", "sfew")
DETECTED = all_of(SFEW, when("data.crop", "mtcnn"))


@dataclass
class AugmentConfig:
    """Training-time augmentation (paper A: hflip 0.5, +-15 deg, square crop of 90-100% area)."""

    hflip: float = setting(0.5, check=between(0, 1, "a probability"))
    rotation: float = setting(15.0, check=between(0, 180, "degrees, +-; paper B used 30"))
    crop_area_min: float = 0.9  # 0 < min <= max <= 1 (config.checks)
    crop_area_max: float = 1.0


@dataclass
class SyntheticConfig:
    """Size and seed of the built-in synthetic face dataset (not SFEW)."""

    per_class: int = setting(
        150, applies=SYNTHETIC, check=at_least(5, "so that every split gets each class")
    )
    seed: int = setting(0, applies=SYNTHETIC)


# data.split's one word: SFEW 2.0's official protocol (train on Train, test on Val).
OFFICIAL_SPLIT = "official"


@dataclass
class DataConfig:
    """SFEW frames under ``root`` (``root/<Class>/*.png``, or ``root/{Train,Val}/<Class>/*``),
    or the built-in synthetic faces (``name: synthetic``)."""

    name: DataName = DataName.sfew
    root: str = setting("${oc.env:SFEW_ROOT,data/SFEW}", applies=SFEW)
    # train / val / test fractions of the pooled images. Paper A says "75/15/15" (105%); 15% val
    # + 15% test (101 images each) leaves 70% to train. Paper B: [0.6, 0.2, 0.2].
    # Or "official": SFEW 2.0's protocol (root/Train/<Class>/, root/Val/<Class>/), as the EmotiW
    # literature reports it: test on every Val image, train on Train, validate on
    # official_val_fraction of each Train class. A list of 3 fractions or "official"
    # (config.checks), so the type is Any.
    split: Any = field(default_factory=lambda: [0.7, 0.15, 0.15])
    # data.split=official: the share of each class of Train held out (stratified) for validation.
    official_val_fraction: float = setting(
        0.15,
        applies=when("data.split", "official"),
        check=between(
            0,
            1,
            "the share of each class of Train held out",
            low_inclusive=False,
            high_inclusive=False,
        ),
    )
    split_seed: int = 1
    # k-fold cross-validation: folds=k tests on each of k stratified folds in turn (val is
    # split[1]/(split[0]+split[1]) of the rest, and split[2] is ignored); fold=i runs only fold i
    # (to spread folds over sweep jobs); null runs all k in one job.
    folds: int | None = None
    fold: int | None = setting(None, applies=is_set("data.folds"))
    crop: CropMethod = setting(CropMethod.mtcnn, applies=SFEW)
    # Frames with no face: center (centre square) | full (whole frame); <root>/crops.csv wins.
    crop_fallback: CropFallback = setting(CropFallback.center, applies=SFEW)
    # Manual boxes (file,x1,y1,x2,y2); null looks for <root>/crops.csv.
    crops_csv: str | None = setting(None, applies=SFEW)
    # Byte-identical images: keep (all copies, in one split) | drop (one per class; copies
    # across classes dropped) | error. Every copy of an image always lands in one split.
    duplicates: DuplicatePolicy = setting(DuplicatePolicy.keep, applies=SFEW)
    # Margin around the detected box, as a fraction of the box side.
    face_margin: float = setting(0.0, applies=SFEW, check=at_least(0, "a fraction"))
    # Frames larger than this (longest side, px) are shrunk for detection only.
    detect_max_side: int = setting(1024, applies=DETECTED, check=at_least(64))
    # How many frames MTCNN takes at once. The crop cache does not key on it, so a cache's crops
    # are the same whatever it is (a batch could move a box by float rounding in NMS).
    detect_batch_size: int = setting(4, changes=NOTHING, check=at_least(1))
    image_size: int = 224  # at least the model's smallest (models.checks)
    batch_size: int = setting(64, check=at_least(1))
    num_workers: int = setting(0, changes=NOTHING)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # auto: what the model's weights were trained with (ImageNet's for a random init or a file);
    # imagenet, inception or none set it by hand. results.json records the values used.
    normalize: Normalize = Normalize.auto
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    # Any torchvision classification builder (resnet18, alexnet, mobilenet_v2, ...) or any timm
    # model as timm/<name>; checked before any work (models.checks), where a close name is
    # suggested. python -m fer_lottery.models NAME prints what fer_lottery finds on it.
    name: str = "resnet18"
    # imagenet: the backbone's own ImageNet weights (models.weights: torchvision's enum, timm's
    # default tag; offline from an installed package where one ships them); a torchvision enum
    # name (IMAGENET1K_V1) or timm tag; null (random init) or a path to a state-dict file.
    weights: str | None = "imagenet"
    frozen_layers: int = 0  # the first k layer groups (models.layer_groups) keep their weights
    num_classes: int = setting(7, check=at_least(2))


@dataclass
class OptimConfig:
    name: OptimName = OptimName.sgd
    lr: float = setting(0.02, check=above(0))
    momentum: float = setting(0.9, applies=when("optim.name", "sgd"), check=at_least(0))
    weight_decay: float = setting(0.0, check=at_least(0))
    nesterov: bool = setting(False, applies=when("optim.name", "sgd"))
    betas: list[float] = setting(factory=lambda: [0.9, 0.999], applies=when("optim.name", "adam"))
    scheduler: Scheduler = Scheduler.none
    # scheduler=step: epochs between decays, and the factor of each decay.
    step_size: int = setting(
        10, applies=when("optim.scheduler", "step"), check=at_least(1, "epochs")
    )
    step_gamma: float = setting(
        0.1, applies=when("optim.scheduler", "step"), check=between(0, 1, low_inclusive=False)
    )


@dataclass
class MLflowConfig:
    """``logger=mlflow``: Lightning's MLFlowLogger, one MLflow run per job."""

    # null: a local file store next to the sweep (or the single run), <dir>/mlruns; or a server,
    # http://host:5000 (a server that does not answer gets one warning; the job runs on).
    tracking_uri: str | None = None
    # null: the sweep's (or the run's) folder, so that the runs of one sweep are one experiment.
    experiment_name: str | None = None


class WandbMode(str, Enum):
    offline = "offline"  # files in the run folder; no network, no account
    online = "online"  # sent as the job runs (needs wandb login)
    disabled = "disabled"


@dataclass
class WandbConfig:
    """``logger=wandb``: Lightning's WandbLogger, one W&B run per job, offline by default
    (``wandb sync <run dir>/wandb/offline-run-*`` uploads it later)."""

    mode: WandbMode = WandbMode.offline
    project: str = "fer_lottery"
    entity: str | None = None
    # null: named after the sweep (or the run), so that the runs of one sweep are one group.
    group: str | None = None


@dataclass
class LoggerConfig:
    """Where a job's curves and numbers go besides its run folder. TensorBoard and CSV are
    always written (they are the record the report reads); ``logger=[tensorboard,mlflow]`` or
    ``logger=[tensorboard,csv,wandb]`` add a tracker. A tracker that is missing or does not
    answer gets one warning and changes nothing in the job."""

    tensorboard: dict[str, Any] | None = None
    csv: dict[str, Any] | None = None
    mlflow: MLflowConfig | None = None
    wandb: WandbConfig | None = None


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments, passed through. ``extra`` takes any other Trainer argument
    (``+trainer.extra.NAME=VALUE``)."""

    max_epochs: int = setting(50, check=at_least(1))
    # auto: a usable GPU, else the CPU. FER_LOTTERY_ACCELERATOR sets it for a whole launch (the
    # SLURM preset exports gpu, so that a GPU job that finds no GPU fails instead of crawling).
    accelerator: str = "${oc.env:FER_LOTTERY_ACCELERATOR,auto}"
    # One device per job (config.checks refuses more): a multi-GPU machine is used by packing
    # jobs, one GPU each (README, Packing).
    # Which one changes no number.
    devices: Any = setting(1, changes=NOTHING)
    precision: Any = None  # null: 32 on CPU, bf16-mixed on GPU
    deterministic: bool = False
    # Metrics are logged per epoch; this only silences a warning.
    log_every_n_steps: int = setting(1, changes=NOTHING)
    enable_progress_bar: bool = setting(True, changes=NOTHING)
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    # No validation pass before training (it changes no number).
    num_sanity_val_steps: int = setting(0, changes=NOTHING)
    # Lightning's table of submodules at each stage; off: the job logs one model line of its own
    # (parameters, prunable weights, MACs).
    enable_model_summary: bool = setting(False, changes=NOTHING)
    # fer_lottery's own keys (lightning=False: not Trainer arguments):
    # A resumable checkpoint (model, optimizer, best weights) at the end of an epoch once this
    # many seconds have passed since the stage started or last wrote one (0: never), and/or
    # every N epochs (0: never). Time-based by default, so that a short stage (a GPU epoch
    # takes a fraction of a second) pays nothing and a long one loses at most a few minutes.
    checkpoint_every_s: float = setting(
        300.0, changes=NOTHING, lightning=False, check=at_least(0, "0: no time-based checkpoints")
    )
    checkpoint_every_n_epochs: int = setting(
        0, changes=NOTHING, lightning=False, check=at_least(0, "0: no resumable checkpoints")
    )
    # true: torch.compile the model (nn.Module.compile), per process.
    compile: bool = setting(False, lightning=False)
    extra: dict[str, Any] = field(default_factory=dict)


# The pruning criteria: "none" and the names in ``core.criteria``.
PruneMethod = Enum("PruneMethod", {name: name for name in method_names()}, type=str)


# global: rank every prunable weight together; layer: prune the same fraction of each layer.
# (Functional API: OmegaConf matches members by name, and "global" is a Python keyword.)
PruneScope = Enum("PruneScope", {"global": "global", "layer": "layer"}, type=str)


class RewindMode(str, Enum):
    none = "none"  # continue from the fine-tuned weights
    pretrained = "pretrained"  # the lottery ticket: rewind to theta0
    epoch = "epoch"  # rewind to theta_k, the weights after prune.rewind_epoch dense epochs
    random = "random"  # the control: a fresh random initialisation


class PruneSchedule(str, Enum):
    oneshot = "oneshot"  # prune the fine-tuned model, then retrain (IMP: several rounds)
    gradual = "gradual"  # prune while fine-tuning theta0, on a cubic schedule (Zhu & Gupta)


class Granularity(str, Enum):
    weight = "weight"  # single weights
    unit = "unit"  # whole neurons / channels (the layers distinctiveness prunes)


class ScoreAt(str, Enum):
    finetuned = "finetuned"  # score the fine-tuned weights (prune after fine-tuning)
    pretrained = "pretrained"  # score theta0 (prune before fine-tuning; SNIP with gradient)


class Variant(str, Enum):
    honest = "honest"  # the corrected rule (docs/design.md "Distinctiveness, precisely")
    paper_a = "paper_a"  # what paper A's published code does
    paper_b = "paper_b"  # what paper B's published code does


# The distinctiveness options a paper rule's published code does not have: the rule ignores them
# (``applies``), so they split neither the dense cache nor the report's rows.
HONEST = when("prune.distinctiveness.variant", Variant.honest.value)


class UnitNormalize(str, Enum):
    minmax = "minmax"  # per unit to [-0.5, 0.5]
    center = "center"  # subtract the unit's mean


# Distinctiveness' angle threshold tau, in degrees: 0 < tau <= ANGLE_MAX.
ANGLE_MAX = 90.0


GRADUAL = when("prune.schedule", PruneSchedule.gradual.value)
STABILITY = when("stability.enabled", True)


@dataclass
class DistinctivenessConfig:
    """Distinctiveness' own options (Gedeon): ``prune.method=distinctiveness`` reads them, and no
    other criterion does."""

    # The angle threshold tau in degrees: pairs of units closer than tau are merged.
    angle: float = setting(
        15.0, check=between(0, ANGLE_MAX, "tau, in degrees", low_inclusive=False, finite=True)
    )
    # Also remove pairs at more than 180 - tau.
    complementary: bool = setting(False, applies=HONEST)
    normalize: UnitNormalize = setting(UnitNormalize.minmax, applies=HONEST)
    # Paper B's pre-filter: k standard deviations of the norms.
    norm_std: float | None = setting(
        None,
        applies=unless("prune.distinctiveness.variant", Variant.paper_a.value),
        check=at_least(0, null=True),
    )
    variant: Variant = Variant.honest
    layers: list[str] | None = None  # module names to restrict to, e.g. [classifier.4] (fc7)


@dataclass
class GradualConfig:
    """``prune.schedule=gradual``: one fine-tune of theta0 for ``retrain.epochs``, pruned at each
    epoch start from ``start`` to ``end`` (null: half the stage) to
    s = ratio * (1 - (1 - (e - start) / (end - start))^3), then at ratio (Zhu & Gupta)."""

    start: int = setting(0, applies=GRADUAL)
    end: int | None = setting(None, applies=GRADUAL)


@dataclass
class PruneConfig:
    """What is removed after the dense fine-tune: the criterion, how much, where, and on what
    schedule.

    ``ratio`` 0 (the default) trains the dense model only; ``-m prune.ratio=0.5,0.9,0.95``
    fine-tunes once and prunes at three ratios. What the pruned network then trains from is
    ``retrain``; the stability analysis of the retrained ticket is ``stability``.
    """

    method: PruneMethod = PruneMethod.magnitude
    # Fraction of prunable weights to remove (magnitude, random); 0: dense only.
    ratio: float = setting(0.0, check=between(0, 1, high_inclusive=False))
    scope: PruneScope = PruneScope["global"]
    include: list[str] = field(default_factory=lambda: ["*"])  # module-name globs of the
    # conv/linear weights that may be pruned
    # weight: single weights; unit: whole neurons and channels (magnitude: L1 of the incoming
    # filter; gradient: its summed score; random), ratio = the fraction of units removed.
    granularity: Granularity = Granularity.weight
    # Which weights are scored: the fine-tuned ones, or theta0 (prune before fine-tuning: the
    # masked theta0 is trained for retrain.epochs; needs retrain.rewind=pretrained or random).
    score_at: ScoreAt = ScoreAt.finetuned
    seed: int | None = None  # random pruning / re-init seed; null: the run's seed
    # A layer left with less than this fraction of its weights is warned about and counted
    # (prune/layers_near_collapse): layer collapse, a known failure of global criteria.
    # (It changes prune/layers_near_collapse, a number the job records.)
    min_layer_density: float = setting(0.01, check=between(0, 1, "a fraction"))
    # oneshot: prune after the dense fine-tune, then retrain; gradual: prune while fine-tuning
    # theta0 (``gradual``).
    schedule: PruneSchedule = PruneSchedule.oneshot
    # >1: IMP rounds; each prunes 1-(1-ratio)^(1/n) of what remains, then retrains.
    iterations: int = setting(1, check=at_least(1))
    gradual: GradualConfig = field(default_factory=GradualConfig)
    distinctiveness: DistinctivenessConfig = field(default_factory=DistinctivenessConfig)


@dataclass
class RetrainConfig:
    """How the pruned network trains: from which weights (the lottery ticket question), for how
    long, and at which learning rate. Nothing here applies to a job that does not prune."""

    rewind: RewindMode = RewindMode.none
    # k for rewind=epoch: the weights after k dense epochs (0..trainer.max_epochs: config.checks).
    rewind_epoch: int = setting(1, applies=when("retrain.rewind", "epoch"))
    # null: trainer.max_epochs; 0: test the pruned model as is. Under prune.schedule=gradual, the
    # length of the gradual stage.
    epochs: int | None = setting(None, check=at_least(0, null=True))
    # What the retraining's learning rate does (optim.scheduler): restart the schedule, or
    # stay at the dense stage's last learning rate. The same with optim.scheduler=none.
    # A gradual stage fine-tunes theta0 with optim's own schedule: there is no retraining.
    lr: RetrainLR = setting(
        RetrainLR.restart,
        applies=all_of(unless("optim.scheduler", "none"), unless("prune.schedule", "gradual")),
    )


@dataclass
class StabilityConfig:
    """Linear mode connectivity (Frankle et al. 2020), an analysis of the retrained ticket:
    retrain the pruned network a second time (stage ``stability``) from the same start weights
    and mask with other SGD noise (batch order, augmentation and dropout seeded by ``seed``;
    null: derived from the run's seed), then evaluate the straight line between the two
    retrained models at ``points`` values of alpha, BatchNorm statistics recomputed on the
    training split at each point."""

    enabled: bool = False
    seed: int | None = setting(None, applies=STABILITY)
    # Odd and at least 3, so that alpha=0.5 is on the path (config.checks).
    points: int = setting(11, applies=STABILITY)


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    seed: int = 1
    # Face crops (crops/) and dense fine-tunes shared by sweep jobs (dense/) live here.
    cache_dir: str = setting("${oc.env:FER_LOTTERY_CACHE,.cache/fer_lottery}", changes=NOTHING)
    # Reuse a dense fine-tune with the same data/model/optim/trainer/seed config (sweeps).
    cache_dense: bool = setting(True, changes=NOTHING)
    # How long a job waits for another job that is training the same dense model (seconds).
    cache_lock_timeout_s: float = setting(14400.0, changes=NOTHING, check=above(0, "seconds"))
    # torch CPU threads for the job; null: every CPU the process may use, except for a GPU job
    # packed by joblib with n_jobs=K > 1, which takes CPUs // K (its numbers do not depend on
    # it). CPU float results depend on it, so for a CPU job it is the same under every launcher;
    # it is recorded.
    threads: int | None = setting(None, check=at_least(1, "null: every CPU", null=True))
    # A preset's published numbers (paper, table, rows); read by the report, never by training.
    published: Any = setting(None, changes=NOTHING)
    # A "beyond the papers" preset's study: title, question, and the keys its table rows are
    # grouped by (match); read by the report, never by training.
    study: Any = setting(None, changes=NOTHING)


def enum_value(value: Any) -> str:
    """The plain string of a config enum (``Scheduler.cosine`` -> ``"cosine"``)."""
    return value.value if isinstance(value, Enum) else str(value)
