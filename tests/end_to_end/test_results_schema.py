"""The results.json schema: real jobs of every kind fit it, and faults are named by key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fer_lottery.store.results import (
    ResultsError,
    check_results,
    problems,
    read_results,
    required,
    unknown_keys,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
KINDS = sorted(p.stem for p in FIXTURES.glob("*.json"))


def real(kind: str) -> dict:
    """A results.json written by a tiny synthetic run of this kind (see tests/fixtures/results)."""
    return json.loads((FIXTURES / f"{kind}.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_real_job_fits_the_schema(kind):
    results = real(kind)
    assert problems(results) == []
    assert unknown_keys(results) == []  # a new key belongs in fer_lottery.store.results
    check_results(results)


def test_the_keys_a_job_must_write_follow_its_config():
    dense, pruned, imp = real("dense"), real("magnitude"), real("magnitude_imp2")
    distinct = real("distinctiveness_paper_b")
    assert "prune/sparsity" not in required(dense) and "prune/sparsity" in required(pruned)
    assert "prune/sparsity" in required(real("magnitude_retrain0"))
    assert "prune/units_removed" in required(distinct)
    assert "prune/units_removed" not in required(pruned)
    assert {"round1/test/acc", "round2/prune/sparsity"} <= set(required(imp))
    assert not any(k.startswith("round") for k in required(pruned))
    for results, key in [
        (pruned, "prune/sparsity"),
        (imp, "round2/test/acc"),
        (distinct, "prune/units_total"),
        (dense, "test/recall/Fear"),
        (dense, "dense/test/confusion"),
    ]:
        broken = {k: v for k, v in results.items() if k != key}
        assert problems(broken) == [f"missing key {key}"]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("test/acc", 1.5, "test/acc is 1.5, not a number in [0, 1]"),
        ("test/acc", "0.5", 'test/acc is "0.5", not a number in [0, 1]'),
        ("test/acc", float("nan"), "test/acc is NaN, not a number in [0, 1]"),
        ("val/acc_best", None, "val/acc_best is null, not a number in [0, 1]"),
        ("test/confusion", [[1] * 7] * 6, "test/confusion is"),
        ("test/confusion", [[1] * 7] * 6 + [[1] * 6 + [-1]], "not a 7x7 list of lists"),
        ("dense/test/precision/Sad", -0.1, "dense/test/precision/Sad is -0.1"),
        ("params/total", True, "params/total is true, not an integer >= 0"),
        ("data/n_test", 10.0, "data/n_test is 10.0, not an integer >= 0"),
        ("torch/threads", 0, "torch/threads is 0, not an integer >= 1"),
        ("dense/cache", 3, "dense/cache is 3, not a string"),
        ("prune/compression", 0.5, "prune/compression is 0.5, not a number >= 1"),
        ("round2/test/acc", 2, "round2/test/acc is 2, not a number in [0, 1]"),
        ("prune/units_removed/layer1.0.conv1", -3, "prune/units_removed/layer1.0.conv1 is -3"),
        ("gpu/max_memory_reserved_gb", -1.0, "gpu/max_memory_reserved_gb is -1.0, not a number"),
        ("config", [], "config is [], not an object"),
    ],
)
def test_a_wrong_type_or_range_is_named(key, value, says):
    results = real("magnitude_imp2")
    results[key] = value
    found = problems(results)
    assert len(found) == 1 and says in found[0], found


def test_values_that_fit():
    results = real("magnitude")
    results["prune/compression"] = float("inf")  # every prunable weight gone
    results["data/folds"], results["data/fold"] = 5, 0
    results["data/unreadable_files"] = ["Angry/x.png"]
    results["gpu/max_memory_allocated_gb"] = 1.25  # written on a GPU only: not required
    results["gpu/max_memory_reserved_gb"] = 2
    assert problems(results) == [] and unknown_keys(results) == []
    assert problems(real("dense")) == []  # data/folds and data/fold are null without k-fold


def test_results_of_an_older_version_are_still_usable():
    """The report needs test/acc, val/acc_best and config; a newer key may be missing."""
    newer = ("torch/threads", "flops/total")
    older = {k: v for k, v in real("magnitude").items() if k not in newer}
    assert problems(older, complete=False) == []
    assert problems(older) == ["missing keys flops/total, torch/threads"]
    for key in ("test/acc", "val/acc_best", "config", "prune/sparsity"):
        lacking = {k: v for k, v in older.items() if k != key}
        assert problems(lacking, complete=False) == [f"missing key {key}"]
    older["test/acc"] = "high"  # a key present must still have its type
    assert problems(older, complete=False) == ['test/acc is "high", not a number in [0, 1]']


def test_read_results_names_what_is_wrong(tmp_path):
    path = tmp_path / "results.json"
    text = json.dumps(real("dense"), indent=2)
    cases = [
        (text[: len(text) // 2], "not valid JSON (line "),
        ('{\n  "test/acc": 0.5,\n}', "not valid JSON (line 3 column 1: "),
        ("", "empty"),
        ("[1, 2]", "not a JSON object but list [1, 2]"),
        (json.dumps({"test/acc": 0.5, "val/acc_best": 0.5}), "missing key config"),
        (json.dumps({"val/acc_best": 0.5, "config": {}}), "missing key test/acc"),
    ]
    for content, says in cases:
        path.write_text(content)
        with pytest.raises(ResultsError) as info:
            read_results(path)
        assert info.value.reasons[0].startswith(says), (content[:40], info.value.reasons)
        assert str(path) in str(info.value)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ResultsError, match="not text"):
        read_results(path)
    path.write_text(text)
    assert read_results(path) == json.loads(text)


def test_check_results_names_every_bad_key():
    results = real("dense")
    del results["test/acc"], results["config"]
    results["data/n_test"] = -1
    with pytest.raises(ResultsError) as info:
        check_results(results, "run/results.json")
    message = str(info.value)
    assert message.startswith("run/results.json not written")
    assert "missing keys test/acc, config" in message
    assert "data/n_test is -1, not an integer >= 0" in message


@pytest.mark.parametrize(
    ("method", "ratio", "iterations"),
    [("magnitude", 0.0, 1), ("magnitude", 0.5, 1), ("random", 0.9, 3), ("none", 0.5, 1)]
    + [("distinctiveness", 0.0, 1), ("distinctiveness", 0.0, 2)],
)
def test_pruned_keys_are_required_exactly_when_the_pipeline_prunes(method, ratio, iterations):
    from fer_lottery.config import run_prunes

    results = copy.deepcopy(real("dense"))
    prune = results["config"]["prune"]
    prune.update(method=method, ratio=ratio, iterations=iterations)
    prunes = run_prunes(OmegaConf.create(results["config"]))
    assert prunes == (method == "distinctiveness" or (method != "none" and ratio > 0))
    assert ("prune/sparsity" in required(results)) == prunes
    assert ("round2/test/acc" in required(results)) == (prunes and iterations > 1)


def test_the_pipeline_refuses_to_write_results_that_break_the_schema(
    run_job, monkeypatch, tmp_path
):
    """A job whose results break the schema fails, naming the key, and writes no results.json."""
    import fer_lottery.experiment.runner as pipeline

    set_threads = pipeline.set_threads
    monkeypatch.setattr(pipeline, "set_threads", lambda n: set_threads(n) * 0)  # a bug: 0 threads
    with pytest.raises(ResultsError, match=r"torch/threads is 0, not an integer >= 1") as info:
        run_job("bad", "trainer.max_epochs=1")
    assert "results.json not written" in str(info.value)
    assert (tmp_path / "bad").is_dir() and not (tmp_path / "bad" / "results.json").exists()
