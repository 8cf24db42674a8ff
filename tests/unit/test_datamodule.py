"""FaceDataModule on real frames: counts, unreadable files, split identity, batches."""

from __future__ import annotations

import json
import shutil

import torch

from fer_lottery.data.datamodule import FaceDataModule


def _datamodule(compose_cfg, root, cache, tmp_path, *overrides, run="run"):
    cfg = compose_cfg(
        f"data.root={root}",
        "data.image_size=64",
        "data.batch_size=8",
        *overrides,
    )
    dm = FaceDataModule(cfg.data, tmp_path / run, seed=0, cache_dir=cache)
    dm.setup()
    return dm


def test_unreadable_image_is_named_skipped_and_counted(
    compose_cfg, sfew_root, crop_cache, tmp_path, caplog
):
    bad = sfew_root / "Angry" / "broken.png"
    bad.write_bytes((sfew_root / "Angry").glob("*.png").__next__().read_bytes()[:500])
    dm = _datamodule(compose_cfg, sfew_root, crop_cache, tmp_path)
    assert dm.stats["data/unreadable"] == 1
    assert dm.stats["data/unreadable_files"] == [str(bad)]
    assert "broken.png" in caplog.text
    n = sum(dm.stats[f"data/n_{s}"] for s in ("train", "val", "test"))
    assert n == 21 == dm.stats["data/images_found"] - 1
    assert dm.stats["data/faces_detected"] + dm.stats["data/faces_fallback"] == 21
    assert dm.stats["data/faces_fallback"] == 4  # every fifth frame has no face


def test_manual_crops_csv_in_root_is_used(compose_cfg, sfew_root, crop_cache, tmp_path):
    (sfew_root / "crops.csv").write_text(
        "file,x1,y1,x2,y2\nAngry/Movie_000_00000.png,10,10,200,200\n"
    )
    dm = _datamodule(compose_cfg, sfew_root, crop_cache, tmp_path)
    assert dm.stats["data/faces_manual"] == 1
    assert dm.stats["data/faces_detected"] + dm.stats["data/faces_fallback"] == 20


def test_sfew2_layout_and_split_json_identical_across_jobs(
    compose_cfg, sfew_frames, crop_cache, tmp_path
):
    root = tmp_path / "SFEW2"
    for folder in sorted(p for p in sfew_frames.iterdir() if p.is_dir()):
        frames = sorted(folder.glob("*.png"))
        for split, files in (("Train", frames[:2]), ("Val", frames[2:4])):
            (root / split / folder.name).mkdir(parents=True)
            for f in files:
                shutil.copy(f, root / split / folder.name / f.name)
    _datamodule(compose_cfg, root, crop_cache, tmp_path, run="job_a")
    b = _datamodule(compose_cfg, root, crop_cache, tmp_path, "optim.lr=0.1", run="job_b")
    split_a = json.loads((tmp_path / "job_a" / "split.json").read_text())
    assert split_a == json.loads((tmp_path / "job_b" / "split.json").read_text())
    assert sum(split_a["counts"].values()) == 21
    assert any(i.startswith("Train/") for i in split_a["train"] + split_a["val"] + split_a["test"])
    assert b.stats["data/crop_cache_hits"] == 21


def test_batches_are_normalised_and_augmented_only_in_training(compose_cfg, tmp_path):
    cfg = compose_cfg("data=synthetic", "data.synthetic.per_class=10", "data.image_size=32")
    dm = FaceDataModule(cfg.data, None, seed=0)
    dm.setup()
    images, labels = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8 and labels.dtype == torch.long
    eval_x = dm.transform(images, train=False)
    train_x = dm.transform(images, train=True)
    assert eval_x.dtype == torch.float32 and eval_x.shape == train_x.shape == (
        len(labels),
        3,
        32,
        32,
    )
    assert torch.allclose(eval_x, dm.transform(images, train=False))  # eval is deterministic
    assert not torch.allclose(eval_x, train_x)  # training batches are augmented
    assert -3 < float(eval_x.mean()) < 3  # ImageNet-normalised range
