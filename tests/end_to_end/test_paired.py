"""Paired comparisons in the report: the sign-flip p against a brute-force enumeration, the paired
CI against the unpaired one when the seeds share an effect, McNemar against a hand count, the
pairing rules on constructed jobs, and a real sweep's report with ``--paired``."""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import statistics
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fer_lottery import report
from fer_lottery.report.collect import Job
from fer_lottery.report.conditions import condition_keys, rows_of
from fer_lottery.report.contrasts import ContrastError, Spec, find_contrasts, paired_section
from fer_lottery.report.paired import (
    binomial_two_sided,
    mcnemar_exact,
    paired_t_ci,
    sign_flip_p,
    welch_ci,
)
from fer_lottery.store.predictions import Predictions, read_predictions, write_predictions
from tests.helpers import TINY_SFEW_UNCROPPED, TINY_SYNTHETIC_BATCH32, run_cli

# -- the statistics -------------------------------------------------------------------------------


def _brute_force_p(diffs: list[float]) -> float:
    """Every assignment of signs, written out in exact arithmetic (decimal fractions): the share
    with |sum| >= the observed |sum|."""
    exact = [Fraction(str(d)) for d in diffs]
    observed = abs(sum(exact))
    flips = list(itertools.product((1, -1), repeat=len(exact)))
    hits = sum(
        abs(sum(s * abs(d) for s, d in zip(signs, exact, strict=True))) >= observed
        for signs in flips
    )
    return hits / len(flips)


def test_sign_flip_p_equals_the_exact_enumeration():
    diffs = [1.5, -0.5, 2.0, 0.7, 1.1]
    flip = sign_flip_p(diffs)
    assert flip.exact and flip.flips == 32
    assert flip.p == _brute_force_p(diffs)
    # |sum| >= 4.8 of 5.8 in total: only flips of the 0.5 alone (and the mirror images) reach it
    assert flip.p == 4 / 32
    # All five positive with distinct sizes: only the identity and its mirror are as extreme.
    assert sign_flip_p([0.4, 1.2, 2.0, 0.9, 3.1]).p == 2 / 32
    # Ties count, though float sums miss some: 0.1 + 0.2 + 0.7 is the total, 1.0, exactly.
    ties = [0.1, 0.2, 0.3, 0.7, -0.3]
    assert sign_flip_p(ties).p == _brute_force_p(ties) == 12 / 32
    assert sign_flip_p([0.0, 0.0, 0.0]).p == 1.0 and sign_flip_p([2.0]).p == 1.0
    assert math.isnan(sign_flip_p([]).p)


def test_sign_flip_p_above_twelve_pairs_is_monte_carlo_near_the_exact_value():
    rng = np.random.default_rng(3)
    diffs = list(rng.normal(0.3, 1.0, size=14))
    flip = sign_flip_p(diffs)
    assert not flip.exact and "MC" in flip.label()
    assert flip.p == pytest.approx(_brute_force_p(diffs), abs=0.01)
    assert sign_flip_p(diffs).p == flip.p  # a fixed seed: the same report, the same p
    assert sign_flip_p(diffs, exact_max=14).p == _brute_force_p(diffs)


def test_the_paired_ci_is_narrower_when_the_seeds_share_a_large_effect():
    """Each seed's dense model sets the level (45-62%); pruning adds about 2 points to it."""
    seeds = [45.0, 62.0, 50.0, 58.0, 53.0]
    effect = [2.0, 2.6, 1.5, 2.2, 1.7]
    a = [s + e for s, e in zip(seeds, effect, strict=True)]
    mean, lo, hi = paired_t_ci([x - y for x, y in zip(a, seeds, strict=True)])
    diff, wlo, whi = welch_ci(a, seeds)
    assert mean == pytest.approx(diff) == pytest.approx(statistics.fmean(effect))
    assert hi - lo < (whi - wlo) / 10
    assert lo > 0 > wlo  # the pairing finds the effect; the unpaired interval cannot
    # The paired interval is the t interval of the differences (t(0.975, 4) = 2.776445).
    half = 2.776445 * statistics.stdev(effect) / math.sqrt(5)
    assert (lo, hi) == pytest.approx((mean - half, mean + half), rel=1e-6)
    one = paired_t_ci([1.5])
    assert one[0] == 1.5 and math.isnan(one[1]) and math.isnan(one[2])


def test_mcnemar_equals_a_hand_count():
    # 10 images: both right on 2, both wrong on 1, A alone right on 1, B alone right on 6.
    a = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0]
    b = [1, 1, 0, 0, 1, 1, 1, 1, 1, 1]
    assert mcnemar_exact(np.array(a, bool), np.array(b, bool)) == (1, 6, pytest.approx(0.125))
    # By hand: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
    assert binomial_two_sided(1, 6) == 2 * (1 + 7) / 128
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)  # no discordant image
    assert binomial_two_sided(3, 3) == 1.0
    assert binomial_two_sided(0, 5) == 2 / 32
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


# -- pairing constructed jobs ---------------------------------------------------------------------

ITEMS = [f"synthetic/Happy/{i:05d}" for i in range(10)]


def _job(tmp: Path, name: str, seed: int, correct: list[int] | None = None, **config) -> Job:
    """A finished pruning job with ``correct`` (one 0/1 per test image) as its predictions."""
    config = (
        {"seed": seed, "data.fold": None, "data.split_seed": 1, "data.split": "[0.7]"}
        | {
            "prune.method": "magnitude",
            "prune.ratio": 0.9,
            "retrain.rewind": "none",
            "retrain.rewind_epoch": 1,
            "model.name": "resnet18",
        }
        | config
    )
    folder = tmp / name
    folder.mkdir(parents=True)
    correct = correct if correct is not None else [1] * 5 + [0] * 5
    results = {"test/acc": sum(correct) / len(correct), "prune/sparsity": 0.9}
    results["dense/cache_key"] = config.pop("dense", f"key{seed}")
    if config.pop("predictions", True):
        labels = np.zeros(len(correct), dtype=np.int64)
        preds = np.array([0 if c else 1 for c in correct], dtype=np.int64)
        items = config.pop("items", ITEMS)
        test = Predictions(items, labels, preds, np.full((len(correct), 2), 0.5))
        write_predictions(folder, "retrain", ["A", "B"], {"test": test})
        results["predictions/stage"] = "retrain"
    return Job(folder, results, config)


def _section(jobs: list[Job], out: Path, paired: list[str] | None = None) -> str:
    keys = condition_keys(jobs)
    return "\n".join(paired_section(rows_of(jobs, keys), keys, paired, out))


def test_jobs_are_paired_by_seed_and_dense_model_and_the_rest_is_named(tmp_path):
    mag = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    rnd = [1, 1, 0, 0, 0, 0, 0, 1, 0, 0]  # b = 4 (images 2-5), c = 1 (image 7)
    jobs = [_job(tmp_path, f"m{s}", s, mag) for s in (1, 2, 3, 4)]
    jobs += [_job(tmp_path, f"r{s}", s, rnd, **{"prune.method": "random"}) for s in (1, 2)]
    jobs += [_job(tmp_path, "r4", 4, rnd, dense="other", **{"prune.method": "random"})]
    jobs += [_job(tmp_path, "r5", 5, rnd, **{"prune.method": "random"})]
    md = _section(jobs, tmp_path)
    row = next(ln for ln in md.splitlines() if ln.startswith("| method: magnitude − random"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2" and cells[3] == "+30.00"
    assert cells[6] == "0.5 (exact)"  # two equal differences: 2 of the 4 flips
    assert cells[7] == "s1: b=4 c=1 p=0.375; s2: b=4 c=1 p=0.375"  # 2 (1 + 5) / 32
    assert "seed 3 only in method=magnitude" in md
    assert "seed 4: different dense model (dense/cache_key key4 vs other)" in md
    assert "seed 5 only in method=random" in md
    with (tmp_path / "paired.csv").open() as f:
        (line,) = csv.DictReader(f)
    assert line["key"] == "prune.method" and line["n_pairs"] == "2"
    assert float(line["mean_diff_pp"]) == pytest.approx(30.0)
    assert line["sign_flip_exact"] == "True" and "seed 4: different dense model" in line["unpaired"]


def test_different_splits_missing_predictions_and_other_images_are_not_compared(tmp_path):
    other = [*ITEMS[:9], "synthetic/Sad/00000"]
    jobs = [_job(tmp_path, f"m{s}", s) for s in (1, 2, 3, 4)]
    rnd = {"prune.method": "random"}
    jobs += [_job(tmp_path, "r1", 1, **rnd, predictions=False)]
    jobs += [_job(tmp_path, "r2", 2, **rnd, items=other)]
    jobs += [_job(tmp_path, "r4a", 4, **rnd, **{"prune.seed": 1})]
    jobs += [_job(tmp_path, "r4b", 4, **rnd, **{"prune.seed": 2})]
    md = _section(jobs, tmp_path)
    assert "s1: no predictions; s4: 1 and 2 jobs averaged" in md
    # Other test images at one seed: never a pair (it used to be paired, with McNemar alone
    # saying "test images differ").
    assert "seed 2: different test images (10 test ids " in md
    assert "seed 3 only in method=magnitude" in md
    # Two splits at one seed share no test image: never a pair, whatever the dense key says.
    split2 = [
        _job(tmp_path, f"split2-{s}", s, items=other, **{"data.split_seed": 2}) for s in (1, 2)
    ]
    md = _section(jobs[:4] + split2, tmp_path, ["data.split_seed=1,2"])
    assert "| split_seed: 1 − 2 | all | 0 |" in md
    assert "seed 1: different test images (10 test ids" in md
    # Without predictions to tell, the split settings decide.
    bare = [
        _job(tmp_path, f"bare{v}-{s}", s, predictions=False, **{"data.split_seed": v})
        for v in (1, 2)
        for s in (1, 2)
    ]
    md = _section(bare, tmp_path, ["data.split_seed=1,2"])
    assert "seed 1: different test split (data.split_seed, data.split, data.folds)" in md


def test_rewind_is_contrasted_with_continuation_at_each_ratio(tmp_path):
    jobs = []
    for ratio in (0.5, 0.9):
        for seed in (1, 2):
            for rewind in ("none", "pretrained", "epoch"):
                dense = f"key{seed}" + ("-theta_k" if rewind == "epoch" else "")
                values = {"retrain.rewind": rewind, "prune.ratio": ratio, "dense": dense}
                job = _job(tmp_path, f"{rewind}{ratio}{seed}", seed, **values)
                if ratio == 0.5:  # the dense model's own predictions, the same at each seed
                    dense = Predictions(
                        ITEMS,
                        np.zeros(10, dtype=np.int64),
                        np.arange(10) % 2,
                        np.full((10, 2), 0.5 + seed / 10),
                    )
                    write_predictions(job.dir, "dense", ["A", "B"], {"test": dense})
                jobs.append(job)
    md = _section(jobs, tmp_path)
    for ratio in (0.5, 0.9):
        title = "| rewind: pretrained − none (rewind − continuation) | ratio="
        assert f"{title}{ratio} | 2 |" in md
    # theta_k has a dense entry of its own, whose key differs: paired with the continuation
    # only where the two dense models' predictions are the same file.
    assert "| rewind: epoch − none (rewind − continuation) | ratio=0.5, rewind_epoch=1 | 2 |" in md
    epoch = "rewind: epoch − none (rewind − continuation), ratio=0.9, rewind_epoch=1"
    assert f"{epoch}: seed 1: different dense model (dense/cache_key key1-theta_k vs key1)" in md
    assert "ratio=0.5, rewind_epoch=1: seed" not in md
    assert "method:" not in md  # one method: nothing to contrast


def test_a_paired_that_names_nothing_is_one_line_naming_what_exists(tmp_path, capsys):
    jobs = [_job(tmp_path, f"m{s}", s) for s in (1, 2)]
    jobs += [_job(tmp_path, f"r{s}", s, **{"prune.method": "random"}) for s in (1, 2)]
    keys = condition_keys(jobs)
    rows = rows_of(jobs, keys)
    with pytest.raises(ContrastError, match="no job has the key prune.methd; .*: prune.method"):
        paired_section(rows, keys, ["prune.methd=magnitude,random"], tmp_path)
    with pytest.raises(ContrastError, match="prune.method=randm; prune.method takes magnitude"):
        paired_section(rows, keys, ["prune.method=magnitude,randm"], tmp_path)
    with pytest.raises(ContrastError, match="prune.ratio does not split these jobs"):
        paired_section(rows, keys, ["prune.ratio=0.5,0.9"], tmp_path)
    # The user's own order: random − magnitude.
    md = "\n".join(paired_section(rows, keys, ["prune.method=random,magnitude"], tmp_path))
    assert "| method: random − magnitude |" in md and "| method: magnitude − random |" in md
    # On the command line: one line on stderr, exit 2; a malformed one is argparse's error.
    for spec in ("prune.method=magnitude", "prune.method=a,a"):
        with pytest.raises(SystemExit):
            report.main([str(tmp_path), "--paired", spec])


def test_a_user_contrast_that_matches_no_pair_of_conditions_says_why(tmp_path):
    jobs = [_job(tmp_path, f"m{s}", s, **{"prune.ratio": 0.5}) for s in (1, 2)]
    jobs += [_job(tmp_path, f"r{s}", s, **{"prune.method": "random"}) for s in (1, 2)]
    keys = condition_keys(jobs)
    contrasts, notes = find_contrasts(
        rows_of(jobs, keys), keys, [Spec("prune.ratio", "0.5", "0.9")]
    )
    assert not contrasts
    assert notes == [
        "`--paired prune.ratio=0.5,0.9`: no two conditions differ in `prune.ratio` alone "
        "(they also differ in `prune.method`)."
    ]


# -- a real sweep ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_pairs_a_real_sweep_and_names_the_seed_it_cannot_pair(tmp_path, capsys):
    """magnitude and random at 3 seeds; random's seed 3 deleted: 2 pairs, seed 3 named."""
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        *TINY_SYNTHETIC_BATCH32,
        "prune.ratio=0.5",
        "retrain.epochs=1",
        "prune.method=magnitude,random",
        "seed=1,2,3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    shutil.rmtree(sweep / "prune.method=random,seed=3")
    out = tmp_path / "report"
    args = [str(sweep), "--out", str(out), "--paired", "prune.method=magnitude,random"]
    assert report.main(args) == 0
    section = (out / "report.md").read_text().split("## Paired comparisons")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| method: magnitude − random")]
    assert len(rows) == 1, section  # the natural contrast and the user's are one
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2] == "2"
    assert "seed 3 only in method=magnitude" in section

    def job(method: str, seed: int) -> tuple[Path, dict]:
        folder = sweep / f"prune.method={method},seed={seed}"
        return folder, json.loads((folder / "results.json").read_text())

    diffs = [
        100 * (job("magnitude", s)[1]["test/acc"] - job("random", s)[1]["test/acc"]) for s in (1, 2)
    ]
    assert float(cells[3]) == pytest.approx(statistics.fmean(diffs), abs=0.006)
    for seed in (1, 2):
        (dir_a, a), (dir_b, b) = job("magnitude", seed), job("random", seed)
        assert a["dense/cache_key"] == b["dense/cache_key"]  # one dense model per seed
        if "predictions/stage" not in a:  # training does not write them (yet)
            assert f"s{seed}: no predictions" in cells[7]
            continue
        pa = read_predictions(dir_a / f"predictions_{a['predictions/stage']}.csv")["test"]
        pb = read_predictions(dir_b / f"predictions_{b['predictions/stage']}.csv")["test"]
        assert pa.items == pb.items  # one test split, in split.json's order
        b_count = sum(x and not y for x, y in zip(pa.correct, pb.correct, strict=True))
        c_count = sum(y and not x for x, y in zip(pa.correct, pb.correct, strict=True))
        assert f"s{seed}: b={b_count} c={c_count} p=" in cells[7]
    with (out / "paired.csv").open() as f:
        (line,) = csv.DictReader(f)
    assert line["n_pairs"] == "2" and "seed 3 only in method=magnitude" in line["unpaired"]
    # A contrast that names a key no job has: one line on stderr, exit 2.
    assert report.main([str(sweep), "--out", str(out), "--paired", "prune.methd=a,b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no job has the key prune.methd" in err


def test_a_contrast_of_a_dense_setting_pairs_by_seed_and_split(tmp_path):
    # model.frozen_layers changes the dense model by design: its two sides never share a dense
    # cache key, and are paired on the seed, fold and test split alone.
    jobs = []
    for frozen in (0, 7):
        for seed in (1, 2):
            values = {"model.frozen_layers": frozen, "dense": f"key{seed}-{frozen}"}
            jobs.append(_job(tmp_path, f"f{frozen}s{seed}", seed, **values))
    md = _section(jobs, tmp_path, ["model.frozen_layers=0,7"])
    assert "| frozen_layers: 0 − 7 |" in md and "different dense model" not in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| frozen_layers: 0 − 7"))
    assert row.split("|")[3].strip() == "2"


def test_jobs_whose_test_images_differ_are_never_paired(tmp_path, sfew_root):
    # data.duplicates=drop removes copies that keep leaves in: the two jobs of one seed hold other
    # test images, though no split key differs. The report lists them unpaired, with the reason,
    # and its pair count and its "every seed was paired" count only true pairs.
    angry = next(p for p in sfew_root.iterdir() if p.name.lower() == "angry")
    sad = next(p for p in sfew_root.iterdir() if p.name.lower() == "sad")
    for k, frame in enumerate(sorted(angry.glob("*.png"))):
        shutil.copy(frame, sad / f"copied_{k}.png")  # copies across classes: drop removes both
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        f"data.root={sfew_root}",
        *TINY_SFEW_UNCROPPED,
        "prune.ratio=0.5",
        "retrain.epochs=0",
        "data.duplicates=keep,drop",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    digests = {json.loads(p.read_text())["data/test_digest"] for p in sweep.glob("*/results.json")}
    assert len(digests) == 2  # the two jobs' test images differ
    out = tmp_path / "report"
    assert (
        report.main([str(sweep), "--out", str(out), "--paired", "data.duplicates=keep,drop"]) == 0
    )
    section = (out / "report.md").read_text().split("## Paired comparisons")[1].split("\n## ")[0]
    row = next(ln for ln in section.splitlines() if ln.startswith("| duplicates: keep − drop"))
    assert row.split("|")[3].strip() == "0"
    assert "seed 1: different test images (data/test_digest" in section
    assert "Every seed and fold of these conditions was paired" not in section
