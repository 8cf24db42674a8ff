"""Images with identical bytes: found, reported, and never allowed to straddle splits.

Movie-frame FER datasets hold copies of the same frame. A copy in train and another in test
leaks the test image into training; copies under two classes are label noise that no split can
make honest. ``data.duplicates`` chooses what to do:

- ``keep`` (default): every copy is used, and all copies of one image go to one split, so the
  images used (the papers' 675) stay the same and only where copies go changes;
- ``drop``: one copy is kept of images copied within a class; images copied across classes are
  dropped, every copy, as no label can be trusted;
- ``error``: the data is refused, with every group named, for a curated dataset.

With ``data.split=official`` (SFEW 2.0: test on Val) the test images are fixed, so a group of
copies cannot be moved into one split: under every policy but ``error`` the Train copies of a Val
image are dropped (the Val copy stays in test), warned, counted in
``data/official_train_copies_dropped`` and named in ``data/official_train_copies_files``.

Copies are found by the sha256 of the file's bytes (the crop cache's hash). A frame saved twice
with different encodings is not found; that would need a perceptual hash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fer_lottery.core.classes import CLASSES
from fer_lottery.core.errors import DataError

log = logging.getLogger(__name__)

POLICIES = ("keep", "drop", "error")
NAMED_IN_WARNING = 5  # groups a warning names; results.json names them all


@dataclass
class Duplicates:
    """Which images are used, and the groups of copies among them."""

    kept: list[int]  # indices into the input, in order
    groups: list[list[int]]  # among the kept (indices into ``kept``): copies, each of 2 or more
    stats: dict[str, object] = field(default_factory=dict)


def find_groups(digests: list[str]) -> list[list[int]]:
    """Indices with the same digest, for each digest seen twice or more, by first index."""
    by_digest: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        by_digest.setdefault(d, []).append(i)
    return [g for g in by_digest.values() if len(g) > 1]


def _describe(group: list[int], ids: list[str], labels: list[int]) -> str:
    return " = ".join(f"{ids[i]} ({CLASSES[labels[i]]})" for i in group)


def resolve(
    digests: list[str],
    ids: list[str],
    labels: list[int],
    policy: str,
    held_out: list[bool] | None = None,
) -> Duplicates:
    """Apply ``policy`` to the copies among the images; warn, count and name what it did.

    ``held_out``: the images whose split is fixed (SFEW 2.0's Val, the official protocol's test);
    every other copy of a held-out image is dropped, so no test image is trained or validated on.
    """
    if policy not in POLICIES:
        raise DataError(f"data.duplicates must be one of {', '.join(POLICIES)}, got {policy!r}")
    groups = find_groups(digests)
    cross = [g for g in groups if len({labels[i] for i in g}) > 1]
    same = [g for g in groups if len({labels[i] for i in g}) == 1]
    if groups and policy == "error":
        shown = "; ".join(_describe(g, ids, labels) for g in groups[:NAMED_IN_WARNING])
        extra = len(groups) - NAMED_IN_WARNING
        more = f"; and {extra} more" if extra > 0 else ""
        raise DataError(
            f"data.duplicates=error: {len(groups)} group(s) of images with identical bytes: "
            f"{shown}{more}. Remove the copies, or set data.duplicates=keep (every copy used, all "
            "in one split) or data.duplicates=drop (one copy per class; copies across classes "
            "dropped)"
        )
    # The training-side copies of a held-out image: dropped under every policy.
    leaked = (
        sorted(i for g in groups if any(held_out[j] for j in g) for i in g if not held_out[i])
        if held_out is not None
        else []
    )
    dropped: set[int] = set(leaked)
    if policy == "drop":
        for g in same:
            dropped.update([i for i in g if i not in dropped][1:])
        for g in cross:
            dropped.update(g)
    kept = [i for i in range(len(digests)) if i not in dropped]
    position = {i: k for k, i in enumerate(kept)}
    kept_groups = [
        [position[i] for i in g if i not in dropped]
        for g in groups
        if len([i for i in g if i not in dropped]) > 1
    ]
    stats = {
        "data/duplicate_groups": len(groups),
        "data/duplicates_same_class": sum(map(len, same)),
        "data/duplicates_cross_class": sum(map(len, cross)),
        "data/duplicates_dropped": len(dropped),
        "data/duplicate_files": [[ids[i] for i in g] for g in groups],
    }
    if held_out is not None:
        stats["data/official_train_copies_dropped"] = len(leaked)
        stats["data/official_train_copies_files"] = [ids[i] for i in leaked]
    _warn(same, cross, ids, labels, policy, len(dropped))
    if leaked:
        _warn_leaked(groups, leaked, ids, labels)
    return Duplicates(kept=kept, groups=kept_groups, stats=stats)


def _warn(
    same: list[list[int]],
    cross: list[list[int]],
    ids: list[str],
    labels: list[int],
    policy: str,
    dropped: int,
) -> None:
    what = {
        "keep": "every copy is used, and all copies of an image go to one split",
        "drop": f"{dropped} copies dropped",
    }[policy]
    if policy == "keep" and dropped:  # data.split=official: the Train copies of Val images
        what = (
            f"every copy but {dropped} Train copies of Val images (dropped) is used, in one split"
        )
    if cross:
        shown = "; ".join(_describe(g, ids, labels) for g in cross[:NAMED_IN_WARNING])
        more = len(cross) - NAMED_IN_WARNING
        log.warning(
            "data: %d image(s) have a byte-identical copy under another class "
            "(data/duplicates_cross_class): %s%s. Their labels disagree; %s (data.duplicates=%s; "
            "drop removes them, error refuses them)",
            sum(map(len, cross)),
            shown,
            f"; and {more} more groups" if more > 0 else "",
            "every copy is dropped" if policy == "drop" else what,
            policy,
        )
    if same:
        log.warning(
            "data: %d image(s) in %d group(s) are byte-identical copies within one class "
            "(data/duplicates_same_class; all named in data/duplicate_files), e.g. %s; %s "
            "(data.duplicates=%s)",
            sum(map(len, same)),
            len(same),
            _describe(same[0], ids, labels),
            what,
            policy,
        )


def _warn_leaked(groups: list[list[int]], leaked: list[int], ids: list[str], labels: list[int]):
    """One warning naming the Train copies of Val images that the official protocol drops."""
    shown = [g for g in groups if set(g) & set(leaked)]
    more = len(shown) - NAMED_IN_WARNING
    log.warning(
        "data: %d Train image(s) are byte-identical copies of Val images, and data.split=official "
        "tests on Val: the Train copies are dropped, so no test image is trained or validated on "
        "(data/official_train_copies_dropped; named in data/official_train_copies_files): %s%s",
        len(leaked),
        "; ".join(_describe(g, ids, labels) for g in shown[:NAMED_IN_WARNING]),
        f"; and {more} more groups" if more > 0 else "",
    )
