"""Find the labelled images of an SFEW folder, or explain what is wrong with it.

Two layouts are accepted, class folder names matched case-insensitively:

- the 675-image release used by both papers: ``root/<Class>/*.png``;
- SFEW 2.0: ``root/Train/<Class>/*`` and ``root/Val/<Class>/*`` (both are pooled; we make our own
  stratified split).
"""

from __future__ import annotations

from pathlib import Path

from fer_lottery.data import CLASSES
from fer_lottery.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SPLIT_FOLDERS = ("train", "val")

EXPECTED_LAYOUT = (
    "Expected layout: ROOT/<Class>/*.png with the 7 class folders "
    + ", ".join(CLASSES)
    + " (any case), or the SFEW 2.0 layout ROOT/Train/<Class>/ and ROOT/Val/<Class>/."
)


def _subdirs(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir()}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_classes(folder: Path, found: dict[str, Path]) -> None:
    """Raise a DataError listing missing, unknown and empty class folders under ``folder``."""
    wanted = {c.lower(): c for c in CLASSES}
    missing = [wanted[k] for k in wanted if k not in found]
    unknown = [found[k].name for k in found if k not in wanted]
    empty = [found[k].name for k in wanted if k in found and not _images(found[k])]
    if not (missing or empty):
        return
    lines = [f"SFEW folder {folder} does not hold the 7 expression classes."]
    lines.append(f"  expected: {', '.join(CLASSES)} (any case)")
    lines.append(f"  found:    {', '.join(p.name for p in found.values()) or '(no folders)'}")
    if missing:
        lines.append(f"  missing:  {', '.join(missing)}")
    if unknown:
        lines.append(f"  unknown:  {', '.join(unknown)}")
    if empty:
        lines.append(f"  empty (no image files): {', '.join(empty)}")
    lines.append(EXPECTED_LAYOUT)
    raise DataError("\n".join(lines))


def list_images(root: str | Path) -> list[tuple[Path, int]]:
    """Return ``(path, class index)`` for every image under ``root``, sorted, in either layout.

    Raises DataError naming the path, what was found and what was expected.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"SFEW root {root} does not exist or is not a folder.\n{EXPECTED_LAYOUT}\n"
            "Point data.root (or the SFEW_ROOT environment variable) at your copy of SFEW, "
            "or run on the built-in synthetic dataset with data=synthetic."
        )
    found = _subdirs(root)
    class_roots = [root]
    if not any(c.lower() in found for c in CLASSES) and any(s in found for s in SPLIT_FOLDERS):
        class_roots = [found[s] for s in SPLIT_FOLDERS if s in found]
    items: list[tuple[Path, int]] = []
    for folder in class_roots:
        sub = _subdirs(folder)
        _check_classes(folder, sub)
        for idx, name in enumerate(CLASSES):
            items += [(p, idx) for p in _images(sub[name.lower()])]
    return items
