"""Find the labelled images of an SFEW folder, account for every other file, or explain what is
wrong with the folder.

Two layouts are accepted, class folder names matched case-insensitively:

- the 675-image release used by both papers: ``root/<Class>/*.png``;
- SFEW 2.0: ``root/Train/<Class>/*`` and ``root/Val/<Class>/*``: pooled for a fraction split, or
  kept apart by ``data.split=official`` (train on Train, test on Val), so each item's split folder
  is recorded in ``folders``.

Every file under the root is either used or ignored with a reason:

- images in subfolders of a class folder (``Neutral/more/x.png``) are used under that class, as
  torchvision's ``ImageFolder`` does, and counted in ``nested``;
- class folders whose names differ only in case (``Angry/`` and ``angry/``) are pooled, and named
  in ``pooled``;
- any other file (not an image, outside the class folders, in an unknown folder) is named in
  ``ignored`` with its reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from fer_lottery.core.classes import CLASSES
from fer_lottery.core.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SPLIT_FOLDERS = ("train", "val")
NOT_A_FILE = "not a regular file (a broken link, a pipe or a socket)"
# How many ignored files a warning names; results.json names them all.
NAMED_IN_WARNING = 5

EXPECTED_LAYOUT = (
    "Expected layout: ROOT/<Class>/*.png with the 7 class folders "
    + ", ".join(CLASSES)
    + " (any case), or the SFEW 2.0 layout ROOT/Train/<Class>/ and ROOT/Val/<Class>/."
)


@dataclass
class Inventory:
    """What a data root holds: the labelled images, and what happened to every other file."""

    # (image, class index): by split folder, then class, then path (the order splits are made in)
    items: list[tuple[Path, int]] = field(default_factory=list)
    # the split folder of each item ("Train" or "Val" in SFEW 2.0; "" in the single-folder layout)
    folders: list[str] = field(default_factory=list)
    layout: str = "flat"  # "flat" (root/<Class>/) or "sfew2" (root/Train/<Class>/, root/Val/...)
    ignored: dict[str, str] = field(default_factory=dict)  # relative path -> why it is not used
    nested: int = 0  # images found in subfolders of a class folder (used under that class)
    pooled: list[list[str]] = field(default_factory=list)  # class folders differing in case only
    files: int = 0  # every file under the root, counted once
    digest: str = ""  # root_digest of the root: which files, their sizes and times

    def stats(self) -> dict[str, object]:
        """The ``results.json`` keys for the inventory."""
        return {
            "data/files_under_root": self.files,
            "data/root_digest": self.digest,
            "data/images_nested": self.nested,
            "data/class_folders_pooled": self.pooled,
            "data/ignored": len(self.ignored),
            "data/ignored_files": dict(self.ignored),
        }


def _subdirs(folder: Path) -> dict[str, list[Path]]:
    """Sub-folders by lower-case name; folders whose names differ only in case share a key."""
    out: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            out.setdefault(p.name.lower(), []).append(p)
    return out


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder``, at any depth, sorted. Links to folders are followed, as
    torchvision's ``ImageFolder`` does; a folder reached twice (a link loop) is walked once.
    Entries that are not regular files (a broken link, a pipe) are listed too, to be named."""
    out: list[Path] = []
    seen: set[str] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        out += [Path(top) / name for name in files]
    return sorted(out)


def _check_classes(folder: Path, found: dict[str, list[Path]]) -> None:
    """Raise a DataError listing missing, unknown and empty class folders under ``folder``."""
    wanted = {c.lower(): c for c in CLASSES}
    missing = [wanted[k] for k in wanted if k not in found]
    unknown = [p.name for k in found if k not in wanted for p in found[k]]
    empty = [
        "/".join(p.name for p in found[k])
        for k in wanted
        if k in found and not any(_is_image(f) for p in found[k] for f in _files(p))
    ]
    if not (missing or empty):
        return
    names = [p.name for group in found.values() for p in group]
    lines = [f"SFEW folder {folder} does not hold the 7 expression classes."]
    lines.append(f"  expected: {', '.join(CLASSES)} (any case)")
    lines.append(f"  found:    {', '.join(names) or '(no folders)'}")
    if missing:
        lines.append(f"  missing:  {', '.join(missing)}")
    if unknown:
        lines.append(f"  unknown:  {', '.join(unknown)}")
    if empty:
        lines.append(f"  empty (no image files): {', '.join(empty)}")
    lines.append(EXPECTED_LAYOUT)
    raise DataError("\n".join(lines))


def take_inventory(root: str | Path, used: tuple[Path, ...] = ()) -> Inventory:
    """Every labelled image under ``root`` in either layout, and every other file with a reason.

    ``used``: files the run reads for another purpose (the manual crops file); they are neither
    images nor ignored. Raises DataError naming the path, what was found and what was expected.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"SFEW root {root} does not exist or is not a folder.\n{EXPECTED_LAYOUT}\n"
            "Point data.root (or the SFEW_ROOT environment variable) at your copy of SFEW, "
            "or run on the built-in synthetic dataset with data=synthetic."
        )
    inv = Inventory()
    found = _subdirs(root)
    wanted = {c.lower() for c in CLASSES}
    class_roots = [root]
    if not any(c in found for c in wanted) and any(s in found for s in SPLIT_FOLDERS):
        class_roots = [found[s][0] for s in SPLIT_FOLDERS if s in found]
        inv.layout = "sfew2"
    taken: set[Path] = {p.resolve() for p in used}
    for folder in class_roots:
        split_folder = "" if folder == root else folder.name.lower().capitalize()
        sub = _subdirs(folder)
        _check_classes(folder, sub)
        for idx, name in enumerate(CLASSES):
            group = sub[name.lower()]
            if len(group) > 1:
                inv.pooled.append([p.relative_to(root).as_posix() for p in group])
            for class_folder in group:
                for path in _files(class_folder):
                    taken.add(path.resolve())
                    if not path.is_file():
                        inv.ignored[path.relative_to(root).as_posix()] = NOT_A_FILE
                        continue
                    if not _is_image(path):
                        inv.ignored[path.relative_to(root).as_posix()] = _why_not_image(path)
                        continue
                    inv.items.append((path, idx))
                    inv.folders.append(split_folder)
                    inv.nested += path.parent != class_folder
    every = _files(root)
    inv.digest = _digest(root, every)
    for path in every:
        inv.files += 1
        if path.resolve() not in taken:
            why = _why_outside(path, root, class_roots) if path.is_file() else NOT_A_FILE
            inv.ignored[path.relative_to(root).as_posix()] = why
    _warn(inv)
    return inv


def _digest(root: Path, files: list[Path]) -> str:
    """sha256 over each file's path (relative to ``root``), size and modification time."""
    h = hashlib.sha256()
    for path in files:
        try:
            st = path.stat()
        except OSError:  # a broken link: its name still counts
            h.update(f"{path.relative_to(root).as_posix()}\0broken\n".encode())
            continue
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def root_digest(root: str | Path) -> str | None:
    """The digest a run records as ``data/root_digest``: it changes when a file under ``root`` is
    added, removed, renamed, resized or rewritten. A stat of each file, no reading; None when
    ``root`` is not a folder."""
    root = Path(root).expanduser()
    return _digest(root, _files(root)) if root.is_dir() else None


def _why_not_image(path: Path) -> str:
    if path.name.startswith("."):
        return "hidden file"
    suffix = path.suffix.lower() or "(none)"
    return f"not an image file (suffix {suffix}; used: {', '.join(sorted(IMAGE_SUFFIXES))})"


def _why_outside(path: Path, root: Path, class_roots: list[Path]) -> str:
    """Why a file that is not in a class folder is not used."""
    for folder in class_roots:
        if folder in path.parents and path.parent != folder:
            top = path.relative_to(folder).parts[0]
            return f"folder {top!r} is not one of the 7 classes"
        if path.parent == folder:
            return "not inside a class folder"
    top = path.relative_to(root).parts[0]
    if top.lower() == "test" and class_roots != [root]:
        return "SFEW 2.0 Test folder: it has no labels"
    return f"folder {top!r} is neither Train nor Val"


def _warn(inv: Inventory) -> None:
    """One warning per kind of file that is not used as it lies."""
    for group in inv.pooled:
        log.warning(
            "data: class folders %s differ only in case; their images are pooled under one class",
            " and ".join(group),
        )
    if inv.ignored:
        named = [f"{path} ({why})" for path, why in list(inv.ignored.items())[:NAMED_IN_WARNING]]
        more = len(inv.ignored) - len(named)
        log.warning(
            "data: %d file(s) under the data root are not used: %s%s "
            "(all are named in results.json data/ignored_files)",
            len(inv.ignored),
            "; ".join(named),
            f"; and {more} more" if more else "",
        )
    if inv.nested:
        log.info("data: %d image(s) in subfolders of class folders, used there", inv.nested)


def list_images(root: str | Path) -> list[tuple[Path, int]]:
    """``(path, class index)`` for every image under ``root``, sorted, in either layout."""
    return take_inventory(root).items
