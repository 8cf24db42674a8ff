"""Per-image predictions of a stage's final model: ``predictions_<stage>.csv`` in the run folder.

One row per image of the test split, then of the validation split, each in the order of
``split.json``: ``split, item, label, pred, p_<Class>`` for the 7 classes (softmax
probabilities). The item is the id ``split.json`` gives it (the image's path under the data
root, or ``synthetic/<Class>/<n>``), so two runs on the same split can be compared image by
image (McNemar's test in the report) and an image a pruned model gets wrong can be looked up.
Only the test and validation splits: at most 675 rows for the 675-image SFEW release.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_lottery.core import paths
from fer_lottery.store.atomic import write_atomic

HEAD = ("split", "item", "label", "pred")


@dataclass
class Predictions:
    """One split's predictions: item ids, true and predicted class indices, probabilities."""

    items: list[str]
    labels: np.ndarray  # int, (n,)
    preds: np.ndarray  # int, (n,)
    probs: np.ndarray  # float, (n, classes)

    @property
    def correct(self) -> np.ndarray:
        return self.labels == self.preds


def write_predictions(
    out_dir: Path, stage: str, classes: list[str], splits: dict[str, Predictions]
) -> Path:
    """Write a stage's predictions (atomically); returns the file's path."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*HEAD, *(f"p_{c}" for c in classes)])
    for name, p in splits.items():
        for i, item in enumerate(p.items):
            probs = [f"{float(v):.6g}" for v in p.probs[i]]
            writer.writerow([name, item, int(p.labels[i]), int(p.preds[i]), *probs])
    path = paths.predictions_csv(out_dir, stage)
    text = buf.getvalue()
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path


def read_predictions(path: Path) -> dict[str, Predictions]:
    """The predictions of a ``predictions_<stage>.csv``, by split."""
    rows: dict[str, list[list[str]]] = {}
    with Path(path).open(newline="") as f:
        reader = csv.reader(f)
        head = next(reader)
        n_probs = len(head) - len(HEAD)
        for row in reader:
            rows.setdefault(row[0], []).append(row)
    out = {}
    for name, group in rows.items():
        out[name] = Predictions(
            items=[r[1] for r in group],
            labels=np.array([int(r[2]) for r in group], dtype=np.int64),
            preds=np.array([int(r[3]) for r in group], dtype=np.int64),
            probs=np.array([[float(v) for v in r[4:]] for r in group]).reshape(-1, n_probs),
        )
    return out


def run_predictions(run_dir: Path, results: dict) -> Path | None:
    """The predictions file of a finished job's final model (``predictions/stage``), or None
    when the job does not have one (written by an older version)."""
    stage = results.get("predictions/stage")
    if not stage:
        return None
    path = paths.predictions_csv(run_dir, stage)
    return path if path.is_file() else None
