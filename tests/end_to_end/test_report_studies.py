"""The report's sections for the study presets and its per-layer figure, from results.json files
of a real tiny job (tests/fixtures/results/magnitude.json) laid out as a Hydra sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lottery import report
from tests.helpers import TINY_SYNTHETIC_BATCH32, run_cli
from tests.unit.test_presets import compose_preset

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
STUDY_PRESETS = (
    "future_a_units",
    "future_a_before_finetune",
    "gradient_vs_magnitude",
    "future_a_mask_overlap",
    "stability_rewind",
)
STUDY = {"title": "Whole units against weights", "question": "Q?", "match": ["prune.ratio"]}


def _sweep(root: Path) -> Path:
    base = json.loads((FIXTURES / "magnitude.json").read_text())
    layers = [k for k in base if k.startswith("prune/sparsity/")]
    assert layers, "the fixture has a per-layer profile (tools/results_fixtures.py)"
    for ratio in (0.5, 0.9):
        for seed in (1, 2):
            job = root / "sweep" / f"prune.ratio={ratio},seed={seed}"
            (job / ".hydra").mkdir(parents=True)
            results = json.loads(json.dumps(base))
            results["config"].update(seed=seed, study=STUDY)
            results["config"]["prune"]["ratio"] = ratio
            results["prune/sparsity"] = ratio
            for i, key in enumerate(layers):  # the first layer keeps all, the last the least
                results[key] = ratio * i / (len(layers) - 1)
            results["test/acc"] = 0.6 - ratio / 10 + seed / 100
            (job / "results.json").write_text(json.dumps(results))
    return root / "sweep"


def test_a_study_gets_its_section_and_the_report_its_layer_figure(tmp_path):
    out = tmp_path / "report"
    assert report.main([str(_sweep(tmp_path)), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    section = md.split("## Whole units against weights\n")[1].split("\n## ")[0]
    assert section.startswith("\nQ?")
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| prune.ratio | test acc % (mean ± std) | n |")
    rows = {ln.split("|")[1].strip(): ln for ln in lines[1:]}
    assert set(rows) == {"dense", "0.5", "0.9"}
    assert "56.50 ± 0.71 | 2 |" in rows["0.5"]  # 0.6 - 0.05 + (0.01, 0.02)
    assert (out / "layer_sparsity.png").stat().st_size > 10_000
    assert "![Weights remaining per layer, per condition](layer_sparsity.png)" in md


def test_the_study_presets_compose_validate_and_sweep_five_seeds():
    from omegaconf import OmegaConf

    from fer_lottery.config import validate

    for name in STUDY_PRESETS:
        cfg = compose_preset(name)
        validate(cfg)
        params = OmegaConf.to_container(cfg.hydra.sweeper.params)
        assert params["seed"] == "range(1,6)", name
        study = OmegaConf.to_container(cfg.study)
        assert study["title"] and study["question"]
        assert all(key in params for key in study["match"]), name
        # Every combination of the sweep validates (one line refusals would fail a whole sweep).
        values = {k: str(v).split(",") for k, v in params.items() if k != "seed"}
        combos = [{}]
        for key, options in values.items():
            combos = [{**c, key: o} for c in combos for o in options]
        for combo in combos:
            validate(compose_preset(name, *[f"{k}={v}" for k, v in combo.items()]))


def _tiny_preset_report(tmp_path: Path, preset: str, *overrides: str):
    """A real tiny sweep of a preset over seeds 1 and 2, and its report: (sweep, out, md)."""
    sweep, out = tmp_path / "sweep", tmp_path / "report"
    run_cli(
        "-m",
        f"experiment={preset}",
        *TINY_SYNTHETIC_BATCH32,
        "retrain.epochs=1",
        "seed=1,2",
        *overrides,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert report.main([str(sweep), "--out", str(out)]) == 0
    return sweep, out, (out / "report.md").read_text()


def test_the_overlap_study_compares_each_seeds_two_masks_in_the_report(tmp_path):
    # A real tiny sweep of the preset (two seeds, one ratio), then the report: the section's
    # totals are the mean over seeds of pruning.overlap on the jobs' own mask.pt files.
    from fer_lottery.pruning.mask import Mask
    from fer_lottery.pruning.overlap import mask_overlap

    sweep, out, md = _tiny_preset_report(tmp_path, "future_a_mask_overlap", "prune.ratio=0.9")
    section = md.split("### Mask overlap: score_at=finetuned (A) against pretrained (B)\n")[1]
    row = next(ln for ln in section.splitlines() if ln.startswith("| finetuned vs pretrained"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "ratio=0.9" and cells[2] == "2"
    totals = []
    for seed in (1, 2):
        masks = [
            Mask.load(next(sweep.glob(f"*score_at={at}*seed={seed}*")) / "mask.pt").tensors
            for at in ("finetuned", "pretrained")
        ]
        totals.append(mask_overlap(*masks)["total"])
    assert float(cells[3]) == pytest.approx(sum(t.jaccard for t in totals) / 2, abs=5e-4)
    assert float(cells[6]) == pytest.approx(sum(t.x_chance for t in totals) / 2, abs=5e-4)
    assert float(cells[5]) < float(cells[3])  # two 90% magnitude masks agree beyond chance
    (figure,) = out.glob("overlap_*.png")
    assert figure.stat().st_size > 10_000 and f"]({figure.name})" in md


def test_the_stability_study_reports_barriers_and_draws_the_path(tmp_path):
    sweep, out, md = _tiny_preset_report(
        tmp_path, "stability_rewind", "prune.ratio=0.5", "retrain.rewind=pretrained"
    )
    section = md.split("## Linear mode connectivity (stability.enabled)\n")[1].split("\n## ")[0]
    (row,) = [
        ln for ln in section.splitlines() if ln.startswith("| ") and "rewind=pretrained" in ln
    ]
    cells = [c.strip() for c in row.strip("|").split("|")]
    barriers = [
        100 * json.loads(p.read_text())["stability/test/barrier"]
        for p in sweep.glob("*/results.json")
    ]
    assert cells[1] == "2" and len(barriers) == 2
    mean, std = (float(x) for x in cells[2].split(" ± "))
    assert mean == pytest.approx(sum(barriers) / 2, abs=0.006)
    assert (out / "stability.png").stat().st_size > 10_000
    assert "](stability.png)" in md


def test_a_job_written_before_a_key_existed_joins_its_condition(tmp_path):
    # Two seeds of one condition, one of them written by a version without the newer keys: one
    # row with n = 2 (the missing keys take their defaults, as a relaunch takes them).
    root = _sweep(tmp_path)
    old = next(root.glob("prune.ratio=0.5,seed=1")) / "results.json"
    results = json.loads(old.read_text())
    for key in ("stability", "stability_seed", "stability_points"):
        del results["config"]["prune"][key]
    del results["config"]["data"]["official_val_fraction"]
    old.write_text(json.dumps(results))
    out = tmp_path / "report"
    assert report.main([str(root), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "stability" not in md.split("## All conditions")[1].split("\n\n")[1]
    section = md.split("## Whole units against weights\n")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| 0.5 |")]
    assert len(rows) == 1 and "| 2 |" in rows[0]
