"""data.split=official, SFEW 2.0's own protocol (#19 point 5): train on Train (validation carved
from it, stratified), test on every Val image; no Val image is ever trained or validated on, and
split.json and results.json say which protocol ran."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lottery.core.classes import CLASSES
from fer_lottery.core.errors import DataError
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.data.split import official_split
from fer_lottery.report.build import build, protocol_line
from fer_lottery.report.collect import Job
from tests.helpers import TINY_SFEW_UNCROPPED, run_cli

# Small frames, resized whole (no face detection): the split is under test, not the crops.
UNCROPPED = ("data.crop=none", "data.image_size=32", "data.batch_size=8")


def write_sfew2(root: Path, train: int = 4, val: int = 2, seed: int = 0) -> Path:
    """``root/Train/<Class>/`` and ``root/Val/<Class>/`` of small noise PNGs (no two alike)."""
    rng = np.random.default_rng(seed)
    for folder, n in (("Train", train), ("Val", val)):
        for name in CLASSES:
            (root / folder / name).mkdir(parents=True)
            for j in range(n):
                pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / folder / name / f"{folder}_{name}_{j}.png")
    return root


def _ids(root: Path, folder: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.png")}


def _datamodule(compose_cfg, root, tmp_path, *overrides, run="run"):
    cfg = compose_cfg(f"data.root={root}", "data.split=official", *UNCROPPED, *overrides)
    dm = FaceDataModule(cfg.data, tmp_path / run, seed=0, cache_dir=tmp_path / "cache")
    dm.setup()
    return dm, json.loads((tmp_path / run / "split.json").read_text())


# -- the real CLI ------------------------------------------------------------------------------


def test_official_run_tests_on_val_only_and_records_the_protocol(tmp_path):
    """The acceptance test: on a hand-made SFEW 2.0 layout, split.json's test is exactly the Val
    files, and no Val image, nor a Train copy of one, is trained or validated on."""
    root = write_sfew2(tmp_path / "SFEW2")
    val_image = root / "Val" / "Happy" / "Val_Happy_0.png"
    shutil.copy(val_image, root / "Train" / "Happy" / "copy_of_val.png")
    run_dir = tmp_path / "run"
    run_cli(
        f"data.root={root}",
        "data.split=official",
        *TINY_SFEW_UNCROPPED,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    split = json.loads((run_dir / "split.json").read_text())
    val = _ids(root, "Val")
    assert set(split["test"]) == val and len(split["test"]) == 14
    assert not val & set(split["train"] + split["val"])
    assert "Train/Happy/copy_of_val.png" not in split["train"] + split["val"] + split["test"]
    assert set(split["train"] + split["val"]) == _ids(root, "Train") - {
        "Train/Happy/copy_of_val.png"
    }
    assert split["protocol"] == "official" and split["test_from"] == "Val"
    assert split["official_val_fraction"] == 0.15 and "fractions" not in split
    assert split["counts"] == {"train": 21, "val": 7, "test": 14}  # one val image per class
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data/protocol"] == "official"
    assert results["data/official_train_copies_dropped"] == 1
    assert results["data/official_train_copies_files"] == ["Train/Happy/copy_of_val.png"]
    assert results["data/n_test"] == 14 and results["data/n_train"] + results["data/n_val"] == 28
    md = build([run_dir], tmp_path / "report")
    assert "Protocol: official SFEW 2.0 (train on Train, test on Val).\n" in md.split("## ")[0]


def test_the_report_names_each_protocol_and_counts_older_jobs_as_fractions():
    def job(**results):
        return Job(dir=Path("run"), results=results, config={})

    assert protocol_line([job(**{"data/protocol": "official"})]) == (
        "Protocol: official SFEW 2.0 (train on Train, test on Val).\n"
    )
    line = protocol_line(
        [job(**{"data/protocol": "official"}), job(), job(**{"data/folds": 5, "data/fold": 0})]
    )
    assert line == (
        "Protocol: official SFEW 2.0 (train on Train, test on Val): 1 job(s); stratified "
        "fractions of the pooled images (data.split): 1 job(s); k-fold cross-validation "
        "(data.folds): 1 job(s).\n"
    )


def test_official_on_the_single_folder_layout_exits_2_in_one_line(tmp_path):
    root = tmp_path / "SFEW"
    write_sfew2(tmp_path / "made", train=2, val=0)
    shutil.move(tmp_path / "made" / "Train", root)  # root/<Class>/*.png
    proc = run_cli(
        f"data.root={root}",
        "data.split=official",
        *TINY_SFEW_UNCROPPED,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "data.split=official" in line and str(root) in line and "single-folder" in line
    assert "Train/<Class>/" in line and "data.split=[0.7,0.15,0.15]" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "split.json").exists()


# -- the data module -------------------------------------------------------------------------


def test_the_default_protocol_is_recorded_and_pools_train_and_val(compose_cfg, tmp_path):
    root = write_sfew2(tmp_path / "SFEW2", train=3, val=3)
    cfg = compose_cfg(f"data.root={root}", *UNCROPPED)
    dm = FaceDataModule(cfg.data, tmp_path / "run", seed=0, cache_dir=tmp_path / "cache")
    dm.setup()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["protocol"] == dm.stats["data/protocol"] == "fractions"
    assert split["fractions"] == [0.7, 0.15, 0.15] and "test_from" not in split
    assert any(i.startswith("Train/") for i in split["test"])  # pooled, as before
    assert "data/official_train_copies_dropped" not in dm.stats


def test_kfold_records_its_protocol(compose_cfg, tmp_path):
    cfg = compose_cfg("data=synthetic", "data.image_size=32", "data.folds=3", "data.fold=1")
    dm = FaceDataModule(cfg.data, tmp_path / "run", seed=0)
    dm.setup()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["protocol"] == dm.stats["data/protocol"] == "kfold" and split["fold"] == 1


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_train_copies_of_a_val_image_are_dropped_named_and_counted(
    compose_cfg, tmp_path, caplog, policy
):
    root = write_sfew2(tmp_path / "SFEW2")
    val_image = root / "Val" / "Sad" / "Val_Sad_1.png"
    shutil.copy(val_image, root / "Train" / "Sad" / "same_class.png")
    shutil.copy(val_image, root / "Train" / "Angry" / "other_class.png")
    train_copy = root / "Train" / "Fear" / "Train_Fear_0.png"  # copies within Train: together
    shutil.copy(train_copy, root / "Train" / "Fear" / "again.png")
    caplog.set_level(logging.WARNING)
    for seed in range(3):
        dm, split = _datamodule(
            compose_cfg, root, tmp_path, f"data.split_seed={seed}", f"data.duplicates={policy}"
        )
        trained = set(split["train"] + split["val"])
        assert not {"Train/Sad/same_class.png", "Train/Angry/other_class.png"} & trained
        assert not _ids(root, "Val") & trained
        if policy == "keep":
            assert set(split["test"]) == _ids(root, "Val")  # the Val copy stays in test
            where = {n for n in ("train", "val") for i in split[n] if "Fear_0" in i or "again" in i}
            assert len(where) == 1, f"split_seed={seed}: the Train copies straddle splits"
    assert dm.stats["data/official_train_copies_dropped"] == 2
    assert dm.stats["data/official_train_copies_files"] == [
        "Train/Angry/other_class.png",
        "Train/Sad/same_class.png",
    ]
    assert dm.stats["data/duplicate_groups"] == 2
    if policy == "keep":
        assert dm.stats["data/duplicates_dropped"] == 2
    else:  # and the cross-class Val copy (no label to trust), and one of the Fear pair
        assert dm.stats["data/duplicates_dropped"] == 4
        assert "Val/Sad/Val_Sad_1.png" not in split["test"]
    assert "Train/Sad/same_class.png" in caplog.text and "Train copies are dropped" in caplog.text


def test_duplicates_error_refuses_a_train_copy_of_a_val_image(compose_cfg, tmp_path):
    root = write_sfew2(tmp_path / "SFEW2", train=2, val=1)
    shutil.copy(root / "Val" / "Sad" / "Val_Sad_0.png", root / "Train" / "Sad" / "copy.png")
    with pytest.raises(DataError, match=r"data\.duplicates=error: 1 group.*Train/Sad/copy\.png"):
        _datamodule(compose_cfg, root, tmp_path, "data.duplicates=error")


def test_official_needs_a_val_folder(compose_cfg, tmp_path):
    root = write_sfew2(tmp_path / "SFEW2", train=2, val=1)
    shutil.rmtree(root / "Val")
    with pytest.raises(DataError, match=r"no Val/ folder: use the SFEW 2.0 layout") as info:
        _datamodule(compose_cfg, root, tmp_path)
    assert "\n" not in str(info.value)


# -- official_split ----------------------------------------------------------------------------

# Train: 100 per class (75 of class 1); Val: 20 per class, after them (the inventory's order).
TRAIN_LABELS = [c for c in range(7) for _ in range(75 if c == 1 else 100)]
LABELS = TRAIN_LABELS + [c for c in range(7) for _ in range(20)]
IN_TEST = [False] * len(TRAIN_LABELS) + [True] * 140


def test_official_split_tests_on_val_and_carves_val_from_train_by_class():
    split = official_split(LABELS, IN_TEST, 0.15, seed=1)
    assert split["test"] == list(range(len(TRAIN_LABELS), len(LABELS)))
    assert sorted(split["train"] + split["val"]) == list(range(len(TRAIN_LABELS)))
    per_class = Counter(LABELS[i] for i in split["val"])
    assert per_class == {0: 15, 1: 11, 2: 15, 3: 15, 4: 15, 5: 15, 6: 15}  # 15% of 100 and of 75
    more = official_split(LABELS, IN_TEST, 0.3, seed=1)
    assert Counter(LABELS[i] for i in more["val"])[0] == 30


def test_official_split_is_reproducible_and_follows_the_seed():
    a = official_split(LABELS, IN_TEST, 0.15, seed=1)
    assert a == official_split(LABELS, IN_TEST, 0.15, seed=1)
    b = official_split(LABELS, IN_TEST, 0.15, seed=2)
    assert a["val"] != b["val"] and a["test"] == b["test"]


def test_official_split_keeps_train_copies_together_and_refuses_straddling_ones():
    labels, in_test = [0] * 10 + [0] * 2, [False] * 10 + [True] * 2
    for seed in range(8):
        split = official_split(labels, in_test, 0.3, seed, groups=[[0, 1, 2]])
        assert len({n for n in ("train", "val") for i in (0, 1, 2) if i in split[n]}) == 1
    with pytest.raises(ValueError, match="straddles Train and Val"):
        official_split(labels, in_test, 0.3, 0, groups=[[3, 10]])
