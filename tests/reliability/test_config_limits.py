"""Any config the schema accepts trains, or fails before any work in one line (the CLI's stderr,
exit 2): batches of one image, every layer frozen, the real image-size minimum of each model,
and keys added with ``+`` that no part of fer_lottery reads."""

from __future__ import annotations

import pytest

from tests.helpers import TINY_SYNTHETIC, run_cli


def test_a_last_training_batch_of_one_image_is_dropped_and_counted(run_job):
    """42 training images in batches of 41 leave a batch of 1, which ResNet-18's BatchNorm cannot
    train on: the real Trainer.fit drops it each epoch, and results.json says so."""
    results, run_dir = run_job("resnet", "data.batch_size=41", "prune.ratio=0.5")
    assert results["data/n_train"] == 42
    assert results["data/train_dropped_per_epoch"] == 1
    assert 0.0 <= results["test/acc"] <= 1.0 and (run_dir / "results.json").is_file()
    # A model whose BatchNorm does not train (AlexNet has none) keeps every image.
    alexnet, _ = run_job("alexnet", "model=alexnet", "data.image_size=64", "data.batch_size=41")
    assert alexnet["data/train_dropped_per_epoch"] == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.batch_size=1"], "data.batch_size=1: resnet18's BatchNorm layers train"),
        (["model.frozen_layers=6"], "model.frozen_layers=6 is out of range for resnet18"),
        (["model=alexnet", "model.frozen_layers=8"], "alexnet, which has 8 layer groups"),
        (["model=alexnet", "data.image_size=8"], "too small for alexnet: use at least 63"),
        (["data.image_size=8"], "too small for resnet18: use at least 32"),
        (
            ["+prune.ratoi=0.5"],
            "prune.ratoi is not a fer_lottery setting (did you mean prune.ratio?)",
        ),
        (["+seeds=3"], "seeds is not a fer_lottery setting"),
    ],
    ids=[
        "batch_of_one",
        "resnet_all_frozen",
        "alexnet_all_frozen",
        "alexnet_8px",
        "resnet_8px",
        "plus_typo",
        "plus_unknown_top_level",
    ],
)
def test_a_config_that_cannot_train_fails_in_one_line_before_any_work(tmp_path, overrides, message):
    proc = run_cli(*TINY_SYNTHETIC, *overrides, cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not list(tmp_path.rglob("split.json"))  # no data was loaded


def test_the_open_keys_still_take_keys_of_their_own(compose_cfg):
    from fer_lottery.config import validate

    validate(compose_cfg("+trainer.extra.gradient_clip_val=1.0", "+published.note=x"))
    validate(compose_cfg("model=alexnet", "data.image_size=64", "data.batch_size=1"))  # no BN
    validate(compose_cfg("model.frozen_layers=5", "data.batch_size=1"))  # every BN frozen
