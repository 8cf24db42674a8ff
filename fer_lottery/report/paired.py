"""Paired statistics of two conditions measured on the same seeds: the arithmetic alone.

Two conditions run at one seed (and fold) share a dense model and a test split, so their
difference at that seed is one paired observation; the seed's own effect cancels in it. The
rules, each written once here (``report.contrasts`` decides what is paired):

- ``paired_t_ci``: the mean of the paired differences and its Student t interval with n - 1
  degrees of freedom (mean ± t · sd / sqrt(n)). One pair gives no interval (NaN bounds); pairs
  that agree exactly give an interval of zero width.
- ``sign_flip_p``: the two-sided permutation p-value of the mean difference. Under the null
  hypothesis each difference is as likely to have either sign, so p is the share of the 2^n
  sign flips whose |mean| is at least the observed |mean| (the identity flip included, with a
  relative tolerance of 1e-9 for ties of floating-point sums). Up to ``EXACT_MAX`` = 12 pairs
  every flip is enumerated and p is exact; above that, ``MC_DRAWS`` random flips from a fixed
  seed (``MC_SEED``) estimate it as (hits + 1) / (draws + 1), labelled as Monte Carlo. With n
  pairs the smallest exact p is 2 / 2^n (2/32 = 0.0625 for 5 seeds).
- ``mcnemar_exact``: McNemar's exact test of two classifiers on the same images: b images A gets
  right and B wrong, c the reverse; p = min(1, 2 · P(X <= min(b, c))) with X ~ Bin(b + c, 1/2),
  computed in whole numbers; p = 1 when b + c = 0.
- ``welch_ci``: the unpaired (Welch) t interval of mean(a) - mean(b) with Welch–Satterthwaite
  degrees of freedom: what an analysis that ignores the pairing would report.

numpy and scipy only: no fer_lottery import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_MAX = 12  # at most this many pairs: every one of the 2^n sign flips is enumerated
MC_DRAWS = 100_000  # random sign flips above EXACT_MAX pairs
MC_SEED = 0  # their fixed seed: the same report gives the same p


def _t_quantile(df: float, level: float) -> float:
    # scipy.special rather than scipy.stats: the latter takes about a second to import.
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + level / 2))


def paired_t_ci(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the paired differences and its Student t interval (n - 1 df): (mean, lo, hi).

    One difference gives NaN bounds; no difference gives NaN throughout."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = _t_quantile(n - 1, level) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_ci(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """Unpaired mean(a) - mean(b) and its Welch t interval: (diff, lo, hi).

    NaN bounds when either side has fewer than two values; zero width when both are constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan, math.nan
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return diff, math.nan, math.nan
    vx, vy = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return diff, diff, diff
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = _t_quantile(df, level) * se
    return diff, diff - half, diff + half


@dataclass(frozen=True)
class SignFlip:
    """A sign-flip permutation p-value, and how it was found."""

    p: float
    exact: bool  # every flip enumerated; else Monte Carlo
    flips: int  # flips enumerated (2^n) or drawn

    def label(self) -> str:
        if math.isnan(self.p):
            return ""
        return f"{self.p:.4g} ({'exact' if self.exact else f'MC, {self.flips} draws'})"


def _hits(abs_d: np.ndarray, signs: np.ndarray, observed: float) -> int:
    """How many rows of ``signs`` give a |mean| at least the observed one."""
    means = np.abs(signs @ abs_d) / abs_d.size
    tol = 1e-9 * max(observed, float(abs_d.mean()), 1e-300)
    return int(np.count_nonzero(means >= observed - tol))


def sign_flip_p(diffs, exact_max: int = EXACT_MAX, draws: int = MC_DRAWS) -> SignFlip:
    """Two-sided sign-flip permutation p-value of the mean of ``diffs`` (see the module doc)."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return SignFlip(math.nan, True, 0)
    abs_d = np.abs(d)
    observed = abs(float(d.mean()))
    if n <= exact_max:
        codes = np.arange(2**n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)  # row k: the bits of k as signs
        return SignFlip(_hits(abs_d, signs, observed) / 2**n, True, 2**n)
    rng = np.random.default_rng(MC_SEED)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(draws, n))
    return SignFlip((_hits(abs_d, signs, observed) + 1) / (draws + 1), False, draws)


def binomial_two_sided(b: int, c: int) -> float:
    """Exact two-sided p of b against c successes of a fair coin: min(1, 2 P(X <= min(b, c)))."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def mcnemar_exact(correct_a, correct_b) -> tuple[int, int, float]:
    """McNemar's exact test on the same images: (b, c, p), b = A right and B wrong, c = A wrong
    and B right."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"McNemar needs the same images on both sides ({a.shape} vs {b_.shape})")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    return b, c, binomial_two_sided(b, c)
