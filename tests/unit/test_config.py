"""Compose tests of the conf/ tree and the schema checks."""

import re

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from fer_lottery.config import validate
from fer_lottery.core.errors import ConfigError
from fer_lottery.models.checks import check_model


def test_defaults_follow_paper_a(compose_cfg):
    cfg = compose_cfg()
    validate(cfg)
    assert cfg.model.name == "resnet18"
    assert cfg.model.weights == "imagenet"
    assert cfg.optim.name.value == "sgd" and cfg.optim.lr == 0.02 and cfg.optim.momentum == 0.9
    assert cfg.data.batch_size == 64 and cfg.data.image_size == 224
    assert list(cfg.data.split) == [0.7, 0.15, 0.15]
    assert cfg.trainer.max_epochs == 50
    assert cfg.data.augment.rotation == 15


def test_groups_compose(compose_cfg):
    cfg = compose_cfg("model=alexnet", "optim=adam", "data=synthetic", "model.frozen_layers=7")
    validate(cfg)
    assert cfg.model.name == "alexnet"
    assert cfg.optim.name.value == "adam" and cfg.optim.lr == 1e-3
    assert cfg.data.name.value == "synthetic"


def test_demo_experiment_is_synthetic_and_imagenet_mobilenet(compose_cfg):
    cfg = compose_cfg("experiment=demo")
    assert cfg.data.name.value == "synthetic"
    assert cfg.model.name == "mobilenet_v2" and cfg.model.weights == "imagenet"
    assert cfg.data.normalize.value == "auto"  # torchvision's meta for those weights


def _composition_error(compose_cfg, override: str) -> str:
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(override)
    assert isinstance(err.value.__cause__, ValidationError)
    return f"{err.value} {err.value.__cause__}"


def test_unknown_model_names_allowed_values(compose_cfg):
    with pytest.raises(ConfigError, match=r"model.name=vggg: .*\(close: vgg"):
        check_model(compose_cfg("model.name=vggg"))


def test_wrong_type_is_rejected(compose_cfg):
    text = _composition_error(compose_cfg, "data.batch_size=abc")
    assert "data.batch_size" in text and "Integer" in text


def test_unknown_key_is_rejected(compose_cfg):
    with pytest.raises(Exception, match="lrr"):
        compose_cfg("optim.lrr=0.1")


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.split=[0.5,0.2,0.2]", r"sums to 0.9, not 1"),
        ("data.split=[0.75,0.15,0.15]", r"sums to 1.05, not 1"),
        ("data.split=[1.0,0.0]", r"three fractions"),
        ("trainer.max_epochs=-1", r"trainer.max_epochs=-1 must be at least 1"),
        ("model.frozen_layers=7", r"resnet18, which has 6 layer groups .*: use 0..5"),
        ("optim.lr=0", r"optim.lr=0.0 must be > 0"),
        ("data.augment.hflip=1.5", r"hflip=1.5"),
        ("data.image_size=8", r"image_size=8"),
    ],
)
def test_out_of_range_values_name_the_key(compose_cfg, override, message):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
        check_model(cfg)  # the backbone's own limits


def test_alexnet_allows_seven_frozen_layers_but_not_nine(compose_cfg):
    check_model(compose_cfg("model=alexnet", "model.frozen_layers=7"))
    with pytest.raises(ConfigError, match="alexnet, which has 8 layer groups"):
        check_model(compose_cfg("model=alexnet", "model.frozen_layers=9"))


def test_config_resolves_to_plain_yaml(compose_cfg, monkeypatch, tmp_path):
    """The resolved config is plain YAML that loads back to the composed values: no
    interpolation left, enums as their names."""
    monkeypatch.setenv("FER_LOTTERY_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg("data=synthetic")
    loaded = yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))

    def check_plain(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                assert isinstance(key, str), where
                check_plain(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                check_plain(value, f"{where}[{i}]")
        else:
            assert node is None or type(node) in (str, int, float, bool), (where, node)
            if isinstance(node, str):
                assert "${" not in node, (where, node)  # an interpolation left unresolved
                assert not re.match(r"<?[A-Z]\w*\.\w", node), (where, node)  # DataName.synthetic

    check_plain(loaded, "cfg")
    assert loaded == OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert loaded["data"]["name"] == cfg.data.name.value == "synthetic"
    assert loaded["data"]["image_size"] == cfg.data.image_size == 64
    assert loaded["model"]["name"] == cfg.model.name == "resnet18"
    assert loaded["prune"]["method"] == cfg.prune.method.value == "magnitude"
    assert loaded["optim"]["lr"] == cfg.optim.lr == 0.02
    assert loaded["trainer"]["max_epochs"] == cfg.trainer.max_epochs == 50
    assert loaded["seed"] == cfg.seed == 1
    assert loaded["cache_dir"] == cfg.cache_dir == str(tmp_path / "cache")  # from the env var


def test_a_key_newer_than_the_record_at_its_default_is_no_change(compose_cfg):
    # A results.json written before stability.enabled and data.official_val_fraction existed:
    # relaunched at their defaults it is the same job; a new key set otherwise is a change.
    from fer_lottery.config import config_changes, resolved

    cfg = compose_cfg("debug=tiny", "prune.ratio=0.5")
    recorded = resolved(cfg)
    for section, key in (
        ("stability", "enabled"),
        ("stability", "points"),
        ("data", "official_val_fraction"),
    ):
        del recorded[section][key]
    assert config_changes(recorded, cfg) == []
    # stability.points at its default is no change either, now that it applies.
    changed = compose_cfg("debug=tiny", "prune.ratio=0.5", "stability.enabled=true")
    assert config_changes(recorded, changed) == ["stability.enabled: None -> True"]
    changed = compose_cfg(
        "debug=tiny", "prune.ratio=0.5", "stability.enabled=true", "stability.points=5"
    )
    assert config_changes(recorded, changed) == [
        "stability.enabled: None -> True",
        "stability.points: None -> 5",
    ]
    recorded["seed"] = 7  # a key the record has still counts
    assert config_changes(recorded, cfg) == ["seed: 7 -> 1"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("retrain.epochs=0",), "no retraining to repeat"),
        (("prune.schedule=gradual",), "use prune.schedule=oneshot"),
        (("stability.points=10",), "must be odd and at least 3"),
        (("stability.points=1",), "must be odd and at least 3"),
    ],
)
def test_stability_refuses_what_it_cannot_repeat_in_one_line(compose_cfg, overrides, message):
    from fer_lottery.config import validate
    from fer_lottery.core.errors import ConfigError

    cfg = compose_cfg("debug=tiny", "prune.ratio=0.5", "stability.enabled=true", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
    # A dense job of a stability sweep (prune.ratio=0) is the dense model alone.
    validate(compose_cfg("debug=tiny", "prune.ratio=0", "stability.enabled=true"))
