"""Stratified train/val/test split, reproducible from a seed and written to ``split.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fer_lottery.io import write_json_atomic

SPLIT_NAMES = ("train", "val", "test")


def _counts(n: int, fractions: list[float]) -> list[int]:
    """Split ``n`` items by ``fractions`` (largest remainders), at least one per part."""
    raw = [f * n for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True):
        if sum(counts) == n:
            break
        counts[i] += 1
    # Every split should see every class when there are enough items.
    for i in range(len(counts)):
        while counts[i] == 0 and n >= len(counts):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def stratified_split(labels: list[int], fractions: list[float], seed: int) -> dict[str, list[int]]:
    """Return indices for train/val/test, stratified by label and reproducible from ``seed``.

    Each class is shuffled with its own generator derived from (seed, class), so adding images of
    one class does not reshuffle the others.
    """
    labels_arr = np.asarray(labels)
    out: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    for cls in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == cls)
        idx = idx[np.random.default_rng([seed, int(cls)]).permutation(len(idx))]
        start = 0
        for name, count in zip(SPLIT_NAMES, _counts(len(idx), fractions), strict=True):
            out[name] += idx[start : start + count].tolist()
            start += count
    return {name: sorted(v) for name, v in out.items()}


def write_split(path: Path, split: dict[str, list[int]], ids: list[str], **info) -> None:
    """Write the split as lists of item ids (relative file paths), plus how it was made."""
    payload = {name: [ids[i] for i in split[name]] for name in SPLIT_NAMES}
    payload["counts"] = {name: len(split[name]) for name in SPLIT_NAMES}
    payload.update(info)
    write_json_atomic(path, payload)


def read_split(path: Path) -> dict:
    """Read a ``split.json`` written by ``write_split``."""
    return json.loads(Path(path).read_text())
