"""The report's sections for the study presets and its per-layer figure, from results.json files
of a real tiny job (tests/fixtures/results/magnitude.json) laid out as a Hydra sweep."""

from __future__ import annotations

import json
from pathlib import Path

from fer_lottery import report
from tests.test_presets import compose_preset

FIXTURES = Path(__file__).parent / "fixtures" / "results"
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

    for name in ("future_a_units", "future_a_before_finetune", "gradient_vs_magnitude"):
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
