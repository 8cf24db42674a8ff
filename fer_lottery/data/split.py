"""Stratified train/val/test split, reproducible from a seed and written to ``split.json``.

Three protocols (``split.json``'s ``protocol``, ``results.json``'s ``data/protocol``):
``fractions`` (``data.split=[train, val, test]`` of the pooled images), ``kfold``
(``data.folds``) and ``official`` (``data.split=official``: SFEW 2.0's own, as the EmotiW
literature reports it: test on every Val image, train and validate on Train, validation carved
from it by ``data.official_val_fraction``, stratified).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fer_lottery.config.schema import OFFICIAL_SPLIT
from fer_lottery.store.atomic import write_json_atomic

SPLIT_NAMES = ("train", "val", "test")
# split.json's protocol and results.json's data/protocol, one per kind of split.
PROTOCOLS = ("fractions", "kfold", OFFICIAL_SPLIT)


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


def kfold_split(
    labels: list[int], folds: int, fold: int, val_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Return train/val/test indices for ``fold`` of ``folds`` stratified folds.

    Each class is shuffled with its own generator derived from (seed, class), as in
    ``stratified_split``. Walking the classes in order, the i-th item overall goes to fold
    ``i % folds``, so the assignment is the same for every ``fold``: the test folds are disjoint,
    cover every item once, and each class (and each fold's size) differs by at most one between
    folds. Val is ``val_fraction`` of each class's remaining items (at least one when a class has
    two or more left); the rest is train.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    if len(labels) < folds:
        raise ValueError(f"{len(labels)} items cannot fill {folds} folds")
    labels_arr = np.asarray(labels)
    out: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    offset = 0  # position of this class's first item in the round-robin over all classes
    for cls in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == cls)
        idx = idx[np.random.default_rng([seed, int(cls)]).permutation(len(idx))]
        in_test = (offset + np.arange(len(idx))) % folds == fold
        offset += len(idx)
        rest = idx[~in_test]  # still in shuffled order: its head is a random subset
        n_val = _counts(len(rest), [1 - val_fraction, val_fraction])[1] if len(rest) else 0
        out["test"] += idx[in_test].tolist()
        out["val"] += rest[:n_val].tolist()
        out["train"] += rest[n_val:].tolist()
    return {name: sorted(v) for name, v in out.items()}


def official_split(
    labels: list[int],
    in_test: list[bool],
    val_fraction: float,
    seed: int,
    groups: list[list[int]] = (),
) -> dict[str, list[int]]:
    """SFEW 2.0's official protocol: test is every item with ``in_test`` (the Val folder); the
    others (Train) are split into train and val, ``val_fraction`` of each class to val (at least
    one when a class has two or more), each class shuffled with its own generator derived from
    (seed, class) as in ``stratified_split``.

    ``groups``: copies that must share a split (``split_together``); a group of copies that
    straddles Train and Val is a ValueError: the copies' Train side is dropped before
    (``data.duplicates.resolve`` with ``held_out``).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    if len(in_test) != len(labels):
        raise ValueError(f"{len(in_test)} test flags for {len(labels)} items")
    rest = [i for i, t in enumerate(in_test) if not t]
    position = {i: k for k, i in enumerate(rest)}
    if any(len({i in position for i in g}) > 1 for g in groups):
        raise ValueError("a group of copies straddles Train and Val")
    rest_groups = [[position[i] for i in g] for g in groups if g[0] in position]

    def train_val(y: list[int]) -> dict[str, list[int]]:
        labels_arr = np.asarray(y, dtype=int)
        out: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
        for cls in np.unique(labels_arr):
            idx = np.flatnonzero(labels_arr == cls)
            idx = idx[np.random.default_rng([seed, int(cls)]).permutation(len(idx))]
            n_val = _counts(len(idx), [1 - val_fraction, val_fraction])[1]
            out["val"] += idx[:n_val].tolist()
            out["train"] += idx[n_val:].tolist()
        return out

    split = split_together([labels[i] for i in rest], rest_groups, train_val)
    return {
        "train": sorted(rest[k] for k in split["train"]),
        "val": sorted(rest[k] for k in split["val"]),
        "test": [i for i, t in enumerate(in_test) if t],
    }


def split_together(
    labels: list[int], groups: list[list[int]], split_fn: Callable[[list[int]], dict]
) -> dict[str, list[int]]:
    """``split_fn`` over one item per group of copies (the first, with its label); every other
    copy goes to the split of its group's first item, so no group straddles splits.

    With no groups this is ``split_fn(labels)`` exactly.
    """
    first_of = list(range(len(labels)))
    for group in groups:
        for i in group[1:]:
            first_of[i] = group[0]
    firsts = [i for i, f in enumerate(first_of) if f == i]
    split = split_fn([labels[i] for i in firsts])
    copies: dict[int, list[int]] = {}
    for i, f in enumerate(first_of):
        copies.setdefault(f, []).append(i)
    return {name: sorted(i for k in split[name] for i in copies[firsts[k]]) for name in SPLIT_NAMES}
