"""Settings that moved, and the one place their old spellings are known.

``PruneConfig`` held 26 keys of four concerns; they are now grouped by concern (#28): the
criterion's own options under ``prune.distinctiveness``, the gradual schedule under
``prune.gradual``, the retraining under ``retrain`` and the stability analysis under
``stability``. What follows from this table:

- ``old_spelling``: an override written the old way (``prune.rewind=pretrained``) is refused in one
  line that gives the new spelling (``python -m fer_lottery``, ``analysis`` selectors);
- ``upgrade``: a config recorded before the move (an older ``results.json`` or checkpoint) reads
  as it would be written now, so the relaunch check, the report and the analyses compare it key
  for key with a new one.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

# old dotted key -> new dotted key
MOVED: dict[str, str] = {
    "prune.rewind": "retrain.rewind",
    "prune.rewind_epoch": "retrain.rewind_epoch",
    "prune.retrain_epochs": "retrain.epochs",
    "prune.retrain_lr": "retrain.lr",
    "prune.stability": "stability.enabled",
    "prune.stability_seed": "stability.seed",
    "prune.stability_points": "stability.points",
    "prune.angle": "prune.distinctiveness.angle",
    "prune.complementary": "prune.distinctiveness.complementary",
    "prune.normalize": "prune.distinctiveness.normalize",
    "prune.norm_std": "prune.distinctiveness.norm_std",
    "prune.variant": "prune.distinctiveness.variant",
    "prune.layers": "prune.distinctiveness.layers",
    "prune.gradual_start": "prune.gradual.start",
    "prune.gradual_end": "prune.gradual.end",
}

# An override's key: after Hydra's +, ++ or ~, before = (or the end, for ~key).
_OVERRIDE_KEY = re.compile(r"^(?:\+\+|\+|~)?([A-Za-z_][\w.]*)")


def new_name(key: str) -> str | None:
    """The key ``key`` moved to, or None where it did not move."""
    return MOVED.get(key)


def old_spelling(overrides: Iterable[str]) -> str | None:
    """One line for the first override that uses a moved key's old name, giving the new one
    with the override's own value; None when every key is current."""
    for override in overrides:
        match = _OVERRIDE_KEY.match(override)
        moved = new_name(match.group(1)) if match else None
        if moved:
            old = match.group(1)
            # The new key is in the schema: it is set, not added (+ or ++ would be refused).
            written = override.lstrip("+").replace(old, moved, 1)
            return (
                f"{old} is now {moved} (the prune settings are grouped by concern: criterion, "
                f"prune.gradual, retrain, stability): write {written}"
            )
    return None


def upgrade(config: dict) -> dict:
    """A recorded config (nested, as ``results.json`` holds it) with every old key moved to its
    new place; a copy, and the same dict's copy when nothing moved. A key already at its new place
    is kept, and its old spelling dropped."""
    out = copy.deepcopy(config)
    for old, new in MOVED.items():
        section, leaf = old.split(".")
        node = out.get(section)
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *parents, last = new.split(".")
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target.setdefault(last, value)
    return out


__all__ = ["MOVED", "new_name", "old_spelling", "upgrade"]
