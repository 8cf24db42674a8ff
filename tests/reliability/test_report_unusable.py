"""The report never hides a job: unreadable or incomplete results.json files are listed with why."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fer_lottery import report

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def _sweep(root: Path, jobs: dict[tuple[float, int], str | dict | None]) -> Path:
    """A sweep folder of magnitude-pruning jobs ``prune.ratio=<r>,seed=<s>``, as Hydra lays it out.

    Each job's results.json is a real one (tests/fixtures/results/magnitude.json) with its ratio,
    seed and sparsity set, or the given text, or the given dict; None: no results.json.
    """
    base = json.loads((FIXTURES / "magnitude.json").read_text())
    sweep = root / "sweep"
    for (ratio, seed), content in jobs.items():
        job = sweep / f"prune.ratio={ratio},seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        if content is None:
            continue
        if not isinstance(content, str):
            results = json.loads(json.dumps(base))
            results["config"]["prune"]["ratio"], results["config"]["seed"] = ratio, seed
            results["prune/sparsity"] = ratio
            results["test/acc"] = 0.5 - ratio / 10 + seed / 100
            results.update(content)
            content = json.dumps({k: v for k, v in results.items() if v is not None}, indent=2)
        (job / "results.json").write_text(content)
    return sweep


def _table_rows(md: str) -> dict[str, list[str]]:
    table = md.split("## All conditions")[1].split("\n\n")[1]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines()[2:]]
    return {cells[0]: cells for cells in rows}


def test_report_lists_unusable_results_and_keeps_the_other_jobs(tmp_path, capsys):
    good = {}
    truncated = json.dumps(json.loads((FIXTURES / "magnitude.json").read_text()), indent=2)[:900]
    sweep = _sweep(
        tmp_path,
        {
            (0.5, 1): good,
            (0.5, 2): good,
            (0.5, 3): truncated,  # cut off mid-file
            (0.5, 4): {"test/acc": "0.7"},  # a string, not a number
            (0.9, 1): good,
            (0.9, 2): {"config": None},  # no config
            (0.9, 3): {"test/acc": None},  # no test accuracy
        },
    )
    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.strip() in capsys.readouterr().out  # printed too

    # The usable jobs make the table: ratio 0.5 from seeds 1 and 2, ratio 0.9 from seed 1.
    rows = _table_rows(md)
    assert rows["0.5"][2] == "2" and rows["0.9"][2] == "1"
    with (out / "report.csv").open() as f:
        by_ratio = {r["prune.ratio"]: r for r in csv.DictReader(f)}
    assert by_ratio["0.5"]["test/acc/n"] == "2" and by_ratio["0.9"]["test/acc/n"] == "1"

    # The others are listed with the file and the reason, and counted.
    assert "3 finished job(s), 4 without usable results" in md
    assert "All jobs finished." not in md
    listed = md.split("## 4 job(s) without results the report can use\n")[1]
    reasons = {
        (0.5, 3): "results.json: not valid JSON (line ",
        (0.5, 4): 'results.json: test/acc is "0.7", not a number in [0, 1]',
        (0.9, 2): "results.json: missing key config",
        (0.9, 3): "results.json: missing key test/acc",
    }
    for (ratio, seed), reason in reasons.items():
        assert f"- `{sweep / f'prune.ratio={ratio},seed={seed}'}`: {reason}" in listed, listed
    assert "delete that file first" in listed  # a rerun alone skips a job with a results.json


def test_report_with_no_usable_results_says_which_and_why(tmp_path, capsys):
    sweep = _sweep(tmp_path, {(0.5, 1): "{", (0.5, 2): {"test/acc": None}, (0.9, 1): None})
    assert report.main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert f"no usable results.json under {sweep}; 3 job(s) without usable results:" in err
    assert "prune.ratio=0.5,seed=1: results.json: not valid JSON (line 1 column 2" in err
    assert "prune.ratio=0.5,seed=2: results.json: missing key test/acc" in err
    assert "prune.ratio=0.9,seed=1: no results.json (killed or unfinished)" in err
    assert "Traceback" not in err


def test_an_unreadable_failed_json_does_not_stop_the_report(tmp_path):
    sweep = _sweep(tmp_path, {(0.5, 1): {}, (0.9, 1): None})
    (sweep / "prune.ratio=0.9,seed=1" / "failed.json").write_text('{"error": "Runt')
    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "1 finished job(s), 1 without usable results" in md
    assert "prune.ratio=0.9,seed=1`: failed: failed.json is unreadable (JSONDecodeError" in md
