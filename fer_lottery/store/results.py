"""The schema of ``results.json``: which keys a job writes, their types and their ranges.

The tables below are the schema. Checked at two points:

- **Writing** (``check_results``, called by ``experiment.runner`` just before it writes the
  file): every key that a job of its kind writes must be there, with its type. A failure is a
  bug in fer_lottery, and the job fails before a bad file exists.
- **Reading** (``read_results``, used by the report): the file must parse. It must hold what the
  report cannot do without (``test/acc``, ``val/acc_best``, ``config``, and ``prune/sparsity``
  when the config prunes), and every key present must have its type. A file written before a
  newer key existed (``torch/threads``, say) is still read.

Which keys a job must write depends on its config: every job writes the keys of
``EVERY_JOB``; a pruning job also writes ``PRUNED``; a distinctiveness job also writes
``DISTINCTIVENESS``; an IMP job (``prune.iterations`` > 1) also writes ``ROUND`` for each round.
Other keys are allowed, so that a new key never fails a job; a known key must have its type.

The schema is hand-written in Python, not in JSON Schema with the ``jsonschema`` package:

- the file is one flat level of keys, so each rule is "this key: this type, this range";
- some rules do not fit JSON Schema: the confusion matrix is n x n for the n classes, and some
  keys are required only when the config prunes;
- the errors name the key and say what is wrong in one line;
- every job runs the check, and it needs no extra dependency.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from fer_lottery.config.renamed import upgrade
from fer_lottery.core import paths
from fer_lottery.core.classes import CLASSES
from fer_lottery.core.criteria import prunes


class ResultsError(ValueError):
    """A results.json (or the results about to become one) that breaks the schema.

    ``reasons``: what is wrong, one phrase each (``missing key test/acc``).
    """

    def __init__(self, where: str, reasons: list[str]):
        self.reasons = reasons
        super().__init__(f"{where}: {'; '.join(reasons)}")


# -- value types: each returns None when the value fits, else what it should be ----------------

Check = Callable[[object], str | None]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fraction(v: object) -> str | None:
    ok = _is_number(v) and 0 <= v <= 1
    return None if ok else "a number in [0, 1]"


def count(v: object) -> str | None:
    return None if _is_int(v) and v >= 0 else "an integer >= 0"


def positive(v: object) -> str | None:
    return None if _is_int(v) and v >= 1 else "an integer >= 1"


def seconds(v: object) -> str | None:
    return None if _is_number(v) and 0 <= v < math.inf else "a number of seconds >= 0"


def gigabytes(v: object) -> str | None:
    return None if _is_number(v) and 0 <= v < math.inf else "a number of GB >= 0"


def compression(v: object) -> str | None:
    ok = _is_number(v) and v >= 1  # inf when every prunable weight is gone
    return None if ok else "a number >= 1 (or Infinity)"


def text(v: object) -> str | None:
    return None if isinstance(v, str) else "a string"


def texts(v: object) -> str | None:
    ok = isinstance(v, list) and all(isinstance(s, str) for s in v)
    return None if ok else "a list of strings"


def text_groups(v: object) -> str | None:
    ok = isinstance(v, list) and all(texts(g) is None for g in v)
    return None if ok else "a list of lists of strings"


def reasons(v: object) -> str | None:
    ok = isinstance(v, dict) and all(isinstance(r, str) for r in v.values())
    return None if ok else "an object of strings (file: reason)"


def fractions(v: object) -> str | None:
    ok = isinstance(v, list) and len(v) > 0 and all(fraction(x) is None for x in v)
    return None if ok else "a non-empty list of numbers in [0, 1]"


def losses(v: object) -> str | None:
    ok = isinstance(v, list) and len(v) > 0 and all(_is_number(x) and x >= 0 for x in v)
    return None if ok else "a non-empty list of numbers >= 0"


def boolean(v: object) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def integer(v: object) -> str | None:
    return None if _is_int(v) else "an integer"


def obj(v: object) -> str | None:
    return None if isinstance(v, dict) else "an object"


def optional(check: Check) -> Check:
    """``check``, or null (``data/folds`` of a run without k-fold)."""

    def _check(v: object) -> str | None:
        wanted = check(v) if v is not None else None
        return None if wanted is None else f"{wanted} or null"

    return _check


def confusion(v: object) -> str | None:
    """A square matrix of counts, one row and one column per class (rows are true classes)."""
    n = len(CLASSES)
    ok = (
        isinstance(v, list)
        and len(v) == n
        and all(isinstance(row, list) and len(row) == n for row in v)
        and all(count(c) is None for row in v for c in row)
    )
    return None if ok else f"a {n}x{n} list of lists of integers >= 0"


# -- the keys ----------------------------------------------------------------------------------

PER_CLASS = ("precision", "recall", "specificity")

# Keys with their exact names, and their types (present or not).
TYPES: dict[str, Check] = {
    "test/acc": fraction,
    "val/acc_best": fraction,
    "test/confusion": confusion,
    "dense/test/acc": fraction,
    "dense/val/acc_best": fraction,
    "dense/test/confusion": confusion,
    "dense/cache": text,  # hit, miss, resumed or off; a new cache state must not fail a job
    "dense/cache_key": optional(text),  # the dense cache entry (null with cache_dense=false)
    "params/total": count,
    "params/nonzero": count,
    "params/trainable": count,
    "params/prunable": count,
    "flops/total": count,
    "flops/nonzero": count,
    "torch/threads": positive,
    # The device the job trained on, as used (core.devices): cuda or cpu, its name, the
    # precision, and the CUDA capability (null on a CPU).
    "device/accelerator": text,
    "device/name": text,
    "device/precision": text,
    "device/cuda_capability": optional(text),
    "model/init": text,
    # Where the start weights came from (models.weights): ImageNet weights or not, the source in
    # words (a package's file, a cache, a download), a sha256 of the state loaded (null: random).
    # Jobs written before they existed lack them, so they are typed, not required.
    "model/pretrained": boolean,
    "model/weights_source": text,
    "model/weights_sha256": optional(text),
    # The input normalisation used (null: none) and where it came from (data.normalize=auto:
    # the weights' own preprocessing).
    "data/normalize_mean": optional(lambda v: None if isinstance(v, list) else "a list"),
    "data/normalize_std": optional(lambda v: None if isinstance(v, list) else "a list"),
    "data/normalize_source": text,
    # The stage whose model the job's test/* keys describe: its predictions_<stage>.csv.
    "predictions/stage": text,
    "data/source": text,
    # How the split was made: fractions, kfold or official (SFEW 2.0: train on Train, test on Val)
    "data/protocol": text,
    "data/n_train": count,
    "data/n_val": count,
    "data/n_test": count,
    "data/test_digest": text,  # the test split by identity (ids, images, labels); not required
    "data/folds": optional(positive),
    "data/fold": optional(count),
    "data/images_found": count,
    "data/faces_detected": count,
    "data/faces_fallback": count,
    "data/faces_uncropped": count,  # data.crop=none: not cropped (no detection tried)
    "data/faces_manual": count,
    "data/faces_multiple": count,
    "data/faces_detect_failed": count,
    "data/unreadable": count,
    "data/unreadable_files": texts,
    "data/crop_cache_hits": count,
    # Every file under the data root: used, or ignored with a reason (data.layout).
    "data/files_under_root": count,
    "data/root_digest": text,  # which files lie under data.root (a relaunch compares it)
    "data/images_nested": count,  # in subfolders of a class folder, used under that class
    "data/class_folders_pooled": text_groups,  # class folders that differ only in case
    "data/ignored": count,
    "data/ignored_files": reasons,
    # Byte-identical images (data.duplicates): counts of images, and the groups by file.
    "data/duplicate_groups": count,
    "data/duplicates_same_class": count,
    "data/duplicates_cross_class": count,
    "data/duplicates_dropped": count,
    "data/duplicate_files": text_groups,
    # data.split=official: Train copies of Val images, dropped so no test image is trained on
    "data/official_train_copies_dropped": count,
    "data/official_train_copies_files": texts,
    "data/train_dropped_per_epoch": count,  # a last training batch of 1 image, dropped (0 or 1)
    "data/classes_missing": obj,  # {split: [classes with no image in it]}
    "prune/sparsity": fraction,
    "prune/mask_sparsity": fraction,
    "prune/compression": compression,
    "prune/acc_before_retrain": fraction,
    "prune/val_acc_before_retrain": fraction,
    "prune/layers_fully_pruned": count,
    "prune/rewind_check": text,  # "ok": the start weights were checked bit for bit
    "prune/layers_near_collapse": count,  # layers left below prune.min_layer_density
    "prune/units_removed_frac": fraction,
    "prune/units_removed": count,
    "prune/units_total": count,
    "prune/units_revived": count,
    "prune/similar_pairs": count,
    "prune/complementary_pairs": count,
    # stability.enabled: the line from the retrained model (alpha 0) to a second retraining with
    # other SGD noise (alpha 1), BatchNorm statistics recomputed at each point.
    "stability/seed_b": integer,
    "stability/alphas": fractions,
    "stability/bn_layers_recomputed": count,
    "stability/b/test/acc": fraction,
    "stability/b/val/acc_best": fraction,
    "stability/val/acc": fractions,
    "stability/test/acc": fractions,
    "stability/val/loss": losses,
    "stability/test/loss": losses,
    "stability/val/barrier": fraction,
    "stability/test/barrier": fraction,
    "stability/identical_ends": boolean,
    # at alpha 0.5 with the ends' BatchNorm statistics averaged, not recomputed (for contrast)
    "stability/val/acc_mid_bn_interpolated": fraction,
    "stability/test/acc_mid_bn_interpolated": fraction,
    "time/stability_s": seconds,
    "time/data_s": seconds,
    "time/dense_s": seconds,
    "time/prune_s": seconds,
    "time/retrain_s": seconds,
    "time/test_s": seconds,
    "time/angles_s": seconds,
    "time/total_s": seconds,
    # Peak GPU memory of the job (only on a GPU: not in EVERY_JOB).
    "gpu/max_memory_allocated_gb": gigabytes,
    "gpu/max_memory_reserved_gb": gigabytes,
    "config": obj,
}

# Families of keys, by pattern: per class, per layer.
PATTERNS: list[tuple[re.Pattern, Check]] = [
    (re.compile(rf"(dense/)?test/({'|'.join(PER_CLASS)})/[^/]+"), fraction),
    (re.compile(r"prune/units_(removed|revived)/.+"), count),
    (re.compile(r"prune/sparsity/.+"), fraction),  # per prunable layer
]
# ``round<r>/<key>`` (IMP, per round) has the type of ``<key>``.
ROUND_PREFIX = re.compile(r"round([1-9][0-9]*)/(.+)")


def _per_class(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}test/{kind}/{c}" for kind in PER_CLASS for c in CLASSES)


# What every job writes: dense-only or pruned, one fold or not, retrained or not.
EVERY_JOB: tuple[str, ...] = (
    "test/acc",
    "val/acc_best",
    "test/confusion",
    *_per_class(""),
    "dense/test/acc",
    "dense/val/acc_best",
    "dense/test/confusion",
    *_per_class("dense/"),
    "dense/cache",
    "params/total",
    "params/nonzero",
    "params/trainable",
    "flops/total",
    "flops/nonzero",
    "torch/threads",
    "device/accelerator",
    "device/name",
    "device/precision",
    "device/cuda_capability",
    "model/init",
    "predictions/stage",
    "data/source",
    "data/protocol",
    "data/n_train",
    "data/n_val",
    "data/n_test",
    "data/folds",
    "data/fold",
    "time/data_s",
    "time/dense_s",
    "time/total_s",
    "config",
)
# And a job that prunes (``core.criteria.prunes``).
PRUNED = (
    "prune/sparsity",
    "prune/mask_sparsity",
    "prune/compression",
    "prune/acc_before_retrain",
    "prune/val_acc_before_retrain",
    "prune/layers_fully_pruned",
    "prune/rewind_check",
    "prune/layers_near_collapse",
    "params/prunable",
    "time/prune_s",
    "time/retrain_s",
)
DISTINCTIVENESS = (
    "prune/units_removed_frac",
    "prune/units_removed",
    "prune/units_total",
    "prune/similar_pairs",
    "prune/complementary_pairs",
    "time/angles_s",
)
# What a gradual job (prune.schedule=gradual) does not write: it never holds a pruned model
# that has not trained.
NOT_GRADUAL = ("prune/acc_before_retrain", "prune/val_acc_before_retrain")
# And a job that removes whole units by magnitude, gradient or at random (prune.granularity).
UNITS = ("prune/units_removed_frac", "prune/units_removed", "prune/units_total")
# And a job with stability.enabled=true.
STABILITY = (
    "stability/seed_b",
    "stability/alphas",
    "stability/bn_layers_recomputed",
    "stability/val/acc",
    "stability/test/acc",
    "stability/val/loss",
    "stability/test/loss",
    "stability/val/barrier",
    "stability/test/barrier",
    "time/stability_s",
)
# And, per criterion, the keys every job of it writes.
BY_METHOD: dict[str, tuple[str, ...]] = {"distinctiveness": DISTINCTIVENESS}
# And, with prune.iterations = n > 1, for r = 1..n: round<r>/<key>.
ROUND = ("test/acc", "val/acc_best", "prune/sparsity", "prune/acc_before_retrain")
# What the report cannot do without (a file from an older version may lack the rest).
USABLE = ("test/acc", "val/acc_best", "config")


def type_of(key: str) -> Check | None:
    """The type of ``key``, or None for a key the schema does not know."""
    match = ROUND_PREFIX.fullmatch(key)
    if match:
        key = match.group(2)
    if key in TYPES:
        return TYPES[key]
    return next((check for pattern, check in PATTERNS if pattern.fullmatch(key)), None)


def _prune_settings(config: object) -> tuple[str | None, int]:
    """The config's pruning method when it prunes (else None), and its IMP rounds.

    Whether it prunes is ``core.criteria.prunes``, as for the job that wrote it.
    """
    prune = config.get("prune") if isinstance(config, dict) else None
    if not isinstance(prune, dict):
        return None, 1
    method = prune.get("method")
    active = prunes(method, prune.get("ratio"))
    rounds = prune.get("iterations")
    return (method if active else None), (rounds if _is_int(rounds) and rounds > 1 else 1)


def _prune_option(config: object, key: str) -> object:
    prune = config.get("prune") if isinstance(config, dict) else None
    return prune.get(key) if isinstance(prune, dict) else None


def required(results: dict, complete: bool = True) -> list[str]:
    """The keys ``results`` must hold, given its config: all of them, or what the report needs."""
    config = results.get("config")
    config = upgrade(config) if isinstance(config, dict) else config
    method, rounds = _prune_settings(config)
    if not complete:
        return list(USABLE) + (["prune/sparsity"] if method else [])
    keys = list(EVERY_JOB)
    if method:
        keys += PRUNED
    if method:
        keys += BY_METHOD.get(method, ())
    if method and _prune_option(config, "schedule") == "gradual":
        keys = [k for k in keys if k not in NOT_GRADUAL]  # no moment between pruning and training
    if method and _prune_option(config, "granularity") == "unit":
        keys += [k for k in UNITS if k not in keys]
    stability = config.get("stability") if isinstance(config, dict) else None
    if method and isinstance(stability, dict) and stability.get("enabled") is True:
        keys += STABILITY
    if method and rounds > 1:
        keys += [f"round{r}/{k}" for r in range(1, rounds + 1) for k in ROUND]
    return keys


def _show(value: object) -> str:
    shown = json.dumps(value, default=str)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def problems(results: object, complete: bool = True) -> list[str]:
    """What is wrong with ``results`` (empty when nothing): missing keys, then wrong types."""
    if not isinstance(results, dict):
        return [f"not a JSON object but {type(results).__name__} {_show(results)}"]
    missing = [k for k in required(results, complete) if k not in results]
    out = []
    if missing:
        out.append(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for key, value in results.items():
        check = type_of(key)
        wanted = check(value) if check else None
        if wanted:
            out.append(f"{key} is {_show(value)}, not {wanted}")
    return out


def unknown_keys(results: dict) -> list[str]:
    """Keys the schema does not know (allowed, but a new key belongs in the tables above)."""
    return [k for k in results if type_of(k) is None]


def check_results(results: dict, path: str | Path = paths.RESULTS) -> None:
    """Raise ResultsError naming each missing or mistyped key; call it before writing ``path``."""
    found = problems(results, complete=True)
    if found:
        where = f"{path} not written: the results break its schema (a bug in fer_lottery)"
        raise ResultsError(where, found)


def read_results(path: str | Path) -> dict:
    """A results.json's contents when the report can use them; else ResultsError saying why."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(str(path), ["not text (UTF-8)"]) from None
    except OSError as exc:
        raise ResultsError(str(path), [f"cannot read it ({exc.strerror or exc})"]) from None
    if not raw.strip():
        raise ResultsError(str(path), ["empty"])
    try:
        results = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise ResultsError(str(path), [f"not valid JSON ({where})"]) from None
    found = problems(results, complete=False)
    if found:
        raise ResultsError(str(path), found)
    return results
