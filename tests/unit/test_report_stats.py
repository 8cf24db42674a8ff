"""The report's statistics on sweep folders shaped like real ones: what n counts, the intervals,
the best condition and the final stage.

Each job folder holds a ``results.json`` with the keys ``experiment.runner.run_experiment`` writes
and the resolved config of a real preset. Accuracies are whole numbers of correct test images, and
the per-class scores come from a confusion matrix that agrees with them.
"""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fer_lottery import report
from fer_lottery.config import CONF_DIR
from fer_lottery.core.classes import CLASSES
from fer_lottery.report.collect import collect
from fer_lottery.report.conditions import condition_keys, dense_rows, rows_of
from fer_lottery.report.curves import final_stage
from fer_lottery.report.figures import plot_convergence
from fer_lottery.report.papers import comparison_rows
from fer_lottery.report.per_class import per_class
from fer_lottery.report.stats import wilson

N_TEST = 101  # SFEW's 675 images, 15% test


@pytest.fixture
def preset(compose_cfg):
    """A preset's resolved config as a nested dict, as ``results.json`` stores it."""

    def _preset(name: str, *overrides: str) -> dict:
        cfg = compose_cfg(f"experiment={name}", *overrides)
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)

    return _preset


def with_keys(config: dict, values: dict) -> dict:
    """A copy of ``config`` with dotted keys (``prune.distinctiveness.angle``) set."""
    out = copy.deepcopy(config)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node[p]
        node[leaf] = value
    return out


def confusion(correct: int, n_test: int) -> list[list[int]]:
    """A 7x7 confusion matrix of ``n_test`` images with ``correct`` on the diagonal."""
    k = len(CLASSES)
    sizes = [n_test // k + (c < n_test % k) for c in range(k)]
    matrix = [[0] * k for _ in range(k)]
    left = correct
    for c, size in enumerate(sizes):
        hit = min(size, left)
        left -= hit
        matrix[c][c] = hit
        matrix[c][(c + 1) % k] += size - hit
    assert left == 0
    return matrix


def class_scores(matrix: list[list[int]], prefix: str) -> dict[str, float]:
    """Per-class precision, recall and specificity of a confusion matrix (rows: true class)."""
    total = sum(map(sum, matrix))
    out = {}
    for c, name in enumerate(CLASSES):
        tp, true = matrix[c][c], sum(matrix[c])
        predicted = sum(row[c] for row in matrix)
        fp = predicted - tp
        tn = total - true - fp
        out[f"{prefix}/precision/{name}"] = tp / predicted if predicted else 0.0
        out[f"{prefix}/recall/{name}"] = tp / true if true else 0.0
        out[f"{prefix}/specificity/{name}"] = tn / (tn + fp) if tn + fp else 0.0
    return out


def write_job(
    folder: Path,
    config: dict,
    correct: int,
    val: float,
    n_test: int = N_TEST,
    dense_correct: int | None = None,
    dense_val: float = 0.5,
    units_removed: int | None = None,
) -> Path:
    """One finished pruning job: ``results.json`` as ``run_experiment`` writes it."""
    dense_correct = n_test // 2 if dense_correct is None else dense_correct
    matrix, dense = confusion(correct, n_test), confusion(dense_correct, n_test)
    prune = config["prune"]
    results: dict = {"test/acc": correct / n_test, **class_scores(matrix, "test")}
    results |= {"test/confusion": matrix, "val/acc_best": val}
    results |= {"dense/test/acc": dense_correct / n_test, **class_scores(dense, "dense/test")}
    results |= {"dense/test/confusion": dense, "dense/val/acc_best": dense_val}
    results |= {"dense/cache": "hit", "prune/acc_before_retrain": 0.3}
    if units_removed is None:
        results |= {"prune/sparsity": prune["ratio"], "prune/mask_sparsity": prune["ratio"]}
    else:
        units = 4096  # AlexNet's fc7
        results |= {"prune/units_removed": units_removed, "prune/units_total": units}
        results |= {"prune/units_removed_frac": units_removed / units}
        results |= {"prune/sparsity": units_removed / units / 2}
    results |= {"params/total": 11180103, "params/nonzero": 5594855, "model/init": "IMAGENET1K_V1"}
    results |= {"data/source": "/data/SFEW", "data/n_train": 473, "data/n_val": 101}
    results |= {"data/n_test": n_test, "data/folds": config["data"]["folds"]}
    results |= {"data/fold": config["data"]["fold"], "time/dense_s": 61.2, "time/total_s": 80.0}
    results["config"] = config
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def write_metrics(job_dir: Path, stage: str, val_acc: list[float]) -> None:
    """``csv/<stage>/metrics.csv`` as Lightning's CSVLogger writes it: val and train lines."""
    folder = job_dir / "csv" / stage
    folder.mkdir(parents=True)
    lines = ["epoch,step,test/acc,train/acc,train/loss,val/acc,val/acc_best,val/loss"]
    for epoch, acc in enumerate(val_acc):
        step = 8 * (epoch + 1)
        lines += [f"{epoch},{step},,,,{acc},{max(val_acc[: epoch + 1])},1.8"]
        lines += [f"{epoch},{step},,0.31,1.9,,,"]
    lines += [f"{len(val_acc)},{8 * len(val_acc)},0.42,,,,,"]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def write_multirun(sweep: Path, params: dict[str, str], task: tuple[str, ...] = ()) -> None:
    """The sweep's ``multirun.yaml`` as Hydra writes it: what a sweep sweeps is read from it."""
    sweep.mkdir(parents=True, exist_ok=True)
    cfg = {"hydra": {"overrides": {"task": list(task)}, "sweeper": {"params": params}}}
    OmegaConf.save(OmegaConf.create(cfg), sweep / "multirun.yaml")


def rows(sweep: Path):
    jobs, problems = collect([sweep])
    assert not problems
    return rows_of(jobs, condition_keys(jobs))


# -- the binomial fallback ------------------------------------------------------------------------


def test_wilson_counts_the_shared_test_split_once_not_once_per_seed(tmp_path, preset):
    """Seeds that agree exactly: the interval is that of one 101-image test split."""
    config = preset("paper_a_table2")
    for seed in (1, 2, 3):
        values = {"seed": seed, "prune.ratio": 0.9}
        write_job(tmp_path / f"prune.ratio=0.9,seed={seed}", with_keys(config, values), 50, 0.5)
    (row,) = rows(tmp_path)
    stat = row.stats["test/acc"]
    assert stat.n == 3 and stat.std == 0.0
    assert (stat.ci_low, stat.ci_high) == pytest.approx(wilson(50 / N_TEST, N_TEST))
    # 303 trials would give an interval about sqrt(3) times narrower
    assert stat.ci_high - stat.ci_low > 0.19


def test_wilson_with_folds_counts_each_folds_test_images_once(tmp_path, preset):
    """2 seeds x 3 folds of 45 test images that agree: 135 trials, not 6 x 45."""
    config = preset("paper_a_table2", "data.folds=3")
    for seed in (1, 2):
        for fold in (0, 1, 2):
            values = {"seed": seed, "data.fold": fold, "prune.ratio": 0.5}
            folder = tmp_path / f"seed={seed}" / f"fold={fold}"
            write_job(folder, with_keys(config, values), 18, 0.4, n_test=45)
    (row,) = rows(tmp_path)
    stat = row.stats["test/acc"]
    assert stat.std == 0.0
    assert (stat.ci_low, stat.ci_high) == pytest.approx(wilson(0.4, 135))


# -- stages ---------------------------------------------------------------------------------------


def test_the_final_stage_of_an_imp_job_is_its_last_round(tmp_path, preset):
    """Ten IMP rounds: retrain10 is the last stage, not retrain9 (text order)."""
    config = with_keys(preset("paper_a_table4", "prune.iterations=10"), {"prune.ratio": 0.99})
    job_dir = write_job(tmp_path / "prune.ratio=0.99", config, 40, 0.45)
    for r in range(1, 11):
        write_metrics(job_dir, f"retrain{r}", [0.2 + 0.01 * r, 0.3 + 0.01 * r])
    jobs, _ = collect([tmp_path])
    assert final_stage(jobs[0]) == "retrain10"
    # The convergence plot draws that round's curve.
    fig = plot_convergence(rows(tmp_path), [], [], tmp_path / "convergence.png", limit=8)
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_ydata()) == pytest.approx([30.0, 40.0])


# -- the best condition ---------------------------------------------------------------------------


def test_the_per_class_best_condition_is_chosen_by_validation_accuracy(tmp_path, preset):
    """Ratio 0.5 validates better, ratio 0.9 tests better: the table shows ratio 0.5."""
    config = preset("paper_a_table2")
    for ratio, correct, val in ((0.5, 50, 0.60), (0.9, 60, 0.55)):
        for seed in (1, 2):
            values = {"seed": seed, "prune.ratio": ratio}
            name = f"prune.ratio={ratio},seed={seed}"
            write_job(tmp_path / name, with_keys(config, values), correct + seed, val)
    _, mean, _, best = per_class(None, rows(tmp_path), [])
    assert best.values["prune.ratio"] == 0.5
    scores = [class_scores(confusion(c, N_TEST), "test") for c in (51, 52)]
    recall = [(scores[0][k] + scores[1][k]) / 2 for k in (f"test/recall/{c}" for c in CLASSES)]
    assert mean["recall"] == pytest.approx(recall)
    out = tmp_path / "report"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    assert "(test, best condition: ratio=0.5, n=2)" in (out / "report.md").read_text()


def test_the_best_dense_model_is_chosen_by_its_validation_accuracy(tmp_path, preset):
    """Paper B's Table 2 (dense scores): 5 frozen layers validate better, 6 test better."""
    config = preset("paper_b_table2_3")
    for frozen, dense_correct, dense_val in ((5, 45, 0.52), (6, 55, 0.50)):
        for seed in (1, 2):
            values = {
                "seed": seed,
                "model.frozen_layers": frozen,
                "prune.distinctiveness.angle": 10,
            }
            values["prune.distinctiveness.norm_std"] = 1
            name = f"model.frozen_layers={frozen},seed={seed}"
            job = with_keys(config, values)
            dense = {"dense_correct": dense_correct, "dense_val": dense_val}
            write_job(tmp_path / name, job, 40, 0.45, units_removed=60, **dense)
    jobs, _ = collect([tmp_path])
    keys = condition_keys(jobs)
    assert keys == ["model.frozen_layers"]
    prefix, mean, _, best = per_class(
        config["published"], rows_of(jobs, keys), dense_rows(jobs, keys)
    )
    assert prefix == "dense/test" and best.dense
    assert best.values["model.frozen_layers"] == 5
    expected = class_scores(confusion(45, N_TEST), "dense/test")
    assert mean["precision"] == pytest.approx(
        [expected[f"dense/test/precision/{c}"] for c in CLASSES]
    )


# -- what n counts --------------------------------------------------------------------------------


def _paper_b_table3_sweep(sweep: Path, preset, seeds=(1, 2, 3, 4, 5)) -> dict:
    """The preset's own sweep (5 angles x 9 norm_std) over ``seeds``; returns its config.

    Each seed's dense model sets its level (seed effects of several points), the threshold adds
    about one point either way, as when every threshold prunes the same fine-tuned fc7.
    """
    config = preset("paper_b_table2_3")
    params = OmegaConf.load(Path(CONF_DIR) / "experiment" / "paper_b_table2_3.yaml")
    params = params.hydra.sweeper.params
    angles = [float(a) for a in str(params["prune.distinctiveness.angle"]).split(",")]
    norm_stds = [float(k) for k in str(params["prune.distinctiveness.norm_std"]).split(",")]
    write_multirun(sweep, {**params, "seed": "range(1,6)"})
    level = {1: 44, 2: 52, 3: 47, 4: 55, 5: 49}
    for seed in seeds:
        for i, angle in enumerate(angles):
            for j, k in enumerate(norm_stds):
                values = {
                    "seed": seed,
                    "prune.distinctiveness.angle": angle,
                    "prune.distinctiveness.norm_std": k,
                }
                name = (
                    f"prune.distinctiveness.angle={angle:g},"
                    f"prune.distinctiveness.norm_std={k:g},seed={seed}"
                )
                correct = level[seed] - 2 * i + (j % 3 - 1)
                units = 20 + 30 * i + 2 * j + seed
                job = with_keys(config, values)
                write_job(sweep / name, job, correct, 0.5, units_removed=units)
    return config


def _t_interval(values: list[float]) -> tuple[float, float]:
    from scipy.stats import t

    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(t.ppf(0.975, len(values) - 1)) * sd / len(values) ** 0.5
    return mean - half, mean + half


def test_paper_table_averages_pooled_keys_within_each_seed(tmp_path, preset):
    """paper_b_table2_3: 9 thresholds x 5 seeds per angle are 5 repeats, not 45."""
    sweep = tmp_path / "sweep"
    config = _paper_b_table3_sweep(sweep, preset)
    block = config["published"]
    jobs, _ = collect([sweep])
    condition_keys(jobs)
    comp = comparison_rows(block, jobs)
    assert [row.values["prune.distinctiveness.angle"] for row in comp] == [
        7.5,
        10.0,
        12.5,
        15.0,
        17.5,
    ]
    for row in comp:
        assert len(row.jobs) == 45
        per_seed = {}
        for job in row.jobs:
            per_seed.setdefault(job.config["seed"], []).append(job.results["test/acc"])
        means = [statistics.fmean(v) for v in per_seed.values()]
        stat = row.stats["test/acc"]
        assert stat.n == 5
        assert stat.mean == pytest.approx(statistics.fmean(means))
        assert stat.std == pytest.approx(statistics.stdev(means))
        assert (stat.ci_low, stat.ci_high) == pytest.approx(_t_interval(means))
        assert row.stats["prune/units_removed"].n == 5

    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    section = md.split("## Paper B, Tables 2-3")[1].split("\n## ")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert len(lines) == 5
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        # angle | test acc, n, CI, paper, in CI | units removed, n, CI, paper
        assert cells[2] == "5" and cells[7] == "5", line
    assert "n: independent repeats, one per seed" in section
    assert "`prune.distinctiveness.norm_std`" in section


def test_prune_seed_draws_of_one_seed_are_one_repeat(tmp_path, preset):
    """Random pruning with 3 mask draws (prune.seed) per seed: the rows count 2 seeds."""
    config = preset("paper_a_table5")
    for seed in (1, 2):
        for draw in (1, 2, 3):
            values = {"seed": seed, "prune.seed": draw, "prune.ratio": 0.9}
            job_dir = tmp_path / f"prune.seed={draw},seed={seed}"
            correct = 40 + 6 * seed + draw
            write_job(job_dir, with_keys(config, values), correct, 0.3 + 0.01 * correct)
            write_metrics(job_dir, "dense", [0.3 + 0.05 * seed, 0.4 + 0.05 * seed])
            write_metrics(job_dir, "retrain", [0.2 + 0.01 * draw, 0.3 + 0.05 * seed])
    jobs, _ = collect([tmp_path])
    keys = condition_keys(jobs)
    (row,) = rows_of(jobs, keys)
    stat = row.stats["test/acc"]
    means = [(46 + 2) / N_TEST, (52 + 2) / N_TEST]  # each seed's mean over its 3 draws
    assert stat.n == 2
    assert stat.mean == pytest.approx(statistics.fmean(means))
    assert stat.std == pytest.approx(statistics.stdev(means))
    (dense,) = dense_rows(jobs, keys)
    assert len(dense.jobs) == 2 and dense.stats["test/acc"].n == 2  # one dense model per seed

    fig = plot_convergence([row], [dense], keys, tmp_path / "convergence.png", limit=8)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["dense (n=2)", " (n=2)"]

    out = tmp_path / "report"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    # One condition: its rows are named by what it ran, not left blank (#15).
    label = "model=resnet18, method=random, scope=global, ratio=0.9, rewind=pretrained"
    assert f"(test, best condition: {label}, n=2)" in md
    assert "`prune.seed` are averaged into one value first" in md


def test_a_paper_table_never_averages_jobs_that_differ_in_an_unswept_key(tmp_path, preset):
    """Two launches of paper_a_table2 into one folder, with 50 and with 3 epochs: rows by both."""
    for epochs in (50, 3):
        sweep = tmp_path / "runs" / f"epochs{epochs}"
        write_multirun(sweep, {"prune.ratio": "0.5,0.9", "seed": "range(1,3)"})
        config = with_keys(preset("paper_a_table2"), {"trainer.max_epochs": epochs})
        for ratio in (0.5, 0.9):
            for seed in (1, 2):
                job = with_keys(config, {"prune.ratio": ratio, "seed": seed})
                write_job(sweep / f"prune.ratio={ratio},seed={seed}", job, 40 + epochs // 10, 0.5)
    jobs, _ = collect([tmp_path / "runs"])
    condition_keys(jobs)
    block = jobs[0].results["config"]["published"]
    comp = comparison_rows(block, jobs)
    assert len(comp) == 4
    for row in comp:
        assert len({j.config["trainer.max_epochs"] for j in row.jobs}) == 1
        assert row.stats["test/acc"].n == 2
    md = report.build([tmp_path / "runs"], tmp_path / "report")
    assert "Rows are also split by `trainer.max_epochs`" in md


def test_jobs_on_different_data_roots_are_different_conditions(tmp_path, preset):
    config = preset("paper_a_table2")
    for root in ("/data/SFEW", "/other/SFEW"):
        job = with_keys(config, {"data.root": root, "prune.ratio": 0.9})
        write_job(tmp_path / "runs" / root.split("/")[1], job, 40, 0.5)
    assert len(rows(tmp_path / "runs")) == 2


def test_a_single_condition_report_labels_its_rows(tmp_path, preset):
    """One pruned job: the dense row and the pruned row each say what they are."""
    job = with_keys(preset("paper_a_table2"), {"prune.ratio": 0.9})
    write_job(tmp_path / "run", job, 40, 0.5)
    md = report.build([tmp_path / "run"], tmp_path / "report")
    table = md.split("## All conditions")[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| model.name | prune.method | prune.scope | prune.ratio |")
    assert table[2].startswith("| resnet18 | dense | dense | dense |"), table
    assert table[3].startswith("| resnet18 | magnitude | global | 0.9 |"), table
