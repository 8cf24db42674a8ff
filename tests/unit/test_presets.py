"""Every paper preset composes, validates, sweeps 5 seeds and carries well-formed paper numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fer_lottery.config import CONF_DIR, register_configs, validate
from fer_lottery.report.papers import paper_values

PRESETS = sorted(
    p.stem for p in (Path(CONF_DIR) / "experiment").glob("paper_*.yaml") if p.is_file()
)


def compose_preset(name: str, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[f"experiment={name}", *overrides],
            return_hydra_config=True,
        )


def test_every_table_and_figure_has_a_preset():
    assert PRESETS == [
        "paper_a_fig1",
        "paper_a_table1",
        "paper_a_table2",
        "paper_a_table3",
        "paper_a_table4",
        "paper_a_table5",
        "paper_b_table1",
        "paper_b_table2_3",
    ]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_validates_and_sweeps_five_seeds(name):
    cfg = compose_preset(name)
    validate(cfg)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params["seed"] == "range(1,6)"
    assert len(params) >= 2, "a preset sweeps its table's own key besides the seed"
    block = OmegaConf.to_container(cfg.published)
    assert block["paper"] in ("A", "B") and block["table"]
    for key in block["match"]:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
        assert key in params, f"{key} is matched against the paper but not swept"
    for row in block["rows"]:
        assert len(row["at"]) == len(block["match"])
        assert "test/acc" in row and 0 < row["test/acc"] < 100
        assert paper_values(block, dict(zip(block["match"], row["at"], strict=True)))


def test_paper_a_presets_share_settings_and_differ_in_method_and_rewind():
    expected = {
        "paper_a_table1": ("distinctiveness", "none"),
        "paper_a_table2": ("magnitude", "none"),
        "paper_a_table3": ("distinctiveness", "pretrained"),
        "paper_a_table4": ("magnitude", "pretrained"),
        "paper_a_table5": ("random", "pretrained"),
        "paper_a_fig1": ("magnitude", "pretrained"),
    }
    dense_parts = set()
    for name, (method, rewind) in expected.items():
        cfg = compose_preset(name)
        assert (cfg.prune.method.value, cfg.retrain.rewind.value) == (method, rewind), name
        assert cfg.model.name == "resnet18" and cfg.optim.name.value == "sgd"
        assert cfg.optim.lr == 0.02 and cfg.data.batch_size == 64
        assert cfg.trainer.max_epochs == 50 and cfg.retrain.epochs == 50
        # What the dense cache key hashes: equal, so the six presets share the dense runs.
        dense_parts.add(
            OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, ["data", "model", "optim", "trainer"]))
        )
    assert len(dense_parts) == 1


def test_paper_b_presets():
    table1 = compose_preset("paper_b_table1")
    assert table1.model.name == "alexnet" and table1.optim.name.value == "adam"
    assert table1.optim.lr == 0.001 and list(table1.data.split) == [0.6, 0.2, 0.2]
    assert table1.data.augment.rotation == 30.0 and table1.prune.ratio == 0.0
    assert table1.hydra.sweeper.params["model.frozen_layers"] == "range(0,8)"
    table3 = compose_preset("paper_b_table2_3")
    assert table3.model.frozen_layers == 6 and table3.retrain.epochs == 0
    assert table3.prune.distinctiveness.variant.value == "paper_b" and list(
        table3.prune.distinctiveness.layers
    ) == ["classifier.4"]
    per_class = table3.published.per_class
    assert per_class.prefix == "dense/test"
    assert all(len(per_class[k]) == 7 for k in ("precision", "recall", "specificity"))


def test_preset_works_with_synthetic_data_and_command_line_wins():
    cfg = compose_preset("paper_a_table2", "data=synthetic", "model.weights=null", "seed=3")
    validate(cfg)
    assert cfg.data.name.value == "synthetic" and cfg.model.weights is None and cfg.seed == 3
    assert list(cfg.data.split) == [0.7, 0.15, 0.15]


ALL_PRESETS = sorted(
    p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml") if not p.stem.startswith("_")
)


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_debug_tiny_shrinks_every_epoch_count_of_a_preset(name):
    # conf/debug/tiny.yaml: "it shrinks a preset too". Every count of epochs a job trains is at
    # most tiny's 2, and what the preset means is kept (paper B's 0 retraining epochs stay 0).
    cfg = compose_preset(name, "debug=tiny")
    validate(cfg)
    plain = _plain(cfg)
    tiny = plain["trainer"]["max_epochs"]
    assert tiny == 2
    retrain = plain["retrain"]["epochs"]
    assert retrain is None or retrain <= tiny
    full = _plain(compose_preset(name))
    if full["retrain"]["epochs"] == 0:
        assert retrain == 0
    assert plain["retrain"]["rewind_epoch"] <= tiny
    assert plain["data"]["synthetic"]["per_class"] <= 8 and plain["data"]["image_size"] <= 64


def _plain(cfg) -> dict:
    node = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(node, resolve=True)


@pytest.mark.parametrize(("gpus", "accelerator"), [(0, "auto"), (1, "gpu"), (4, "gpu")])
def test_the_slurm_preset_demands_a_gpu_only_when_it_asks_for_one(gpus, accelerator):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", f"hydra.launcher.gpus_per_node={gpus}"],
            return_hydra_config=True,
        )
    setup = OmegaConf.to_container(cfg.hydra.launcher.setup, resolve=True)
    assert setup == [f"export FER_LOTTERY_ACCELERATOR={accelerator}"]
