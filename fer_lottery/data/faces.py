"""MTCNN face cropping (facenet-pytorch) with an on-disk crop cache.

Each image is cropped once per parameter set: the crop is stored under ``cache_dir`` keyed by the
sha256 of the image file's bytes plus the crop parameters, so later runs read the cache and never
decode the frame or build MTCNN. A cache file that does not load as a whole crop is moved into
``quarantine/`` with one warning and computed again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from fer_lottery.config.schema import CropFallback, CropMethod, choices
from fer_lottery.core import paths as store_paths
from fer_lottery.core.errors import ConfigError, DataError
from fer_lottery.job import faults
from fer_lottery.store.atomic import move_aside, write_atomic

log = logging.getLogger(__name__)

ALGO_VERSION = "faces-v2"  # v2: 16-bit and float frames are scaled to 8 bits, not clipped
"""Bump when the crop algorithm changes, so old cache entries stop matching."""

SOURCES = ("detected", "fallback", "manual")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class CropParams:
    """How frames become face crops. Every field except ``batch_size`` is part of the cache key."""

    method: str = "mtcnn"  # "mtcnn" | "none" (no detection: the fallback box for every image)
    size: int = 224  # output crops are size x size RGB
    margin: float = 0.0  # fraction of the squared face box side added on each side
    fallback: str = "center"  # no face: "center" (centre square) | "full" (whole frame squashed)
    detect_max_side: int = 1024  # longer frames are downscaled for detection only
    batch_size: int = 4  # frames of equal size per MTCNN call

    def __post_init__(self) -> None:
        """Reject unknown methods and fallbacks, non-positive sizes and negative margins."""
        for what, value, allowed in (
            ("method", self.method, choices(CropMethod)),
            ("fallback", self.fallback, choices(CropFallback)),
        ):
            if value not in allowed:
                options = " or ".join(repr(a) for a in allowed)
                raise ConfigError(f"crop {what} must be {options}, got {value!r}")
        if self.size < 1 or self.detect_max_side < 1 or self.batch_size < 1:
            raise ConfigError("crop size, detect_max_side and batch_size must be positive")
        if not self.margin >= 0:
            raise ConfigError(f"crop margin must be >= 0, got {self.margin!r}")


@dataclass
class CropReport:
    """Counts over the returned crops (cached ones included) plus the files that were skipped."""

    detected: int = 0  # crops from an MTCNN detection
    fallback: int = 0  # frames with no face (or MTCNN failed on them) -> fallback box
    uncropped: int = 0  # data.crop=none: the fallback box for every frame, no detection tried
    detect_failed: int = 0  # of those, frames where MTCNN raised: used now, never cached
    manual: int = 0  # boxes taken from the manual crops file
    multiple_faces: int = 0  # frames where MTCNN found >1 face (highest-probability one kept)
    unreadable: list[str] = field(default_factory=list)  # paths that could not be decoded
    cache_hits: int = 0
    cache_misses: int = 0  # readable images that were not in the cache
    digests: dict[int, str] = field(default_factory=dict)  # index -> sha256 of the file's bytes


# ----------------------------------------------------------------------------- manual crops


class ManualCrops(dict[str, Box]):
    """{file key: box}, plus ``rows``: where each key was read (``crops.csv:LINE``)."""

    def __init__(self) -> None:
        """An empty mapping with no rows."""
        super().__init__()
        self.rows: dict[str, str] = {}


def read_manual_crops(csv_path: Path, root: Path) -> ManualCrops:
    """Parse ``crops.csv`` (header ``file,x1,y1,x2,y2``) into {relative posix path: box}.

    ``file`` may be relative to ``root``, absolute under ``root``, or a bare file name (which then
    matches any image with that basename). Bad rows raise one DataError naming every bad line;
    a row that names no image is an error too, raised by ``crop_faces``, which knows the images.
    """
    csv_path, root = Path(csv_path), Path(root)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"cannot read manual crops file {csv_path}: {e}") from e
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != ["file", "x1", "y1", "x2", "y2"]:
        raise DataError(f"{csv_path}:1: header must be 'file,x1,y1,x2,y2', got {header!r}")
    crops, bad = ManualCrops(), []
    for row in reader:
        where = f"{csv_path}:{reader.line_num}"
        if not row or all(not c.strip() for c in row):
            continue
        try:
            key, box = _manual_row(row, root, where)
            if key in crops:
                raise DataError(f"{where}: {key!r} appears twice")
        except DataError as exc:
            bad.append(str(exc))
            continue
        crops[key] = box
        crops.rows[key] = where
    if bad:
        bad.append(f"{len(bad)} bad row(s) in {csv_path}; fix or delete each")
        raise DataError("\n".join(bad))
    return crops


def _manual_row(row: list[str], root: Path, where: str) -> tuple[str, Box]:
    """One crops.csv row as (file key, box); a DataError naming the line when it is bad."""
    if len(row) != 5:
        raise DataError(f"{where}: expected 5 fields (file,x1,y1,x2,y2), got {len(row)}")
    key = _normalise_key(row[0], root, where)
    try:
        x1, y1, x2, y2 = (round(float(c)) for c in row[1:])
    except ValueError:
        raise DataError(f"{where}: coordinates must be numbers, got {row[1:]!r}") from None
    if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: need 0 <= x1 < x2 and 0 <= y1 < y2, got {x1},{y1},{x2},{y2}")
    return key, (x1, y1, x2, y2)


def _normalise_key(file: str, root: Path, where: str) -> str:
    """Turn a ``file`` cell into a posix path relative to root (or a bare name)."""
    name = file.strip().replace("\\", "/")
    if not name:
        raise DataError(f"{where}: empty file name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        try:
            return Path(name).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise DataError(f"{where}: {file!r} is not under the data root {root}") from None
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if not parts or ".." in parts:
        raise DataError(f"{where}: {file!r} must be a path inside the data root")
    return PurePosixPath(*parts).as_posix()


def _manual_box(path: Path, manual: dict[str, Box], root: Path | None) -> Box | None:
    """Manual box for ``path``: by path relative to root, then by bare basename."""
    key = _manual_key(path, manual, root)
    return None if key is None else manual[key]


def _manual_key(path: Path, manual: dict[str, Box], root: Path | None) -> str | None:
    """The crops.csv key whose box ``path`` takes (``_manual_box``), or None."""
    if root is not None:
        try:
            rel = path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            rel = None
        if rel in manual:
            return rel
    else:
        posix = "/" + path.as_posix()
        for key in manual:
            if "/" in key and posix.endswith("/" + key):
                return key
    return path.name if path.name in manual else None


def _check_manual_rows(manual: dict[str, Box], paths: list[Path], root: Path | None) -> None:
    """Raise a DataError naming every manual-crop row that matches none of the images.

    A row matches an image as ``_manual_box`` would use it: by path relative to ``root`` (any
    trailing part of the path when there is no root) or by bare file name.
    """
    names: set[str] = set()
    for path in map(Path, paths):
        names.add(path.name)
        if root is not None:
            try:
                names.add(path.resolve().relative_to(Path(root).resolve()).as_posix())
            except ValueError:
                pass
        else:
            parts = path.as_posix().split("/")
            names.update("/".join(parts[i:]) for i in range(len(parts)))
    missing = [key for key in manual if key not in names]
    if not missing:
        return
    rows = getattr(manual, "rows", {})
    where = root if root is not None else "the data root"
    lines = [
        f"{rows.get(key, 'manual crops')}: {key!r} names no image under {where}" for key in missing
    ]
    lines.append(
        f"{len(missing)} manual crop row(s) match no image; fix each file name (relative to the "
        "data root, or a bare file name) or delete the row"
    )
    raise DataError("\n".join(lines))


def _check_manual_boxes(manual: dict[str, Box], paths: list[Path], root: Path | None) -> None:
    """Raise a DataError naming every manual-crop row whose box is not inside the frame of an
    image it names (read from the image's header, before any cropping), with the frame's size;
    a box partly outside used to be clipped without a word."""
    rows = getattr(manual, "rows", {})
    lines: list[str] = []
    for path in map(Path, paths):
        key = _manual_key(path, manual, root)
        if key is None:
            continue
        try:
            with Image.open(path) as img:
                w, h = img.size
        except (OSError, UnidentifiedImageError, ValueError):
            continue  # unreadable: skipped and counted when it is cropped
        x1, y1, x2, y2 = manual[key]
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            lines.append(
                f"{rows.get(key, 'manual crops')}: box {x1},{y1},{x2},{y2} is not inside the "
                f"{w}x{h} frame of {path}; need 0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h}"
            )
    if lines:
        lines.append(
            f"{len(lines)} manual crop box(es) outside their frame; fix the coordinates (pixels "
            "of the frame the row names) or delete the row"
        )
        raise DataError("\n".join(lines))


# ----------------------------------------------------------------------------- geometry


def _square_box(box: tuple[float, float, float, float], w: int, h: int, margin: float) -> Box:
    """Square around the box centre (side = max(w, h) * (1 + 2 margin)), shifted into the frame.

    On an axis where the square is longer than the frame it is centred on the frame instead;
    ``Image.crop`` then pads the outside with zeros.
    """
    x1, y1, x2, y2 = box
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))

    def place(centre: float, extent: int) -> int:
        """Start of the square on one axis: inside the frame, or centred on it if it is longer."""
        if side > extent:
            return (extent - side) // 2
        return min(max(round(centre - side / 2), 0), extent - side)

    left, top = place((x1 + x2) / 2, w), place((y1 + y2) / 2, h)
    return left, top, left + side, top + side


def _fallback_box(w: int, h: int, fallback: str) -> Box:
    """Centre square of side min(w, h), or the whole frame (squashed to square when resized)."""
    if fallback == "full":
        return 0, 0, w, h
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s


def _cut(img: Image.Image, box: Box, size: int) -> np.ndarray:
    """Crop (zero-padded outside the frame) and resize to size x size; uint8 [3, size, size]."""
    crop = img.crop(box).resize((size, size), Image.BILINEAR)  # PIL resize antialiases
    return np.ascontiguousarray(np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1))


# ----------------------------------------------------------------------------- reading


def _decode(data: bytes) -> Image.Image:
    """Decode fully to RGB; truncated files raise instead of being padded with grey."""
    if not data:
        raise OSError("empty file")
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a caller or library may have set it to True
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise OSError("not an image format PIL can read") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode, with the full range of deep modes scaled, not clipped.

    PIL's own ``convert`` clips 16-bit grey (``I;16``, and ``I`` from older PIL or TIFF) at 255,
    which turns a normal 16-bit frame white. Here 0..65535 maps to 0..255, and float (``F``)
    frames map 0..1 to 0..255 (or are taken as 0..255 when they exceed 1). Other modes (``1``,
    ``L``, ``LA``, ``P``, ``RGBA``, ``CMYK``, 16-bit RGB) convert as PIL does; alpha is dropped.
    """
    mode = img.mode
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if mode == "F":
            scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0
        grey = np.clip(np.rint(np.nan_to_num(values * scale)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and isinstance(img.info.get("transparency"), bytes):
        img = img.convert("RGBA")  # PIL warns when it converts these to RGB directly
    return img.convert("RGB")


# ----------------------------------------------------------------------------- cache


def _cache_key(
    data: bytes, params: CropParams, manual_box: Box | None, digest: bytes | None = None
) -> str:
    """sha256 over the algorithm version, the output-changing params, the manual box and bytes.

    ``digest``: the sha256 of ``data``, when the caller has it already."""
    p = {"size": params.size, "fallback": params.fallback, "method": params.method}
    if params.method == "mtcnn" and manual_box is None:
        p |= {"margin": params.margin, "detect_max_side": params.detect_max_side}
    head = json.dumps([ALGO_VERSION, p, manual_box], sort_keys=True).encode()
    digest = digest if digest is not None else hashlib.sha256(data).digest()
    return hashlib.sha256(head + b"\0" + digest).hexdigest()


def _cache_load(path: Path, size: int) -> dict | None:
    """A cache entry, or None when absent or unusable.

    An unusable file (truncated, garbage, wrong contents) gets one warning naming it and is moved
    into ``quarantine/``; the caller then computes the crop again and writes a new file.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as e:  # not a corrupt entry (a permission, say): leave it where it is
        log.warning("face crop cache file %s cannot be opened (%s); recomputing it", path, e)
        return None
    with f:
        stat = os.fstat(f.fileno())  # the copy read: another job may replace the file meanwhile
        try:
            with np.load(f, allow_pickle=False) as z:
                entry = {k: z[k] for k in ("crop", "source", "box", "prob", "n_faces")}
            problem = _entry_problem(entry, size)
        except Exception as e:
            problem = f"{type(e).__name__}: {e}"
    if problem is None:
        return entry
    what = move_aside(path, folder=path.parent / store_paths.QUARANTINE, expect=stat)
    log.warning("face crop cache file %s is unusable (%s); %s; recomputing it", path, problem, what)
    return None


def _entry_problem(entry: dict, size: int) -> str | None:
    """What is wrong with a loaded crop entry, or None when it is whole."""
    crop = entry["crop"]
    if crop.dtype != np.uint8 or crop.shape != (3, size, size):
        return f"crop is {crop.dtype} {tuple(crop.shape)}, expected uint8 (3, {size}, {size})"
    if entry["source"].shape != () or str(entry["source"]) not in SOURCES:
        return f"source {entry['source']!r} is not one of {', '.join(SOURCES)}"
    if entry["box"].shape != (4,) or entry["box"].dtype.kind != "i":
        return f"box {entry['box']!r} is not 4 integers"
    if entry["prob"].shape != () or entry["n_faces"].shape != ():
        return "prob or n_faces is not a single number"
    return None


def _cache_save(path: Path, entry: dict) -> None:
    """Write atomically (temp file, then rename); a failed write only costs a recompute."""

    def save(tmp: Path) -> None:
        """Write the entry into the temporary file."""
        with tmp.open("wb") as f:  # a file object: np.savez would add ".npz" to a bare path
            np.savez(f, **entry)

    try:
        write_atomic(path, save)
    except OSError as e:
        log.warning("cannot write face crop cache file %s: %s", path, e)


# ----------------------------------------------------------------------------- detection


class _Detector:
    """Builds MTCNN on first use, so a fully cached run never imports or runs it."""

    def __init__(self, device: str | torch.device):
        """Remember the device; MTCNN itself is built by the first ``detect``."""
        self.device = device
        self.mtcnn = None
        self.frames_run = 0

    def detect(
        self, images: list[Image.Image]
    ) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """(boxes [k, 4], probs [k]) per image, (None, None) when it has no face, or None when
        MTCNN failed on it (an error, not an outcome: the caller must not cache it)."""
        if self.mtcnn is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as e:
                raise DataError(
                    "face cropping needs facenet-pytorch: pip install --no-deps facenet-pytorch "
                    "(or set data.crop=none)"
                ) from e
            self.mtcnn = MTCNN(keep_all=True, device=self.device, post_process=False)
        self.frames_run += len(images)
        try:
            boxes, probs = self.mtcnn.detect(images)
        except Exception as e:
            if len(images) > 1:  # retry one by one so one bad frame cannot sink the batch
                self.frames_run -= len(images)
                return [r for im in images for r in self.detect([im])]
            log.warning(
                "MTCNN failed on a %dx%d frame (%s); using the fallback box for this run only "
                "(not cached, so the next run detects again)",
                *images[0].size,
                e,
            )
            return [None]
        out = []
        for b, p in zip(boxes, probs, strict=True):
            if b is None or len(b) == 0:
                out.append((None, None))
            else:
                out.append((np.asarray(b, dtype=np.float64), np.asarray(p, dtype=np.float64)))
        return out


# ----------------------------------------------------------------------------- main entry


def crop_faces(
    paths: list[Path],
    params: CropParams,
    cache_dir: Path,
    manual: dict[str, Box] | None = None,
    root: Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[torch.Tensor, list[int], CropReport]:
    """Crop one face per image, through the cache.

    Returns (crops uint8 [N_ok, 3, size, size], kept indices into ``paths``, report). Unreadable
    files are skipped and reported; the report counts the crops by source.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manual = manual or {}
    _check_manual_rows(manual, paths, root)
    _check_manual_boxes(manual, paths, root)
    with _CropRun(params, cache_dir, manual, root, device, len(paths), progress) as run:
        for i, path in enumerate(paths):
            run.crop(i, Path(path))
        run.flush_all()
    return run.result()


class _Waiting(NamedTuple):
    """A frame queued for detection: its index, the frame, its detection copy, its cache file."""

    index: int
    img: Image.Image
    det_img: Image.Image
    cache_file: Path


class _CropRun:
    """The state of one ``crop_faces`` call, with one method per step of cropping an image.

    Each image ends in ``finish`` (from the cache, cropped now, or after a batched detection) or
    in ``skip`` (unreadable). Frames to detect wait in ``pending``, grouped by detection size, so
    that one MTCNN call gets frames of equal size. Used as a context manager: the progress bar
    is closed on the way out, and cleared when an error leaves.
    """

    def __init__(
        self,
        params: CropParams,
        cache_dir: Path,
        manual: dict[str, Box],
        root: Path | None,
        device: str | torch.device,
        total: int,
        progress: bool,
    ):
        """Empty state for ``total`` images, and the progress bar (hidden unless ``progress``)."""
        self.params = params
        self.cache_dir = cache_dir
        self.manual = manual
        self.root = root
        self.total = total
        self.report = CropReport()
        self.detector = _Detector(device)
        self.results: dict[int, dict] = {}  # index -> {"crop", "source", "n"} (faces found)
        self.pending: dict[tuple[int, int], list[_Waiting]] = {}  # detection size -> frames
        self.written = 0  # crops written to the cache so far
        self.bar = tqdm(total=total, desc="face crops", unit="img", disable=not progress)

    def __enter__(self) -> _CropRun:
        """Start the run (the progress bar is already shown)."""
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close the progress bar; on an error clear it, so the error starts on a clean line."""
        if exc_type is not None:
            self.bar.leave = False
        self.bar.close()

    def crop(self, i: int, path: Path) -> None:
        """Crop image ``i``: from the cache, now, or queued for a batched detection."""
        box = _manual_box(path, self.manual, self.root) if self.manual else None
        try:
            data = path.read_bytes()
        except OSError as e:
            self.skip(path, e)
            return
        digest = hashlib.sha256(data).digest()
        self.report.digests[i] = digest.hex()  # kept for duplicate detection
        cache_file = self.cache_dir / f"{_cache_key(data, self.params, box, digest)}.npz"
        if self.from_cache(i, cache_file):
            return
        try:
            img = _decode(data)
        except Exception as e:
            self.skip(path, e)
            return
        self.report.cache_misses += 1
        if box is not None or self.params.method == "none":
            self.crop_now(i, img, box, path, cache_file)
        else:
            self.queue_for_detection(i, img, cache_file)

    def skip(self, path: Path, err: Exception) -> None:
        """Skip an unreadable image: warn, record it in the report and advance the bar."""
        _unreadable(self.report, path, err)
        self.bar.update(1)

    def from_cache(self, i: int, cache_file: Path) -> bool:
        """Finish image ``i`` from its cache file if that holds a whole crop; say whether it did."""
        entry = _cache_load(cache_file, self.params.size)
        if entry is None:
            return False
        self.report.cache_hits += 1
        self.finish(i, entry, None)
        return True

    def crop_now(
        self, i: int, img: Image.Image, box: Box | None, path: Path, cache_file: Path
    ) -> None:
        """Crop image ``i`` without detection: its manual box, or else the fallback box."""
        if box is not None:
            w, h = img.size
            entry = _entry(img, _manual_square(box, w, h, path), "manual", self.params)
        else:
            entry = _fallback_entry(img, self.params)
        self.finish(i, entry, cache_file)

    def queue_for_detection(self, i: int, img: Image.Image, cache_file: Path) -> None:
        """Queue image ``i`` with the frames of its detection size; detect groups as they fill."""
        det_img = _detection_copy(img, self.params.detect_max_side)
        group = self.pending.setdefault(det_img.size, [])
        group.append(_Waiting(i, img, det_img, cache_file))
        if len(group) >= self.params.batch_size:
            self.flush(det_img.size)
        elif sum(map(len, self.pending.values())) >= 2 * self.params.batch_size:
            # Too many frames wait in all: detect the largest group, to bound memory.
            self.flush(max(self.pending, key=lambda k: len(self.pending[k])))

    def flush(self, size: tuple[int, int]) -> None:
        """Run MTCNN on the frames waiting at this detection size and finish each of them."""
        group = self.pending.pop(size)
        found = self.detector.detect([w.det_img for w in group])
        for waiting, outcome in zip(group, found, strict=True):
            if outcome is None:  # MTCNN raised: a fallback crop now, but only real outcomes
                self.report.detect_failed += 1  # (detection, no face, manual box) are cached
                self.finish(waiting.index, _fallback_entry(waiting.img, self.params), None)
            else:
                entry = _detected_entry(waiting.img, waiting.det_img, *outcome, self.params)
                self.finish(waiting.index, entry, waiting.cache_file)

    def flush_all(self) -> None:
        """Detect the frames still waiting, group by group in the order the groups began."""
        for size in list(self.pending):
            self.flush(size)

    def finish(self, i: int, entry: dict, cache_file: Path | None) -> None:
        """Keep image ``i``'s crop, after writing it to ``cache_file`` unless that is None."""
        if cache_file is not None:
            _cache_save(cache_file, entry)
            self.written += 1
            faults.at(f"crops/{self.written}")
        self.results[i] = {
            "crop": entry["crop"],
            "source": str(entry["source"]),
            "n": int(entry["n_faces"]),
        }
        self.bar.update(1)

    def result(self) -> tuple[torch.Tensor, list[int], CropReport]:
        """Stack the crops in path order, count their sources in the report, log the summary."""
        kept = sorted(self.results)
        for i in kept:
            source = self.results[i]["source"]
            if source == "fallback" and self.params.method == "none":
                source = "uncropped"  # nothing was detected because nothing was tried
            setattr(self.report, source, getattr(self.report, source) + 1)
            self.report.multiple_faces += self.results[i]["n"] > 1
        if kept:
            crops = torch.from_numpy(np.stack([self.results[i]["crop"] for i in kept]))
        else:
            crops = torch.empty((0, 3, self.params.size, self.params.size), dtype=torch.uint8)
        _log_summary(self.total, self.report, self.detector.frames_run)
        return crops, kept, self.report


def _detection_copy(img: Image.Image, max_side: int) -> Image.Image:
    """The frame to run MTCNN on: downscaled so its longer side is at most ``max_side``."""
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)


def _detected_entry(
    img: Image.Image,
    det_img: Image.Image,
    boxes: np.ndarray | None,
    probs: np.ndarray | None,
    params: CropParams,
) -> dict:
    """The entry for MTCNN's outcome: the most probable face, or the fallback box if none."""
    if boxes is None:
        return _fallback_entry(img, params)
    w, h = img.size
    best = int(np.argmax(probs))
    sx, sy = w / det_img.size[0], h / det_img.size[1]
    full_res = boxes[best] * np.array([sx, sy, sx, sy])  # undo the detection downscale
    box = _square_box(tuple(full_res), w, h, params.margin)
    return _entry(img, box, "detected", params, float(probs[best]), len(boxes))


def _fallback_entry(img: Image.Image, params: CropParams) -> dict:
    """The entry for a frame with no face found (or none looked for): the fallback box."""
    w, h = img.size
    return _entry(img, _fallback_box(w, h, params.fallback), "fallback", params)


def _entry(
    img: Image.Image, box: Box, source: str, params: CropParams, prob: float = math.nan, n: int = 0
) -> dict:
    """One cache entry: the crop plus where it came from (box in frame pixels, MTCNN prob)."""
    return {
        "crop": _cut(img, box, params.size),
        "source": np.array(source),
        "box": np.array(box, dtype=np.int64),
        "prob": np.array(prob, dtype=np.float64),
        "n_faces": np.array(n, dtype=np.int64),
    }


def _manual_square(box: Box, w: int, h: int, path: Path) -> Box:
    """A manual box clipped to the frame, then squared like a detection (no margin added)."""
    x1, y1, x2, y2 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"manual crop {box} for {path} lies outside the {w}x{h} frame")
    return _square_box((x1, y1, x2, y2), w, h, 0.0)


def _unreadable(report: CropReport, path: Path, err: Exception) -> None:
    """Skip a file that cannot be read or decoded: warn with its path and record it."""
    log.warning("skipping unreadable image %s: %s", path, err)
    report.unreadable.append(str(path))


def _log_summary(n: int, r: CropReport, frames_run: int) -> None:
    """One INFO line; it says plainly when no face detection was needed."""
    now = (
        f"MTCNN run on {frames_run} now"
        if frames_run
        else "0 detected now (no face detection needed)"
    )
    log.info(
        "face crops: %d images, %d from cache, %s; detected %d, fallback %d (no face), manual %d, "
        "not cropped %d (data.crop=none), unreadable %d, multiple faces %d, detection failed %d",
        n, r.cache_hits, now, r.detected, r.fallback, r.manual, r.uncropped, len(r.unreadable),
        r.multiple_faces, r.detect_failed,
    )  # fmt: skip
