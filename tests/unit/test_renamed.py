"""The prune settings grouped by concern (``config.renamed``): an old spelling on the command
line gets one line with the new one, and a config recorded before the move reads, key for key,
as the schema has it now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lottery.config import config_changes, flatten, resolved, schema_defaults
from fer_lottery.config.renamed import MOVED, old_spelling, upgrade
from tests.helpers import run_cli

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"


def test_every_moved_key_left_the_schema_for_a_key_it_has():
    keys = schema_defaults()
    assert [old for old in MOVED if old in keys] == []
    assert [new for new in MOVED.values() if new not in keys] == []


@pytest.mark.parametrize(
    ("override", "written"),
    [
        ("prune.rewind=pretrained", "retrain.rewind=pretrained"),
        ("prune.retrain_epochs=0", "retrain.epochs=0"),
        ("+prune.angle=10,20", "prune.distinctiveness.angle=10,20"),
        ("++prune.rewind=epoch", "retrain.rewind=epoch"),
        ("prune.stability=true", "stability.enabled=true"),
        ("prune.gradual_end=3", "prune.gradual.end=3"),
        ("~prune.layers", "~prune.distinctiveness.layers"),
    ],
)
def test_an_old_spelling_gets_the_new_one_with_its_value(override, written):
    line = old_spelling(["debug=tiny", override])
    assert line is not None and "\n" not in line
    assert line.endswith(f"write {written}")


def test_current_spellings_pass():
    current = ["prune.ratio=0.5", "retrain.rewind=pretrained", "prune.distinctiveness.angle=5"]
    assert old_spelling([*current, "stability.enabled=true", "seed=1,2"]) is None


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_a_config_recorded_before_the_move_reads_as_the_schema_has_it_now(name):
    # The fixtures are real results.json files written before the move (tools/results_fixtures.py).
    recorded = json.loads((FIXTURES / f"{name}.json").read_text())["config"]
    assert any(old.split(".")[1] in recorded["prune"] for old in MOVED)
    now = flatten(upgrade(recorded))
    assert sorted(set(now) - set(schema_defaults())) == []
    old = flatten(recorded)
    for before, after in MOVED.items():
        if before in old:
            assert now[after] == old[before]
    assert upgrade(recorded) == upgrade(upgrade(recorded))  # nothing left to move


def test_a_relaunch_compares_an_old_record_key_for_key(compose_cfg):
    cfg = compose_cfg(
        "debug=tiny", "prune.ratio=0.5", "retrain.rewind=epoch", "retrain.rewind_epoch=1"
    )
    recorded = resolved(cfg)
    retrain, stability = recorded.pop("retrain"), recorded.pop("stability")
    recorded["prune"].update(
        rewind=retrain["rewind"],
        rewind_epoch=retrain["rewind_epoch"],
        retrain_epochs=retrain["epochs"],
        retrain_lr=retrain["lr"],
        stability=stability["enabled"],
    )
    assert config_changes(recorded, cfg) == []
    recorded["prune"]["rewind_epoch"] = 2
    assert config_changes(recorded, cfg) == ["retrain.rewind_epoch: 2 -> 1"]


def test_the_cli_refuses_an_old_spelling_in_one_line_before_any_work(tmp_path):
    proc = run_cli(
        "debug=tiny", "prune.ratio=0.5", "prune.rewind=pretrained", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fer_lottery: prune.rewind is now retrain.rewind (the prune settings are grouped by "
        "concern: criterion, prune.gradual, retrain, stability): write retrain.rewind=pretrained"
    ]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "cache").exists()
