"""Per-image predictions (``predictions_<stage>.csv``): every test and validation image once, in
split order, agreeing with the stage's own test accuracy, and the same from the dense cache."""

from __future__ import annotations

import json

import numpy as np

from fer_lottery.store.predictions import read_predictions, run_predictions
from tests.helpers import TINY_SYNTHETIC_BATCH32, run_cli

JOB = (*TINY_SYNTHETIC_BATCH32, "prune.method=magnitude", "retrain.epochs=1")


def test_each_stage_writes_its_predictions(tmp_path):
    run_cli(*JOB, "prune.ratio=0.5", "hydra.run.dir=a", cwd=tmp_path)
    run_cli(*JOB, "prune.ratio=0.9", "hydra.run.dir=b", cwd=tmp_path)  # dense from the cache
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    for job in ("a", "b"):
        results = json.loads((tmp_path / job / "results.json").read_text())
        assert results["predictions/stage"] == "retrain"
        final = read_predictions(run_predictions(tmp_path / job, results))
        for name in ("test", "val"):
            assert final[name].items == split[name]  # every image once, in split order
            np.testing.assert_allclose(final[name].probs.sum(1), 1.0, atol=1e-4)
            assert (final[name].preds == final[name].probs.argmax(1)).all()
        # The test rows are the stage's own test: the same accuracy and confusion matrix.
        test = final["test"]
        assert abs(test.correct.mean() - results["test/acc"]) < 1e-6
        confusion = np.zeros((7, 7), dtype=int)
        np.add.at(confusion, (test.labels, test.preds), 1)
        assert confusion.tolist() == results["test/confusion"]
        dense = read_predictions(tmp_path / job / "predictions_dense.csv")
        assert abs(dense["test"].correct.mean() - results["dense/test/acc"]) < 1e-6
    assert json.loads((tmp_path / "b" / "results.json").read_text())["dense/cache"] == "hit"
    # The dense stage's predictions come with its cache entry, unchanged.
    assert (tmp_path / "a" / "predictions_dense.csv").read_text() == (
        tmp_path / "b" / "predictions_dense.csv"
    ).read_text()
