"""The report's data: jobs found under sweep folders, grouped into conditions, with statistics.

A *condition* is one setting of the keys that vary between jobs, except the seed and the fold:
its jobs are repeats, summarised as mean, std, n and a 95% confidence interval. Keys that do not
apply to a job's method (``prune.angle`` for magnitude pruning, every ``prune.*`` key of a dense
run) are blanked first, so they neither split rows nor show up in them.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from fer_lottery.failures import FAILED_FILE
from fer_lottery.io import flatten

# Repeats of one condition: averaged over, never grouped by.
REPEAT_KEYS = {"seed", "prune.seed", "data.fold"}
# Config keys that never define an experimental condition.
IGNORE_PREFIXES = (
    "published",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "cache_",
    "data.root",
    "data.num_workers",
    "data.crops_csv",
)
DISTINCTIVENESS_KEYS = ("angle", "complementary", "normalize", "norm_std", "variant", "layers")
MAGNITUDE_KEYS = ("ratio", "scope", "include")
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
class Job:
    """One finished job: its results, its flat config, and its condition (blanked keys)."""

    dir: Path
    results: dict
    config: dict
    condition: dict = field(default_factory=dict)

    @property
    def repeat(self) -> tuple:
        return tuple(self.config.get(k) for k in sorted(REPEAT_KEYS))

    @property
    def pruned(self) -> bool:
        return "prune/sparsity" in self.results


@dataclass
class Problem:
    """A job of the sweep without results: failed, killed, still running, or never started."""

    name: str
    reason: str


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

        ``n_test`` marks the values as accuracies on that many test images. A single run, or
        repeats that agree exactly (a t interval of zero width), get the binomial (Wilson)
        interval of all their test predictions instead: the test split's own sampling error.
        """
        n = len(values)
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if n > 1 else float("nan")
        if n > 1 and std > 0:
            from scipy.stats import t

            half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
            low, high = mean - half, mean + half
            low = max(0.0, low)  # every reported metric is >= 0
            if n_test or bounded:
                high = min(1.0, high)
            return cls(mean, std, n, low, high)
        if n_test and 0 <= mean <= 1:
            low, high = wilson(mean, n * n_test)
            return cls(mean, std, n, low, high)
        return cls(mean, std, n, mean if n > 1 else float("nan"), mean if n > 1 else float("nan"))


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _job_config(results: dict) -> dict:
    return flatten(results.get("config", {}))


def _log_error(job: Path) -> str | None:
    """The last ERROR line of a job's Hydra log, if any (why a job without results stopped)."""
    for log in job.glob("*.log"):
        errors = [ln for ln in log.read_text(errors="replace").splitlines() if "[ERROR]" in ln]
        if errors:
            return errors[-1].split("[ERROR] - ", 1)[-1]
    return None


def _expected_jobs(sweep_dir: Path) -> list[str]:
    """Job folder names a basic-sweeper multirun was asked for (from its ``multirun.yaml``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from fer_lottery.sweep_names import swept_dirname

    cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
    if "BasicSweeper" not in str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")):
        return []
    task = list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    parsed = OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in params.items()] + task
    )
    # The command line beats the preset's params, as in BasicSweeper.
    by_key = {o.key_or_group: o for o in parsed}
    batches = BasicSweeper.split_arguments(list(by_key.values()), None)
    return [swept_dirname(str(sweep_dir), job) for batch in batches for job in batch]


def collect(dirs: list[Path]) -> tuple[list[Job], list[Problem]]:
    """Every finished job under ``dirs``, and every job of their sweeps that has no results."""
    jobs: list[Job] = []
    problems: list[Problem] = []
    for d in map(Path, dirs):
        for path in sorted(d.rglob("results.json")):
            results = json.loads(path.read_text())
            jobs.append(Job(path.parent, results, _job_config(results)))
        seen: set[str] = set()
        for hydra_dir in sorted(d.rglob(".hydra")):
            job = hydra_dir.parent
            seen.add(job.name)
            if (job / "results.json").is_file() or (job / "folds.json").is_file():
                continue
            if list(job.glob("fold=*/results.json")):
                continue  # a k-fold job still running: its finished folds are counted
            if (job / FAILED_FILE).is_file():
                reason = "failed: " + json.loads((job / FAILED_FILE).read_text())["error"]
            else:
                error = _log_error(job)
                reason = f"failed: {error}" if error else "no results.json (killed or unfinished)"
            problems.append(Problem(str(job), reason.splitlines()[0]))
        for sweep in sorted(p.parent for p in d.rglob("multirun.yaml")):
            for name in _expected_jobs(sweep):
                if name not in seen and not (sweep / name).exists():
                    problems.append(Problem(str(sweep / name), "never started"))
    return jobs, problems


def applicable(config: dict) -> dict:
    """The config with keys that do not apply to this run's method set to None."""
    out = dict(config)
    method = out.get("prune.method")
    ratio = out.get("prune.ratio") or 0.0
    dense_only = method == "none" or (method in ("magnitude", "random") and ratio <= 0)
    for key in [k for k in out if k.startswith("prune.")]:
        name = key.split(".", 1)[1]
        if dense_only:
            out[key] = None
        elif method == "distinctiveness" and name in MAGNITUDE_KEYS:
            out[key] = None
        elif method in ("magnitude", "random") and name.split(".")[0] in DISTINCTIVENESS_KEYS:
            out[key] = None
        elif name == "rewind_epoch" and out.get("prune.rewind") != "epoch":
            out[key] = None
    variant = out.get("prune.variant")
    if variant in ("paper_a", "paper_b"):  # the literal paper rules ignore these options
        for name in ("normalize", "complementary") + (
            ("norm_std",) if variant == "paper_a" else ()
        ):
            out[f"prune.{name}"] = None
    return out


def condition_keys(jobs: list[Job]) -> list[str]:
    """Keys that vary between jobs once non-applicable keys are blanked (not seed or fold)."""
    for job in jobs:
        job.condition = applicable(job.config)
    keys = sorted({k for j in jobs for k in j.condition})
    out = []
    for k in keys:
        if k in REPEAT_KEYS or k.startswith(IGNORE_PREFIXES):
            continue
        if len({json.dumps(j.condition.get(k), default=str) for j in jobs}) > 1:
            out.append(k)
    return out


@dataclass
class Row:
    """One condition: its key values, its jobs, and the statistics of each metric."""

    values: dict
    jobs: list[Job]
    stats: dict[str, Stat] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    dense: bool = False

    def label(self, keys: list[str]) -> str:
        parts = [
            f"{k.split('.')[-1]}={self.values[k]}" for k in keys if self.values.get(k) is not None
        ]
        return ", ".join(parts) or "all"


def _stats(members: list[Job], prefix: str = "") -> dict[str, Stat]:
    out: dict[str, Stat] = {}
    n_test = members[0].results.get("data/n_test") if members else None
    for metric in METRICS:
        vals = [float(m.results[prefix + metric]) for m in members if prefix + metric in m.results]
        if vals:
            is_acc = metric.endswith("acc") or metric == "prune/acc_before_retrain"
            out[metric] = Stat.of(vals, n_test if is_acc else None, metric in FRACTION_KEYS)
    return out


def rows_of(jobs: list[Job], keys: list[str]) -> list[Row]:
    """One row per condition, in a stable order (by the keys' values)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        values = {k: job.condition.get(k) for k in keys}
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), []).append(job)
    rows = [Row({k: g[0].condition.get(k) for k in keys}, g, _stats(g)) for g in groups.values()]
    rows.sort(key=lambda r: [_sort_key(r.values.get(k)) for k in keys])
    return rows


def _sort_key(value) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def dense_rows(jobs: list[Job], keys: list[str]) -> list[Row]:
    """The dense model of each non-pruning condition, once per repeat (sweep jobs share it)."""
    dense_keys = [k for k in keys if not k.startswith("prune.")]
    groups: dict[str, dict[tuple, Job]] = {}
    for job in jobs:
        if "dense/test/acc" in job.results:
            values = {k: job.condition.get(k) for k in dense_keys}
            key = json.dumps(values, sort_keys=True, default=str)
            groups.setdefault(key, {})[job.repeat] = job
    rows = []
    for by_repeat in groups.values():
        members = list(by_repeat.values())
        values = {
            k: ("dense" if k.startswith("prune.") else members[0].condition.get(k)) for k in keys
        }
        stats = _stats(members, prefix="dense/")
        stats["prune/sparsity"] = Stat(0.0, float("nan"), len(members), float("nan"), float("nan"))
        rows.append(Row(values, members, stats, dense=True))
    return rows


# -- the papers' numbers --------------------------------------------------------------------------


def published_blocks(jobs: list[Job]) -> list[dict]:
    """The distinct ``published`` blocks of the presets the jobs ran (one per paper table)."""
    seen: dict[str, dict] = {}
    for job in jobs:
        block = job.results.get("config", {}).get("published")
        if block:
            seen.setdefault(json.dumps(block, sort_keys=True), block)
    return list(seen.values())


def _same(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def paper_values(block: dict, values: dict) -> dict[str, float]:
    """The published numbers of the block's row whose ``match`` keys equal ``values``."""
    match = list(block.get("match") or [])
    for row in block.get("rows") or []:
        if all(k in values and _same(values[k], v) for k, v in zip(match, row["at"], strict=True)):
            return {k: float(v) for k, v in row.items() if k not in ("at", "runs")}
    return {}


def block_jobs(block: dict, jobs: list[Job]) -> list[Job]:
    """The jobs that ran the preset with this ``published`` block."""
    text = json.dumps(block, sort_keys=True)
    return [
        j
        for j in jobs
        if json.dumps(j.results.get("config", {}).get("published"), sort_keys=True) == text
    ]


def comparison_rows(block: dict, jobs: list[Job]) -> list[Row]:
    """Ours grouped by the paper table's own keys (other swept keys pooled), beside the paper."""
    match = list(block.get("match") or [])
    members = block_jobs(block, jobs)
    pruned = [j for j in members if j.pruned] or members
    rows = rows_of(pruned, match)
    for row in rows:
        row.paper = paper_values(block, {k: row.jobs[0].config.get(k) for k in match})
    return rows


# -- convergence curves --------------------------------------------------------------------------


def val_curve(job_dir: Path, stage: str) -> dict[int, float]:
    """Validation accuracy per epoch of one stage, from Lightning's CSV log."""
    path = job_dir / "csv" / stage / "metrics.csv"
    if not path.is_file():
        return {}
    out: dict[int, float] = {}
    with path.open() as f:
        for rec in csv.DictReader(f):
            if rec.get("val/acc"):
                out[int(rec["epoch"])] = float(rec["val/acc"])
    return out


def mean_curve(curves: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and std per epoch over the runs that reached that epoch."""
    epochs = sorted({e for c in curves for e in c})
    means, stds = [], []
    for e in epochs:
        vals = [c[e] for c in curves if e in c]
        means.append(statistics.fmean(vals))
        stds.append(statistics.stdev(vals) if len(vals) > 1 else float("nan"))
    return epochs, means, stds
