"""The report's statistics: mean, std, n and a 95% confidence interval of one metric.

Also which results the report summarises, and which of them are fractions shown in percent.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Results stored as fractions and shown in percent.
FRACTION_KEYS = {
    "test/acc",
    "val/acc_best",
    "dense/test/acc",
    "dense/val/acc_best",
    "prune/sparsity",
    "prune/units_removed_frac",
    "prune/acc_before_retrain",
}
METRICS = (
    "test/acc",
    "val/acc_best",
    "prune/sparsity",
    "prune/units_removed_frac",
    "prune/units_removed",
    "prune/acc_before_retrain",
    "dense/test/acc",
)


@dataclass
class Stat:
    """Mean, std, n and a 95% CI of one metric over the repeats of one condition."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, values: list[float], n_test: int | None = None, bounded: bool = False) -> Stat:
        """95% CI of the mean: Student t over repeats, clipped at 0 (and at 1 for a fraction).

        ``n_test`` marks the values as accuracies on that many distinct test images in all. A
        single run, or repeats that agree exactly (a t interval of zero width), get the
        binomial (Wilson) interval of ``n_test`` trials instead: the test split's own sampling
        error. Seeds that share one test split add no trials, so ``n_test`` is that split's
        size (with folds, the sum of the folds' sizes: see ``n_test_images``).
        """
        n = len(values)
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if n > 1 else float("nan")
        if n > 1 and std > 0:
            # The t quantile (scipy.stats.t.ppf computes it with stdtrit too), imported here
            # from scipy.special: scipy.stats alone takes about a second to import.
            from scipy.special import stdtrit

            half = float(stdtrit(n - 1, 0.975)) * std / math.sqrt(n)
            low, high = mean - half, mean + half
            low = max(0.0, low)  # every reported metric is >= 0
            if n_test or bounded:
                high = min(1.0, high)
            return cls(mean, std, n, low, high)
        if n_test and 0 <= mean <= 1:
            low, high = wilson(mean, n_test)
            return cls(mean, std, n, low, high)
        return cls(mean, std, n, mean if n > 1 else float("nan"), mean if n > 1 else float("nan"))


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
