"""The report's paired comparisons: A − B within each seed and fold, for the natural contrasts
of the paper tables and for any the user names (``--paired KEY=V1,V2``).

Which conditions are contrasted:

- Two conditions (rows of "All conditions") are contrasted on a key when they differ in that
  key alone. Every other key has the same value on both, or is blank on one of them because it
  does not apply to that side's method (``conditions.applicable``: ``retrain.rewind_epoch`` unless
  ``retrain.rewind=epoch``, another criterion's options).
- The natural contrasts: magnitude − random (``prune.method``, paper A's Tables 4 and 5) and
  rewind − continuation (``retrain.rewind`` = pretrained, epoch or random, against none: Tables 4
  and 2). ``--paired KEY=V1,V2`` adds V1 − V2 for each pair of conditions that differ in KEY
  alone; a key or value that no condition has is an error that names those that exist.

How jobs are paired (never silently):

- A job of A and one of B are paired when they share the seed and fold (``Job.repeat``), the
  test images by identity (``data/test_digest``, the test ids, images and labels; for files
  from before it was recorded, the test ids of their predictions; only where neither exists,
  the split settings ``data.split_seed``, ``data.split``, ``data.folds``) and the dense model:
  the same ``dense/cache_key`` where both record one (or, where the keys differ, the same
  ``predictions_dense.csv``: ``retrain.rewind=epoch`` puts theta_k's epoch in the key of the same
  training), else the same data, model, optim and trainer settings. Everything else is
  listed with its reason: "seed 3 only in method=magnitude", "different dense model",
  "different test split".
- Several jobs of one condition at one seed and fold (``prune.seed`` draws) are averaged into
  one value first, as the tables do; McNemar's test needs one model per side, so that seed gets
  none.
- The metric is ``test/acc`` in percentage points. Per contrast: n pairs, the mean paired
  difference, its paired t 95% CI, the unpaired (Welch) CI of the same values for comparison,
  and the exact sign-flip p (``report.paired``). Per seed: McNemar's exact test on the shared
  test images, from the jobs' ``predictions_<stage>.csv`` (``store.predictions``), rows matched
  by item id; a job without that file (an older version) gets "no predictions", and two jobs
  whose test images differ are not compared.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from fer_lottery.config import settings
from fer_lottery.config.declaration import DENSE
from fer_lottery.core.errors import FerLotteryError
from fer_lottery.core.paths import predictions_csv
from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import Row, applicable, repeats, short_name
from fer_lottery.report.paired import SignFlip, mcnemar_exact, paired_t_ci, sign_flip_p, welch_ci
from fer_lottery.report.tables import markdown_table
from fer_lottery.store.predictions import read_predictions, run_predictions

CSV_NAME = "paired.csv"
SPLIT_KEYS = ("data.split_seed", "data.split", "data.folds")
_ABSENT = object()  # stands in for a key's value to ask whether the key applies at all


class ContrastError(FerLotteryError):
    """A ``--paired`` contrast names a key or a value that no condition has."""


@dataclass(frozen=True)
class Spec:
    """A contrast: ``key`` at value ``a`` minus ``key`` at value ``b``."""

    key: str
    a: str
    b: str
    name: str = ""  # a natural contrast's name; "" for one the user named

    @property
    def text(self) -> str:
        return f"{self.key}={self.a},{self.b}"


NATURAL = (
    Spec("prune.method", "magnitude", "random", "magnitude − random"),
    *(
        Spec("retrain.rewind", rewind, "none", "rewind − continuation")
        for rewind in ("pretrained", "epoch", "random")
    ),
)


def parse_spec(text: str) -> Spec:
    """``KEY=V1,V2`` -> ``Spec`` (ValueError if it is not of that form)."""
    key, sep, values = text.partition("=")
    parts = values.split(",")
    if not sep or not key or len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError(f"{text!r}: expected KEY=V1,V2 with two different values")
    return Spec(key.strip(), parts[0].strip(), parts[1].strip())


@dataclass
class Contrast:
    """A − B of two conditions: the paired values and what could not be paired."""

    spec: Spec
    a: Row
    b: Row
    condition: str
    a_values: list[float] = field(default_factory=list)  # test/acc in %, one per paired repeat
    b_values: list[float] = field(default_factory=list)
    mcnemar: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)

    @property
    def diffs(self) -> list[float]:
        return [a - b for a, b in zip(self.a_values, self.b_values, strict=True)]

    @property
    def title(self) -> str:
        """``method: magnitude − random``, ``rewind: pretrained − none (rewind − continuation)``."""
        difference = f"{self.spec.a} − {self.spec.b}"
        name = self.spec.name
        return f"{short_name(self.spec.key)}: {difference}" + (
            f" ({name})" if name and name != difference else ""
        )

    def stats(self) -> tuple[tuple[float, float, float], tuple[float, float, float], SignFlip]:
        """The paired t CI, the unpaired (Welch) CI and the sign-flip p of the differences."""
        diffs = self.diffs
        return paired_t_ci(diffs), welch_ci(self.a_values, self.b_values), sign_flip_p(diffs)


def _is(value, text: str) -> bool:
    """Whether a condition's value is the one a contrast names (``0.9`` is ``0.90``)."""
    if value is None:
        return text.lower() in ("none", "null")
    if str(value).lower() == text.lower():
        return True
    try:
        return math.isclose(float(value), float(text), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _does_not_apply(row: Row, key: str) -> bool:
    """Whether ``key`` is blank on ``row`` because it does not apply to its jobs' method."""

    def blanked(job: Job) -> bool:
        if job.condition.get(key) is not None:
            return False
        if job.config.get(key) is not None:
            return True
        return applicable({**job.config, key: _ABSENT}).get(key) is None

    return all(blanked(j) for j in row.jobs)


def _other_differences(a: Row, b: Row, key: str, keys: list[str]) -> list[str]:
    """The keys besides ``key`` in which rows ``a`` and ``b`` differ (blanks match anything)."""
    out = []
    for k in keys:
        if k == key:
            continue
        va, vb = a.values.get(k), b.values.get(k)
        if json.dumps(va, default=str) == json.dumps(vb, default=str):
            continue
        if (va is None and _does_not_apply(a, k)) or (vb is None and _does_not_apply(b, k)):
            continue
        out.append(k)
    return out


def _condition(a: Row, b: Row, key: str, keys: list[str]) -> str:
    parts = []
    for k in keys:
        value = a.values.get(k) if a.values.get(k) is not None else b.values.get(k)
        if k != key and value is not None:
            parts.append(f"{short_name(k)}={value}")
    return ", ".join(parts) or "all"


def _repeat_name(repeat: tuple, short: bool = False) -> str:
    seed, fold = repeat
    if short:
        return f"s{seed}" + ("" if fold is None else f" f{fold}")
    return f"seed {seed}" + ("" if fold is None else f", fold {fold}")


def _repeat_order(repeat: tuple) -> tuple:
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in repeat)


def _dense_settings(job: Job) -> dict:
    """What a job's dense model is trained from, where it records no ``dense/cache_key``."""
    dense = settings.effective(job.config, (DENSE,))
    return {k: v for k, v in dense.items() if k != "data.fold"}


def _why_not_paired(jobs: list[Job], key: str = "") -> str | None:
    """Why jobs of one seed and fold on the two sides do not share a test split and a dense
    model, or None when they do. When the contrast's ``key`` is itself a setting of the dense
    stage (``model.frozen_layers``, ``optim.lr``), the dense models differ by design: the jobs
    are paired on the seed, fold and test split alone."""
    tests = _test_identities(jobs)
    if tests is not None and len(tests) > 1:
        return "different test images (" + " vs ".join(tests) + ")"
    splits = {json.dumps([j.config.get(k) for k in SPLIT_KEYS], default=str) for j in jobs}
    if tests is None and len(splits) > 1:
        return "different test split (" + ", ".join(SPLIT_KEYS) + ")"
    if settings.changes(key) == DENSE and key not in SPLIT_KEYS:
        return None
    keys = [j.results.get("dense/cache_key") for j in jobs]
    if all(keys):
        if len(set(keys)) > 1 and not _same_dense_predictions(jobs):
            return f"different dense model (dense/cache_key {' vs '.join(dict.fromkeys(keys))})"
        return None
    configs = [_dense_settings(j) for j in jobs]
    differ = sorted({k for c in configs for k in c if len({str(d.get(k)) for d in configs}) > 1})
    if differ:
        return f"different dense model (no dense/cache_key; {', '.join(differ)} differ)"
    return None


def _test_identities(jobs: list[Job]) -> list[str] | None:
    """The distinct test sets of ``jobs`` by identity: their ``data/test_digest`` (test ids,
    images and labels) where every job records one, else the test item ids of their
    predictions. None when some job has neither (then the split settings decide)."""
    digests = [job.results.get("data/test_digest") for job in jobs]
    if all(digests):
        n = {d: job.results.get("data/n_test") for d, job in zip(digests, jobs, strict=True)}
        return [f"data/test_digest {d}, {n[d]} images" for d in dict.fromkeys(digests)]
    seen: dict[str, None] = {}
    for job in jobs:
        try:
            predictions = _test_predictions(job)
        except (OSError, ValueError, IndexError, StopIteration):
            predictions = None
        if predictions is None:
            return None
        seen[f"{len(predictions.items)} test ids {_ids_hash(predictions.items)}"] = None
    return list(seen)


def _ids_hash(items) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, items))).encode()).hexdigest()[:12]


def _same_dense_predictions(jobs: list[Job]) -> bool:
    """Whether every job holds the same ``predictions_dense.csv``: one dense model, whose keys
    differ only in what the training does not depend on (theta_k's epoch for
    ``retrain.rewind=epoch``, which is in the cache key because that entry stores one more file)."""
    texts = set()
    for job in jobs:
        path = predictions_csv(job.dir, "dense")
        if not path.is_file():
            return False
        texts.add(path.read_bytes())
    return len(texts) == 1


def _test_predictions(job: Job):
    path = run_predictions(job.dir, job.results)
    if path is None:
        return None
    return read_predictions(path).get("test")


def mcnemar_cell(a: Job, b: Job) -> str:
    """McNemar's exact test of two jobs on their shared test images, as ``b=.. c=.. p=..``, or
    why it cannot be computed."""
    try:
        pa, pb = _test_predictions(a), _test_predictions(b)
    except (OSError, ValueError, IndexError, StopIteration) as exc:
        return f"unreadable predictions ({type(exc).__name__})"
    if pa is None or pb is None:
        return "no predictions"
    if len(set(pa.items)) != len(pa.items) or sorted(pa.items) != sorted(pb.items):
        return "test images differ"
    where = {item: i for i, item in enumerate(pb.items)}
    order = [where[item] for item in pa.items]
    if list(pa.labels) != [pb.labels[i] for i in order]:
        return "test labels differ"
    b_count, c_count, p = mcnemar_exact(pa.correct, pb.correct[order])
    return f"b={b_count} c={c_count} p={p:.3g}"


def pair(spec: Spec, a: Row, b: Row, keys: list[str]) -> Contrast:
    """The paired values of A and B, seed by seed (see the module doc)."""
    out = Contrast(spec, a, b, _condition(a, b, spec.key, keys))
    side_a = {group[0].repeat: group for group in repeats(a.jobs)}
    side_b = {group[0].repeat: group for group in repeats(b.jobs)}
    short = short_name(spec.key)
    for repeat in sorted(side_a.keys() | side_b.keys(), key=_repeat_order):
        if repeat not in side_b:
            out.unpaired.append(f"{_repeat_name(repeat)} only in {short}={spec.a}")
            continue
        if repeat not in side_a:
            out.unpaired.append(f"{_repeat_name(repeat)} only in {short}={spec.b}")
            continue
        ja, jb = side_a[repeat], side_b[repeat]
        reason = _why_not_paired(ja + jb, spec.key)
        if reason:
            out.unpaired.append(f"{_repeat_name(repeat)}: {reason}")
            continue
        out.a_values.append(100 * statistics.fmean(float(j.results["test/acc"]) for j in ja))
        out.b_values.append(100 * statistics.fmean(float(j.results["test/acc"]) for j in jb))
        cell = (
            mcnemar_cell(ja[0], jb[0])
            if len(ja) == len(jb) == 1
            else f"{len(ja)} and {len(jb)} jobs averaged, not compared"
        )
        out.mcnemar.append(f"{_repeat_name(repeat, short=True)}: {cell}")
    return out


def _varying(rows: list[Row], keys: list[str]) -> list[str]:
    return [k for k in keys if len({json.dumps(r.values.get(k), default=str) for r in rows}) > 1]


def check_spec(spec: Spec, rows: list[Row], keys: list[str]) -> None:
    """A user's contrast must name a key that splits the conditions and values they have."""
    varying = _varying(rows, keys)
    named = ", ".join(varying) or "none"
    if not any(spec.key in j.config for r in rows for j in r.jobs):
        raise ContrastError(
            f"--paired {spec.text}: no job has the key {spec.key}; keys that "
            f"vary between these conditions: {named}"
        )
    if spec.key not in varying:
        raise ContrastError(
            f"--paired {spec.text}: {spec.key} does not split these jobs into "
            f"conditions; keys that do: {named}"
        )
    values = list(dict.fromkeys(str(r.values.get(spec.key)) for r in rows))
    for v in (spec.a, spec.b):
        if not any(_is(r.values.get(spec.key), v) for r in rows):
            raise ContrastError(
                f"--paired {spec.text}: no condition has {spec.key}={v}; "
                f"{spec.key} takes {', '.join(values)} here"
            )


def contrasted_rows(rows: list[Row], keys: list[str], spec: Spec) -> tuple[list, set[str]]:
    """The (A, B) rows that differ in ``spec.key`` alone, A at ``spec.a`` and B at ``spec.b``;
    and the other keys in which rows at those two values differ (for a note)."""
    found, near = [], set()
    for a in rows:
        for b in rows:
            if a is b or not _is(a.values.get(spec.key), spec.a):
                continue
            if not _is(b.values.get(spec.key), spec.b):
                continue
            other = _other_differences(a, b, spec.key, keys)
            if other:
                near.update(other)
            else:
                found.append((a, b))
    return found, near


def find_contrasts(
    rows: list[Row], keys: list[str], specs: list[Spec]
) -> tuple[list[Contrast], list[str]]:
    """Every pair of rows that one of ``specs`` contrasts, paired; and a line for each user
    spec that found no pair of conditions differing in its key alone."""
    contrasts: list[Contrast] = []
    seen: set[tuple] = set()
    notes: list[str] = []
    for spec in specs:
        if spec.key not in keys:
            continue
        found, near = contrasted_rows(rows, keys, spec)
        for a, b in found:
            if (spec.key, id(a), id(b)) not in seen:
                seen.add((spec.key, id(a), id(b)))
                contrasts.append(pair(spec, a, b, keys))
        if not found and not spec.name:
            also = ", ".join(f"`{k}`" for k in sorted(near))
            notes.append(
                f"`--paired {spec.text}`: no two conditions differ in `{spec.key}` alone"
                + (f" (they also differ in {also})." if also else ".")
            )
    return contrasts, notes


def _num(x: float, signed: bool = False) -> str:
    if math.isnan(x):
        return ""
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _ci(ci: tuple[float, float, float]) -> str:
    _, lo, hi = ci
    if math.isnan(lo):
        return ""
    if lo == hi:  # the t interval of identical values has no width: not a measurement
        return f"[{_num(lo, True)}, {_num(hi, True)}] (values all equal)"
    return f"[{_num(lo, True)}, {_num(hi, True)}]"


INTRO = (
    "A − B in test accuracy (percentage points), taken seed by seed: jobs of A and B with the "
    "same seed and fold, the same test split and the same dense model (`dense/cache_key`) are "
    "one pair, and anything else is listed below, never paired. Jobs of one condition at one "
    "seed and fold (`prune.seed` draws) are averaged first. Paired 95% CI: Student t over the "
    "pairs (n − 1 df); the unpaired (Welch) CI of the same values shows what ignoring the pairing "
    "would give. Sign-flip p: the share of the 2^n sign flips of the differences whose |mean| is "
    "at least the observed one, exact up to 12 pairs (Monte Carlo, fixed seed, above). McNemar: "
    "exact test per seed on the shared test images; b = images A gets right and B wrong, c = the "
    "reverse."
)
HEAD = [
    "contrast (A − B)",
    "condition",
    "n pairs",
    "mean A − B (pp)",
    "paired 95% CI",
    "unpaired 95% CI (Welch)",
    "sign-flip p",
    "McNemar per seed",
]


def paired_section(
    rows: list[Row], keys: list[str], user: list[str] | None, out: Path
) -> list[str]:
    """The "Paired comparisons" section, and ``paired.csv`` in ``out``; nothing (and no CSV)
    when no contrast applies and none was asked for. ContrastError for a ``--paired`` that
    names a key or value no condition has."""
    specs = [parse_spec(s) for s in user or []]
    for spec in specs:
        check_spec(spec, rows, keys)
    contrasts, notes = find_contrasts(rows, keys, [*NATURAL, *specs])
    path = Path(out) / CSV_NAME
    if not contrasts and not notes:
        path.unlink(missing_ok=True)
        return []
    lines = []
    for c in contrasts:
        t, _welch, flip = c.stats()
        cells = [c.title, c.condition, str(len(c.diffs)), _num(t[0], True), _ci(t)]
        cells += [_ci(_welch), flip.label(), "; ".join(c.mcnemar)]
        lines.append(cells)
    md = ["## Paired comparisons\n", INTRO + "\n"]
    if lines:
        md += [markdown_table(HEAD, lines), ""]
    md += [f"{note}\n" for note in notes]
    unpaired = [f"- {c.title}, {c.condition}: {'; '.join(c.unpaired)}" for c in contrasts]
    unpaired = [u for u, c in zip(unpaired, contrasts, strict=True) if c.unpaired]
    if unpaired:
        md += ["Not paired:\n", *unpaired, ""]
    elif contrasts:
        md += ["Every seed and fold of these conditions was paired.\n"]
    write_paired_csv(path, contrasts)
    return md


def write_paired_csv(path: Path, contrasts: list[Contrast]) -> None:
    """One line per contrast: what it compares, its paired statistics, McNemar, the unpaired."""
    head = ["key", "a", "b", "condition", "n_pairs", "mean_diff_pp", "paired_ci95_low"]
    head += ["paired_ci95_high", "welch_ci95_low", "welch_ci95_high", "sign_flip_p"]
    head += ["sign_flip_exact", "mcnemar", "unpaired"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        for c in contrasts:
            t, w, flip = c.stats()
            line = [c.spec.key, c.spec.a, c.spec.b, c.condition, len(c.diffs), t[0], t[1], t[2]]
            line += [w[1], w[2], flip.p, flip.exact, "; ".join(c.mcnemar)]
            line += ["; ".join(c.unpaired)]
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in line])
