"""FaceDataModule, the faces a job trains on: SFEW frames (folder layout -> face crops) or the
built-in synthetic faces -> stratified split -> uint8 tensors -> augmentation.

The split is one of three protocols (``data.split.PROTOCOLS``): fractions of the pooled images,
k-fold, or SFEW 2.0's official one (``data.split=official``: test on Val, train on Train).

The whole dataset (675 crops at 224 px is about 100 MB) is held in memory as uint8 tensors. Batches
are converted, augmented and normalised on the training device after transfer, so the hot loop
does no per-sample PIL work.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from fer_lottery.config import enum_value
from fer_lottery.config.schema import OFFICIAL_SPLIT
from fer_lottery.core import paths
from fer_lottery.core.classes import CLASSES
from fer_lottery.core.devices import assigned_gpu, cuda_usable
from fer_lottery.core.errors import ConfigError, DataError
from fer_lottery.core.seeding import seed_all
from fer_lottery.data.augment import (
    NORMALIZATIONS,
    MeanStd,
    normalize,
    random_affine_batch,
    to_float,
)
from fer_lottery.data.sampler import EpochShuffle
from fer_lottery.data.split import (
    SPLIT_NAMES,
    kfold_split,
    official_split,
    split_together,
    stratified_split,
    write_split,
)

log = logging.getLogger(__name__)


class FaceDataModule(pl.LightningDataModule):
    """SFEW (or the built-in synthetic faces) as in-memory tensors with a fixed stratified split."""

    def __init__(
        self,
        cfg,
        run_dir: str | Path | None = None,
        seed: int = 0,
        cache_dir: str | Path = ".cache/fer_lottery",
        drop_single_last: bool = False,
        mean_std: MeanStd | None | str = "config",
    ):
        """``drop_single_last``: drop a last training batch of one image (BatchNorm layers that
        train cannot normalise a batch of one); counted in ``data/train_dropped_per_epoch``.
        ``mean_std``: the input normalisation, resolved by the caller from the weights
        (``models.weights.normalization``); by default ``data.normalize``'s fixed values, and
        ImageNet's for ``auto``."""
        super().__init__()
        if mean_std == "config":
            kind = enum_value(cfg.normalize)
            mean_std = NORMALIZATIONS.get(kind, NORMALIZATIONS["imagenet"])
        self.mean_std = mean_std
        self.drop_single_last = drop_single_last
        self.cfg = cfg
        self.crop_cache = Path(cache_dir) / paths.CROPS
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = seed
        self.class_names = list(CLASSES)
        self.images: dict[str, torch.Tensor] = {}
        self.labels: dict[str, torch.Tensor] = {}
        self.ids: dict[str, list[str]] = {}  # item ids per split, in order (as in split.json)
        self.stats: dict[str, object] = {}
        self.copies: list[list[int]] = []  # groups of byte-identical images: one split each
        self.in_test: list[bool] | None = None  # data.split=official: which images are Val's

    # -- loading -------------------------------------------------------------------------------

    def _load_synthetic(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        from fer_lottery.data.synthetic import make_synthetic

        syn = self.cfg.synthetic
        images, labels = make_synthetic(syn.per_class, self.cfg.image_size, syn.seed)
        ids = [f"synthetic/{CLASSES[int(y)]}/{i:05d}" for i, y in enumerate(labels)]
        self.stats["data/source"] = "synthetic (not SFEW)"
        return images, labels, ids

    def _load_sfew(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        from fer_lottery.data.duplicates import resolve
        from fer_lottery.data.faces import CropParams, crop_faces, read_manual_crops
        from fer_lottery.data.layout import take_inventory

        root = Path(self.cfg.root).expanduser()
        csv = Path(self.cfg.crops_csv).expanduser() if self.cfg.crops_csv else root / "crops.csv"
        if self.cfg.crops_csv and not csv.is_file():
            raise DataError(f"data.crops_csv={csv} does not exist; fix the path or set it to null")
        inventory = take_inventory(root, used=(csv,) if csv.is_file() else ())
        items = inventory.items
        if self.protocol == OFFICIAL_SPLIT:
            _check_official_layout(root, inventory.layout, set(inventory.folders))
        manual = read_manual_crops(csv, root) if csv.is_file() else {}
        params = CropParams(
            method=enum_value(self.cfg.crop),
            size=self.cfg.image_size,
            margin=self.cfg.face_margin,
            fallback=enum_value(self.cfg.crop_fallback),
            detect_max_side=self.cfg.detect_max_side,
            batch_size=self.cfg.detect_batch_size,
        )
        # MTCNN on this job's GPU; the context is made only if a frame needs detecting.
        device = torch.device("cuda", assigned_gpu()) if cuda_usable() else torch.device("cpu")
        crops, kept, report = crop_faces(
            [p for p, _ in items], params, self.crop_cache, manual, root, device
        )
        labels = [items[i][1] for i in kept]
        ids = [items[i][0].relative_to(root).as_posix() for i in kept]
        in_val = [inventory.folders[i] == "Val" for i in kept]
        copies = resolve(
            [report.digests[i] for i in kept],
            ids,
            labels,
            enum_value(self.cfg.duplicates),
            held_out=in_val if self.protocol == OFFICIAL_SPLIT else None,
        )
        self.copies = copies.groups
        if self.protocol == OFFICIAL_SPLIT:
            self.in_test = [in_val[i] for i in copies.kept]
        self.stats.update(
            {
                "data/source": str(root),
                "data/images_found": len(items),
                "data/faces_detected": report.detected,
                "data/faces_fallback": report.fallback,
                "data/faces_uncropped": report.uncropped,
                "data/faces_manual": report.manual,
                "data/faces_multiple": report.multiple_faces,
                "data/faces_detect_failed": report.detect_failed,
                "data/unreadable": len(report.unreadable),
                "data/unreadable_files": [str(p) for p in report.unreadable],
                "data/crop_cache_hits": report.cache_hits,
                **inventory.stats(),
                **copies.stats,
            }
        )
        index = torch.tensor(copies.kept, dtype=torch.long)
        return (
            crops[index],
            torch.tensor(labels, dtype=torch.long)[index],
            [ids[i] for i in copies.kept],
        )

    def setup(self, stage: str | None = None) -> None:
        """Load, crop and split once; later calls (fit, then test) reuse the tensors."""
        if self.images:
            return
        if enum_value(self.cfg.name) == "synthetic":
            images, labels, ids = self._load_synthetic()
        else:
            images, labels, ids = self._load_sfew()
        split, fold_info = self._split(labels.tolist())
        self.stats["data/protocol"] = self.protocol
        for name in SPLIT_NAMES:
            index = torch.tensor(split[name], dtype=torch.long)
            self.images[name] = images[index].contiguous()
            self.labels[name] = labels[index]
            self.ids[name] = [ids[i] for i in split[name]]
            self.stats[f"data/n_{name}"] = len(index)
        self.stats["data/test_digest"] = self.test_digest()
        if self.run_dir is not None:
            write_split(
                self.run_dir / paths.SPLIT,
                split,
                ids,
                **self._protocol_info(),
                split_seed=self.cfg.split_seed,
                classes=self.class_names,
                **fold_info,
            )
        self.stats.update({f"data/{key}": value for key, value in fold_info.items()})
        self._missing_classes()
        self._drop_single_last()
        counts = {n: len(self.labels[n]) for n in SPLIT_NAMES}
        where = (
            "" if fold_info["folds"] is None else f", fold {fold_info['fold']}/{fold_info['folds']}"
        )
        log.info(
            "data: %s, split %s (%s, seed %d%s)",
            self.stats["data/source"],
            counts,
            self.protocol,
            self.cfg.split_seed,
            where,
        )

    @property
    def protocol(self) -> str:
        """Which split ran (``data.split.PROTOCOLS``): official, kfold or fractions."""
        if isinstance(self.cfg.split, str):
            return self.cfg.split  # config.checks admits one word: official
        return "kfold" if self.cfg.get("folds") is not None else "fractions"

    def _protocol_info(self) -> dict[str, object]:
        """What ``split.json`` says about how the split was made, besides the seed and folds."""
        if self.protocol != OFFICIAL_SPLIT:
            return {"protocol": self.protocol, "fractions": list(self.cfg.split)}
        return {
            "protocol": self.protocol,
            "test_from": "Val",
            "train_from": "Train",
            "official_val_fraction": self.cfg.official_val_fraction,
        }

    def _missing_classes(self) -> None:
        """Name, and record, the classes a split has no image of (a class with too few images).

        Their per-class scores on that split are torchmetrics' zero_division value (0), not a
        measurement; ``data/classes_missing`` says so in ``results.json``.
        """
        missing = {
            name: [c for i, c in enumerate(self.class_names) if not (self.labels[name] == i).any()]
            for name in SPLIT_NAMES
        }
        missing = {name: classes for name, classes in missing.items() if classes}
        self.stats["data/classes_missing"] = missing
        for name, classes in missing.items():
            log.warning(
                "data: the %s split has no image of %s (too few images of the class for the "
                "split fractions); per-class scores of a class a split lacks are 0 by "
                "convention, not measured (data/classes_missing)",
                name,
                ", ".join(classes),
            )

    def _drop_single_last(self) -> None:
        """Decide, and record, whether each epoch drops a last training batch of one image."""
        n, size = len(self.labels["train"]), self.cfg.batch_size
        dropped = int(self.drop_single_last and n > 1 and n % size == 1)
        self.stats["data/train_dropped_per_epoch"] = dropped
        if dropped:
            log.warning(
                "data: %d training images in batches of %d leave a last batch of 1 image, which "
                "BatchNorm cannot train on; each epoch drops it (a different image each epoch, "
                "as the order is shuffled; data/train_dropped_per_epoch=1). A batch size that "
                "leaves no single image keeps every image",
                n,
                size,
            )

    def _split(self, labels: list[int]) -> tuple[dict[str, list[int]], dict[str, int | None]]:
        """The configured split: fractions, or fold ``data.fold`` of ``data.folds`` (k-fold CV).

        With k-fold, test is the fold and val is ``split[1] / (split[0] + split[1])`` of the rest;
        ``split[2]`` is ignored.
        """
        folds, fold = self.cfg.get("folds"), self.cfg.get("fold")
        if self.protocol == OFFICIAL_SPLIT:
            if self.in_test is None:  # config.checks refuses it first, with the fix
                raise ConfigError("data.split=official needs data=sfew (SFEW 2.0's Train and Val)")
            split = official_split(
                labels,
                self.in_test,
                self.cfg.official_val_fraction,
                self.cfg.split_seed,
                self.copies,
            )
            return split, {"folds": None, "fold": None}
        if folds is None:
            split = split_together(
                labels,
                self.copies,
                lambda y: stratified_split(y, list(self.cfg.split), self.cfg.split_seed),
            )
            return split, {"folds": None, "fold": None}
        if fold is None:
            raise ConfigError(
                f"data.folds={folds} with data.fold=null: the data module loads one fold; run the "
                "folds with fer_lottery.experiment.folds.run_folds, or set "
                f"data.fold=0..{folds - 1}"
            )
        units = len(labels) - sum(len(g) - 1 for g in self.copies)  # copies count once
        if units < folds:
            raise DataError(
                f"data.folds={folds} is more than the {units} distinct images; lower data.folds"
            )
        train_frac, val_frac = self.cfg.split[0], self.cfg.split[1]
        val_fraction = val_frac / (train_frac + val_frac)
        split = split_together(
            labels,
            self.copies,
            lambda y: kfold_split(y, folds, fold, val_fraction, self.cfg.split_seed),
        )
        return split, {"folds": int(folds), "fold": int(fold)}

    def test_digest(self) -> str:
        """sha256 of the test split by identity: its item ids in order, its images and labels.
        Two jobs hold the same test images exactly when their digests agree (the report pairs
        jobs only then)."""
        digest = hashlib.sha256("\n".join(self.ids["test"]).encode())
        digest.update(self.images["test"].numpy().tobytes())
        digest.update(self.labels["test"].numpy().tobytes())
        return digest.hexdigest()[:16]

    def fingerprint(self) -> str:
        """sha256 of the split tensors: the dense cache key changes whenever the data does."""
        digest = hashlib.sha256()
        for name in SPLIT_NAMES:
            digest.update(self.images[name].numpy().tobytes())
            digest.update(self.labels[name].numpy().tobytes())
        return digest.hexdigest()[:16]

    # -- loaders -------------------------------------------------------------------------------

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, name: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        sampler = EpochShuffle(len(self.labels[name]), self.seed, self._epoch) if shuffle else None
        return DataLoader(
            TensorDataset(self.images[name], self.labels[name]),
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        drop = bool(self.stats.get("data/train_dropped_per_epoch"))
        return self._loader("train", shuffle=True, drop_last=drop)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def eval_loader(self, name: str) -> DataLoader:
        """Any split, in order, without augmentation (e.g. training-set activations)."""
        return self._loader(name, shuffle=False)

    # -- on-device transforms ------------------------------------------------------------------

    def transform(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> float batch, augmented when ``train``, normalised as configured."""
        x = to_float(images)
        if train:
            aug = self.cfg.augment
            x = random_affine_batch(
                x, aug.hflip, aug.rotation, aug.crop_area_min, aug.crop_area_max
            )
        return normalize(x, self.mean_std)

    def seed_epochs(self, seed: int, stage: str) -> None:
        """Reseed every RNG at the first training batch of each epoch of ``stage``.

        From (seed, stage, epoch) alone, so a stage resumed at epoch e augments, drops out and
        (with ``EpochShuffle``, from (seed, epoch)) shuffles as an uninterrupted one did. It
        happens here, right before the batch is augmented, because Lightning skips
        ``on_train_epoch_start`` for the first epoch after a restore.
        """
        self.seed = seed  # the batch order's
        self._epoch_seed = (seed, stage)
        self._seeded_epoch = None

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        if training and getattr(self, "_epoch_seed", None) is not None:
            epoch = self.trainer.current_epoch
            if self._seeded_epoch != epoch:
                seed, stage = self._epoch_seed
                seed_all(seed, f"{stage}/epoch{epoch}")
                self._seeded_epoch = epoch
        return self.transform(images, train=training), labels


def _check_official_layout(root: Path, layout: str, folders: set[str]) -> None:
    """``data.split=official`` needs SFEW 2.0's Train and Val folders: a DataError in one line
    naming the root and the fix when they are not there."""
    fix = (
        f"use the SFEW 2.0 layout {root}/Train/<Class>/ and {root}/Val/<Class>/, or a fraction "
        "split such as data.split=[0.7,0.15,0.15]"
    )
    if layout != "sfew2":
        raise DataError(
            f"data.split=official tests on SFEW 2.0's Val folder, but {root} holds the "
            f"single-folder layout {root}/<Class>/ (no Train and Val folders): {fix}"
        )
    missing = [name for name in ("Train", "Val") if name not in folders]
    if missing:
        raise DataError(
            f"data.split=official trains on SFEW 2.0's Train and tests on its Val, but {root} has "
            f"no {missing[0]}/ folder: {fix}"
        )
