"""Every file under the data root is used or named, and copies of one image never straddle splits
(#15 rows 2 and 3)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from fer_lottery.core.errors import DataError
from fer_lottery.data.datamodule import FaceDataModule

UNCROPPED = ("data.crop=none", "data.image_size=32", "data.batch_size=8")


def _setup(compose_cfg, root, tmp_path, *overrides, run="run"):
    cfg = compose_cfg(f"data.root={root}", *UNCROPPED, *overrides)
    dm = FaceDataModule(cfg.data, tmp_path / run, seed=0, cache_dir=tmp_path / "cache")
    dm.setup()
    split = json.loads((tmp_path / run / "split.json").read_text())
    where = {item: name for name in ("train", "val", "test") for item in split[name]}
    return dm, where


def _dir(root, cls):
    """The class folder, whatever its case (tests/conftest.py varies it)."""
    return next(p for p in root.iterdir() if p.name.lower() == cls.lower())


def _frames(root, cls):
    return sorted(_dir(root, cls).glob("*.png"))


def _id(path, root):
    return path.relative_to(root).as_posix()


def test_copy_under_another_class_is_named_counted_and_kept_in_one_split(
    compose_cfg, sfew_root, tmp_path, caplog
):
    original = _frames(sfew_root, "Angry")[0]
    copy = _dir(sfew_root, "Sad") / "copied_from_angry.png"
    shutil.copy(original, copy)
    caplog.set_level(logging.WARNING)
    for seed in range(6):  # without grouping, some seed puts the two in different splits
        dm, where = _setup(compose_cfg, sfew_root, tmp_path, f"data.split_seed={seed}")
        a, b = _id(original, sfew_root), _id(copy, sfew_root)
        assert where[a] == where[b], f"split_seed={seed}: the copies straddle splits"
    assert dm.stats["data/duplicates_cross_class"] == 2
    assert dm.stats["data/duplicate_files"] == [[a, b]]
    assert dm.stats["data/duplicates_dropped"] == 0
    assert a in caplog.text and b in caplog.text and "another class" in caplog.text


def test_copies_within_a_class_all_go_to_one_split(compose_cfg, sfew_root, tmp_path):
    frames = _frames(sfew_root, "Happy")
    for k in range(4):  # five copies of one frame among eight Happy images
        shutil.copy(frames[0], _dir(sfew_root, "Happy") / f"copy_{k}.png")
    copies = {_id(frames[0], sfew_root), *(f"happy/copy_{k}.png" for k in range(4))}
    for seed in range(4):
        dm, where = _setup(compose_cfg, sfew_root, tmp_path, f"data.split_seed={seed}")
        assert len({where[c] for c in copies}) == 1, f"split_seed={seed}: copies straddle splits"
        assert sum(dm.stats[f"data/n_{s}"] for s in ("train", "val", "test")) == 25
    assert dm.stats["data/duplicates_same_class"] == 5
    assert dm.stats["data/duplicates_cross_class"] == 0


def test_kfold_keeps_copies_in_one_fold(compose_cfg, sfew_root, tmp_path):
    frames = _frames(sfew_root, "Fear")
    shutil.copy(frames[1], _dir(sfew_root, "Fear") / "again.png")
    pair = {"Fear/" + frames[1].name, "Fear/again.png"}
    for fold in range(3):
        _, where = _setup(compose_cfg, sfew_root, tmp_path, "data.folds=3", f"data.fold={fold}")
        assert len({where[c] for c in pair}) == 1


def test_drop_keeps_one_copy_per_class_and_no_copy_across_classes(compose_cfg, sfew_root, tmp_path):
    shutil.copy(_frames(sfew_root, "Angry")[0], _dir(sfew_root, "Sad") / "cross.png")
    shutil.copy(_frames(sfew_root, "Happy")[0], _dir(sfew_root, "Happy") / "same.png")
    dm, where = _setup(compose_cfg, sfew_root, tmp_path, "data.duplicates=drop")
    assert dm.stats["data/duplicates_dropped"] == 3  # both cross-class copies, one same-class
    assert (
        "sad/cross.png" not in where and _id(_frames(sfew_root, "Angry")[0], sfew_root) not in where
    )
    assert (_id(_frames(sfew_root, "Happy")[0], sfew_root) in where) != ("happy/same.png" in where)
    assert len(where) == 23 - 3


def test_error_refuses_and_names_the_copies(compose_cfg, sfew_root, tmp_path):
    shutil.copy(_frames(sfew_root, "Angry")[0], _dir(sfew_root, "Sad") / "cross.png")
    with pytest.raises(DataError, match=r"data\.duplicates=error: 1 group.*sad/cross\.png \(Sad\)"):
        _setup(compose_cfg, sfew_root, tmp_path, "data.duplicates=error")


def test_no_copies_split_exactly_as_before():
    from fer_lottery.data.split import split_together, stratified_split

    labels = [i % 7 for i in range(90)]
    plain = stratified_split(labels, [0.7, 0.15, 0.15], 3)
    assert split_together(labels, [], lambda y: stratified_split(y, [0.7, 0.15, 0.15], 3)) == plain


def test_every_file_under_the_root_is_used_or_named(compose_cfg, sfew_root, tmp_path, caplog):
    nested = _dir(sfew_root, "Neutral") / "more"
    nested.mkdir()
    shutil.copy(_frames(sfew_root, "Neutral")[0], nested / "deeper.png")
    # byte-identical to a Neutral frame: a same-class copy, kept in its split
    (_dir(sfew_root, "Neutral") / "notes.txt").write_text("labels checked")
    (sfew_root / "README").write_text("SFEW")
    (sfew_root / "Contempt").mkdir()
    (sfew_root / "Contempt" / "x.png").write_bytes(_frames(sfew_root, "Fear")[0].read_bytes())
    (sfew_root / "surprise").mkdir()  # next to Surprise: pooled under one class
    shutil.copy(_frames(sfew_root, "Surprise")[1], sfew_root / "surprise" / "lower.png")
    (sfew_root / ".DS_Store").write_bytes(b"\0")
    (sfew_root / "crops.csv").write_text("file,x1,y1,x2,y2\n")
    caplog.set_level(logging.WARNING)
    dm, where = _setup(compose_cfg, sfew_root, tmp_path)
    stats = dm.stats
    assert "Neutral/more/deeper.png" in where and "surprise/lower.png" in where
    assert stats["data/images_nested"] == 1
    assert stats["data/class_folders_pooled"] == [["Surprise", "surprise"]]
    assert stats["data/ignored_files"] == {
        ".DS_Store": "not inside a class folder",
        "Contempt/x.png": "folder 'Contempt' is not one of the 7 classes",
        "Neutral/notes.txt": stats["data/ignored_files"]["Neutral/notes.txt"],
        "README": "not inside a class folder",
    }
    assert "not an image file (suffix .txt" in stats["data/ignored_files"]["Neutral/notes.txt"]
    assert stats["data/ignored"] == 4
    # used + ignored + the manual crops file = every file
    assert stats["data/files_under_root"] == stats["data/images_found"] + 4 + 1 == 21 + 2 + 5
    assert "4 file(s) under the data root are not used" in caplog.text
    assert "Surprise and surprise differ only in case" in caplog.text


def test_sfew2_test_folder_is_named_as_unlabelled(compose_cfg, sfew_frames, tmp_path):
    root = tmp_path / "SFEW2"
    for folder in sorted(p for p in sfew_frames.iterdir() if p.is_dir()):
        frames = sorted(folder.glob("*.png"))
        (root / "Train" / folder.name).mkdir(parents=True)
        shutil.copy(frames[0], root / "Train" / folder.name)
        (root / "Val" / folder.name).mkdir(parents=True)
        shutil.copy(frames[1], root / "Val" / folder.name)
    (root / "Test").mkdir()
    shutil.copy(frames[2], root / "Test" / "unlabelled.png")
    dm, _ = _setup(compose_cfg, root, tmp_path)
    assert dm.stats["data/ignored_files"] == {
        "Test/unlabelled.png": "SFEW 2.0 Test folder: it has no labels"
    }


def test_linked_folders_are_followed_and_broken_links_named(compose_cfg, sfew_root, tmp_path):
    """A class folder's link to a folder elsewhere is used, as ImageFolder does; a link loop is
    walked once; a broken link is named, never silently skipped."""
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    for i, frame in enumerate(_frames(sfew_root, "Surprise")):
        (extra / f"linked_{i}.png").write_bytes(frame.read_bytes() + b"\0" * (i + 1))
    neutral = _dir(sfew_root, "Neutral")
    (neutral / "more").symlink_to(extra, target_is_directory=True)
    (extra / "loop").symlink_to(extra, target_is_directory=True)
    (neutral / "gone.png").symlink_to(tmp_path / "missing.png")
    dm, where = _setup(compose_cfg, sfew_root, tmp_path)
    assert {f"{neutral.name}/more/linked_{i}.png" for i in range(3)} <= set(where)
    assert dm.stats["data/images_nested"] == 3
    assert dm.stats["data/ignored_files"] == {
        f"{neutral.name}/gone.png": "not a regular file (a broken link, a pipe or a socket)"
    }
    assert dm.stats["data/files_under_root"] == 21 + 3 + 1


def test_a_class_missing_from_a_split_is_named_and_recorded(
    compose_cfg, sfew_root, tmp_path, caplog
):
    for frame in _frames(sfew_root, "Disgust")[:2]:  # one Disgust image left: one split has it
        frame.unlink()
    caplog.set_level(logging.WARNING)
    dm, _ = _setup(compose_cfg, sfew_root, tmp_path)
    missing = dm.stats["data/classes_missing"]
    assert len(missing) == 2  # the one image is in one split; the other two lack it
    assert all(classes == ["Disgust"] for classes in missing.values())
    assert "has no image of Disgust" in caplog.text
