"""k-fold cross-validation: run one experiment per fold and summarise them in ``folds.json``.

``data.folds=k`` with ``data.fold=null`` runs the k folds one after another inside one job, each
in ``<run_dir>/fold=<i>`` with its own ``results.json`` (its config shows ``data.fold=i``, so the
report can group over folds). ``data.fold=i`` runs only fold i, which spreads the folds over sweep
jobs. No ``results.json`` is written in the parent folder: the report globs them, and a summary
there would be counted as one more run.
"""

from __future__ import annotations

import copy
import logging
import statistics
from pathlib import Path

from omegaconf import DictConfig, open_dict

from fer_lottery.config import config_changes
from fer_lottery.core import paths
from fer_lottery.store.atomic import move_aside, write_json_atomic
from fer_lottery.store.results import ResultsError, read_results
from fer_lottery.tracking import retire

log = logging.getLogger(__name__)

# Per-fold metrics copied into folds.json, with their mean and std over folds.
FOLD_METRICS = ("test/acc", "val/acc_best")


def _data_changes(results: dict, cfg: DictConfig) -> list[str]:
    """The data under ``data.root`` as a change, when its files differ from those the recorded
    results were computed on (same config, other images: the results are stale)."""
    recorded = results.get("data/root_digest")
    if recorded is None:
        return []
    from fer_lottery.data.layout import root_digest

    now = root_digest(cfg.data.root)
    if now == recorded:
        return []
    return [f"the files under data.root={cfg.data.root} (added, removed or changed since)"]


def _run_one(cfg: DictConfig, run_dir: Path) -> dict:
    """Run one experiment in ``run_dir``, or load its results when it already finished."""
    done = run_dir / paths.RESULTS
    if done.is_file():  # a relaunched sweep skips the jobs that finished
        try:
            results = read_results(done)
        except ResultsError as exc:  # unusable: keep it for inspection and run the job again
            log.warning("%s; %s and running the job again", exc, move_aside(done, "unusable"))
        else:
            changed = config_changes(results["config"], cfg) + _data_changes(results, cfg)
            if not changed:
                log.info("%s exists: this job already finished, skipping it", done)
                return results
            # Never pass another config's results off as this one's: keep them, run again.
            moved = [move_aside(done, "stale")]
            for name in (paths.WEIGHTS, paths.MASK):
                if (run_dir / name).is_file():
                    moved.append(move_aside(run_dir / name, "stale"))
            for pattern in (paths.ROUND_MASK_GLOB, paths.PREDICTIONS_GLOB):
                moved += [move_aside(p, "stale") for p in sorted(run_dir.glob(pattern))]
            trackers = retire(run_dir, "a relaunch with another config: " + "; ".join(changed))
            moved += [trackers] if trackers else []
            log.warning(
                "%s holds the results of another config (%d setting(s) differ: %s); %s; running "
                "the job again with the new config",
                done,
                len(changed),
                "; ".join(changed[:5]) + ("; ..." if len(changed) > 5 else ""),
                "; ".join(moved),
            )
    from fer_lottery.experiment.runner import run_experiment  # heavy imports only when training

    return run_experiment(cfg, run_dir)


def summarize_folds(per_fold: list[dict], fold_dirs: list[Path]) -> dict:
    """The folds.json payload: k, fold folders (relative), per-fold metrics, and ``summary``.

    ``summary`` holds what a single run's results would (``test/acc``, ``val/acc_best`` as means
    over folds, ``data/n_test`` summed), so callers can print or optimise it the same way.
    ``test/acc_pooled`` is correct predictions over all test items, every item counted once.
    """
    k = len(per_fold)
    payload: dict[str, object] = {"k": k, "fold_dirs": [d.name for d in fold_dirs]}
    summary: dict[str, object] = {"folds": k}
    for key in FOLD_METRICS:
        values = [float(r[key]) for r in per_fold]
        payload[key] = values
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if k > 1 else float("nan")
    n_test = [int(r.get("data/n_test") or 0) for r in per_fold]
    payload["data/n_test"] = n_test
    summary["data/n_test"] = sum(n_test)
    if all(n_test):
        correct = sum(float(r["test/acc"]) * n for r, n in zip(per_fold, n_test, strict=True))
        summary["test/acc_pooled"] = correct / sum(n_test)
    payload["summary"] = summary
    return payload


def run_folds(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the experiment ``cfg`` describes in ``run_dir``: once, or once per fold.

    Without k-fold (``data.folds=null``) or for one fold (``data.fold=i``) this is
    ``run_experiment``. With ``data.folds=k`` and ``data.fold=null`` it runs fold 0..k-1 in
    ``run_dir/fold=<i>``, writes ``run_dir/folds.json`` and returns its summary. Finished runs and
    folds of the same config are loaded, not rerun.
    """
    run_dir = Path(run_dir)
    folds = cfg.data.get("folds")
    if folds is None or cfg.data.get("fold") is not None:
        return _run_one(cfg, run_dir)

    # No shortcut through an existing folds.json, which records no config: each fold's own
    # results.json is checked against its config (skipped when it matches, run when it does
    # not), and the summary is written anew from them.
    summary_path = run_dir / paths.FOLDS
    per_fold, fold_dirs = [], []
    for i in range(folds):
        cfg_i = copy.deepcopy(cfg)
        with open_dict(cfg_i):
            cfg_i.data.fold = i
        fold_dir = paths.fold_dir(run_dir, i)
        log.info("k-fold: fold %d of %d in %s", i, folds, fold_dir)
        per_fold.append(_run_one(cfg_i, fold_dir))
        fold_dirs.append(fold_dir)
    payload = summarize_folds(per_fold, fold_dirs)
    write_json_atomic(summary_path, payload)
    summary = payload["summary"]
    log.info(
        "k-fold (%d folds): test acc %.4f ± %.4f (pooled %.4f), val acc %.4f; %s",
        folds,
        summary["test/acc"],
        summary["test/acc_std"],
        summary.get("test/acc_pooled", float("nan")),
        summary["val/acc_best"],
        summary_path,
    )
    return summary
