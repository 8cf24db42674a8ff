"""How a setting is declared: its field in ``config.schema`` carries, beside its type and default,
what it changes, when it applies and its range (``setting``).

- ``changes``: ``NOTHING`` (how a job reports, checkpoints, caches or is named: no number it
  computes moves), ``DENSE`` (the dense fine-tune's numbers, and so every later one) or
  ``PRUNING`` (only what follows the dense stage). Left out, a key takes its section's: ``prune``
  is ``PRUNING``, everything else ``DENSE``.
- ``applies``: when a job reads the key at all, as a predicate of the job's flat config
  (``{"prune.method": "magnitude", ...}``, plain values); left out, always. A key that does not
  apply changes nothing in that job, whatever its value.
- ``check``: the key's range, as a ``Range``; ``checks.validate`` refuses a value outside it in
  one line that names the key, the range and the fix.
- ``lightning``: under ``trainer``, whether the key is a Lightning Trainer argument (false for
  fer_lottery's own keys, which the stage keeps away from the Trainer).

``config.settings`` reads these declarations; the dense cache key, the relaunch check, the
report's conditions, the range checks and the Trainer's arguments all follow from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

NOTHING = "nothing"
DENSE = "dense"
PRUNING = "pruning"
EFFECTS = (NOTHING, DENSE, PRUNING)

Flat = Mapping[str, Any]
Predicate = Callable[[Flat], bool]


@dataclass(frozen=True)
class Range:
    """Allowed values: ``low``/``high`` bounds (``inclusive`` or not), ``null`` allowed or not,
    ``odd`` and ``finite``; ``hint`` is the fix a user reads after the range. NaN is never in
    range."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    null: bool = False
    odd: bool = False
    finite: bool = False
    hint: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range (the text after "must be"), or None."""
        if value is None:
            return None if self.null else self.text()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.text()
        ok = not math.isnan(value) and (math.isfinite(value) or not self.finite)
        if self.low is not None:
            ok = ok and (value >= self.low if self.low_inclusive else value > self.low)
        if self.high is not None:
            ok = ok and (value <= self.high if self.high_inclusive else value < self.high)
        if self.odd:
            ok = ok and float(value).is_integer() and int(value) % 2 == 1
        return None if ok else self.text()

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            left = "[" if self.low_inclusive else "("
            right = "]" if self.high_inclusive else ")"
            words = f"in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            words = f"at least {self.low:g}" if self.low_inclusive else f"> {self.low:g}"
        else:
            words = f"{'<=' if self.high_inclusive else '<'} {self.high:g}"
        if self.odd:
            words = f"odd and {words}"
        return f"{words}{' or null' if self.null else ''}"


def at_least(low: float, hint: str = "", null: bool = False) -> Range:
    return Range(low=low, hint=hint, null=null)


def above(low: float, hint: str = "") -> Range:
    return Range(low=low, low_inclusive=False, hint=hint)


def between(low: float, high: float, hint: str = "", **kwargs) -> Range:
    return Range(low=low, high=high, hint=hint, **kwargs)


def setting(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    changes: str | None = None,
    applies: Predicate | None = None,
    check: Range | None = None,
    lightning: bool = True,
) -> Any:
    """A schema field with its declaration (see the module's docstring)."""
    if changes is not None and changes not in EFFECTS:
        raise ValueError(f"changes={changes!r}: one of {EFFECTS}")
    metadata = {"changes": changes, "applies": applies, "check": check, "lightning": lightning}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# -- predicates of a flat config --------------------------------------------------------------


def when(key: str, *values: Any) -> Predicate:
    """The key ``key`` has one of ``values``."""
    return lambda flat: flat.get(key) in values


def unless(key: str, *values: Any) -> Predicate:
    """The key ``key`` has none of ``values``."""
    return lambda flat: flat.get(key) not in values


def is_set(key: str) -> Predicate:
    """The key ``key`` is not null."""
    return lambda flat: flat.get(key) is not None


def all_of(*predicates: Predicate) -> Predicate:
    return lambda flat: all(p(flat) for p in predicates)
