"""Every file and folder name that a run, a sweep or the cache writes, in one place.

A run folder (``outputs/<date>/<time>/``, or one job of a sweep)::

    results.json          the job's results and resolved config (schema: ``store.results``)
    split.json            the item ids of train / val / test
    weights.pt            the final weights, sparse (``store.weights``)
    mask.pt               the final pruning mask, 1 bit per entry (``pruning.mask``)
    mask_round<r>.pt      IMP: the mask after round r, for each round but the last
    failed.json           a failed sweep job: error, traceback, overrides (``job.failures``)
    folds.json, fold=<i>/ k-fold: the per-fold summary and one run folder per fold
    tb/<stage>/           TensorBoard events of a stage (dense, retrain, retrain<r>, pruned,
                          gradual, stability)
    csv/<stage>/          the same curves as CSV (metrics.csv)
    confusion_<stage>.png the stage's test confusion matrix
    predictions_<stage>.csv
                          the stage's per-image predictions on test and val (``store.predictions``)
    checkpoints/<stage>/  while the job runs: last.ckpt, then finished.pt + finished.json;
                          checkpoints/config.json says which config they belong to

The cache folder (``cache_dir``)::

    crops/<sha256>.npz    one face crop per image and crop setting (``data.faces``)
    dense/<key>/          a finished dense fine-tune: theta0.pt, best.pt, theta_k.pt, metrics.json,
                          and its tb/dense, csv/dense and confusion_dense.png
    dense/<key>.partial/  one being trained; <key>.lock and <key>.holder.json beside it
    <folder>/quarantine/  entries found broken, moved aside (``store.atomic.move_aside``); in a
                          run folder, a last.ckpt that did not load
"""

from __future__ import annotations

from pathlib import Path

# -- a run folder -----------------------------------------------------------------------------
RESULTS = "results.json"
SPLIT = "split.json"
WEIGHTS = "weights.pt"
MASK = "mask.pt"
ROUND_MASK_GLOB = "mask_round*.pt"  # IMP: the mask after each round but the last (mask.pt)
PREDICTIONS_GLOB = "predictions_*.csv"
FAILED = "failed.json"
FOLDS = "folds.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tb"
CSV = "csv"
METRICS_CSV = "metrics.csv"
EXPORTED = "exported.pt"
MULTIRUN = "multirun.yaml"  # written by Hydra in a sweep folder
LAUNCH = ".launch"  # in a sweep folder: which launch of the sweep is running (job.failures)
TRACKERS = "trackers.json"  # the job's MLflow and W&B run ids (a resumed job continues them)
MLRUNS = "mlruns"  # logger=mlflow's local file store, in the sweep folder (or the run's)
WANDB = "wandb"  # logger=wandb's offline runs, in the run folder

# -- inside checkpoints/<stage>/ ----------------------------------------------------------------
CONFIG_STAMP = "config.json"  # checkpoints/config.json: the config the checkpoints belong to
LAST_CKPT = "last.ckpt"
FINISHED_WEIGHTS = "finished.pt"
FINISHED_METRICS = "finished.json"

# -- the cache --------------------------------------------------------------------------------
CROPS = "crops"
DENSE = "dense"
QUARANTINE = "quarantine"
THETA0 = "theta0.pt"  # the weights before fine-tuning
BEST = "best.pt"  # the dense model's best-validation weights
THETA_K = "theta_k.pt"  # the weights after retrain.rewind_epoch dense epochs
ENTRY_METRICS = "metrics.json"


def fold_dir(run_dir: Path, fold: int) -> Path:
    """The run folder of fold ``fold`` of a k-fold job."""
    return Path(run_dir) / f"fold={fold}"


FOLD_GLOB = "fold=*"  # every fold_dir of a run folder


def stage_checkpoints(out_dir: Path, stage: str) -> Path:
    """Where a stage keeps what resumes it, and its result once it finished."""
    return Path(out_dir) / CHECKPOINTS / stage


def stage_tensorboard(out_dir: Path, stage: str) -> Path:
    return Path(out_dir) / TENSORBOARD / stage


def stage_csv(out_dir: Path, stage: str) -> Path:
    return Path(out_dir) / CSV / stage


def confusion_png(out_dir: Path, stage: str) -> Path:
    return Path(out_dir) / f"confusion_{stage}.png"


def round_mask(run_dir: Path, r: int) -> Path:
    """The mask after IMP round ``r`` (1-based) of a job of more rounds; the last is ``mask.pt``."""
    return Path(run_dir) / f"mask_round{r}.pt"


def predictions_csv(out_dir: Path, stage: str) -> Path:
    """The per-image predictions of a stage's final model (``store.predictions``)."""
    return Path(out_dir) / f"predictions_{stage}.csv"


def dense_entry(cache_dir: str | Path, key: str, suffix: str = "") -> Path:
    """The folder of the finished dense cache entry ``key``; with ``suffix``, what lies beside it:
    ``.partial`` (the entry being trained), ``.lock`` and ``.holder.json`` (who trains it)."""
    return Path(cache_dir) / DENSE / f"{key}{suffix}"


PARTIAL, LOCK, HOLDER = ".partial", ".lock", ".holder.json"
