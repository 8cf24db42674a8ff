"""Masks stay dead under momentum, weight decay, Adam and a resume; rewinding restores theta0."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.models import build_model, freeze_layers, prunable_weights
from fer_lottery.pruning.magnitude import magnitude_mask
from fer_lottery.pruning.mask import Mask
from fer_lottery.pruning.mask_callbacks import KeepMasked, SnapshotAtEpoch
from fer_lottery.pruning.rewind import set_start_weights
from fer_lottery.training.classifier import FERClassifier


@pytest.fixture(scope="module")
def datamodule():
    from hydra import compose, initialize_config_dir

    from fer_lottery.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            [
                "data=synthetic",
                "data.synthetic.per_class=8",
                "data.image_size=32",
                "data.batch_size=16",
            ],
        )
    dm = FaceDataModule(cfg.data, None, seed=0)
    dm.setup()
    return dm


def _optim(name: str, **kw):
    from omegaconf import OmegaConf

    base = {
        "name": name,
        "lr": 0.05 if name == "sgd" else 1e-2,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "nesterov": False,
        "betas": [0.9, 0.999],
    }
    return OmegaConf.create({**base, **kw})


def _trainer(tmp_path, epochs, callbacks):
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )


def _pruned_entries_are_zero(model, mask: Mask) -> bool:
    state = model.state_dict()
    return all(bool((state[n][~keep] == 0).all()) for n, keep in mask.tensors.items())


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_while_training(tmp_path, datamodule, optim):
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    names = prunable_weights(model)
    mask = magnitude_mask(model, names, 0.8, "layer")
    mask.apply(model)
    module = FERClassifier(model, _optim(optim), datamodule.class_names)
    trainer = _trainer(tmp_path, 3, [KeepMasked(mask)])
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step >= 9
    assert _pruned_entries_are_zero(model, mask)
    # Surviving weights did train.
    assert any(bool((model.state_dict()[n][mask.tensors[n]] != 0).any()) for n in names)
    # The optimizer state of pruned entries is zero too, so nothing pushes them back.
    params = dict(model.named_parameters())
    optimizer = trainer.optimizers[0]
    key = "momentum_buffer" if optim == "sgd" else "exp_avg"
    for n, keep in mask.tensors.items():
        assert bool((optimizer.state[params[n]][key][~keep] == 0).all()), n


def test_without_the_callback_pruned_weights_come_back(tmp_path, datamodule):
    """The control for the test above: SGD with momentum revives pruned weights."""
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    mask = magnitude_mask(model, prunable_weights(model), 0.8, "layer")
    mask.apply(model)
    _trainer(tmp_path, 1, []).fit(
        FERClassifier(model, _optim("sgd"), datamodule.class_names), datamodule=datamodule
    )
    assert not _pruned_entries_are_zero(model, mask)


def test_resume_restores_the_mask_from_the_checkpoint(tmp_path, datamodule):
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    mask = magnitude_mask(model, prunable_weights(model), 0.9, "global")
    mask.apply(model)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = _trainer(tmp_path, 1, [KeepMasked(mask), ckpt])
    trainer.fit(FERClassifier(model, _optim("sgd"), datamodule.class_names), datamodule=datamodule)
    # A resumed run starts from a callback that knows nothing of the mask...
    fresh = build_model("resnet18", None)
    blank = KeepMasked(Mask.ones(fresh, prunable_weights(fresh)))
    trainer = _trainer(tmp_path, 3, [blank])
    trainer.fit(
        FERClassifier(fresh, _optim("sgd"), datamodule.class_names),
        datamodule=datamodule,
        ckpt_path=tmp_path / "last.ckpt",
    )
    # ...and gets it back from the checkpoint: after two more epochs, pruned is still zero.
    assert blank.mask.kept() == mask.kept()
    assert trainer.current_epoch == 3
    assert _pruned_entries_are_zero(fresh, mask)


def test_rewind_pretrained_restores_every_surviving_weight_and_buffer(compose_cfg):
    torch.manual_seed(0)
    cfg = compose_cfg("retrain.rewind=pretrained", "prune.ratio=0.9")
    model = build_model("resnet18", None)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # stand-in for fine-tuning: every parameter and BN buffer moves
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.add_(torch.randn_like(v))
            else:
                v.add_(7)
    mask = magnitude_mask(model, prunable_weights(model), 0.9, "global")
    set_start_weights(cfg, model, {"theta0": theta0}, mask)
    for k, v in model.state_dict().items():
        expected = theta0[k] * mask.tensors[k] if k in mask else theta0[k]
        assert torch.equal(v, expected), k


def test_rewind_none_keeps_weights_and_random_reinitialises(compose_cfg):
    model = build_model("alexnet", None)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    mask = magnitude_mask(model, prunable_weights(model), 0.5, "layer")
    set_start_weights(compose_cfg("model=alexnet", "retrain.rewind=none"), model, {}, mask)
    w = "classifier.4.weight"
    assert torch.equal(model.state_dict()[w], trained[w] * mask.tensors[w])
    set_start_weights(compose_cfg("model=alexnet", "retrain.rewind=random"), model, {}, mask)
    kept = mask.tensors[w]
    assert not torch.equal(model.state_dict()[w][kept], trained[w][kept])
    assert bool((model.state_dict()[w][~kept] == 0).all())


def test_snapshot_at_epoch_k_is_the_state_after_k_epochs(tmp_path, datamodule):
    torch.manual_seed(0)
    model = build_model("resnet18", None)
    freeze_layers(model, "resnet18", 3)
    snap = SnapshotAtEpoch(1, tmp_path / "theta_k.pt")
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1)
    trainer = _trainer(tmp_path, 1, [snap, ckpt])
    trainer.fit(FERClassifier(model, _optim("sgd"), datamodule.class_names), datamodule=datamodule)
    after_one = {k: v.clone() for k, v in model.state_dict().items()}
    theta_k = torch.load(tmp_path / "theta_k.pt", weights_only=True)
    assert all(torch.equal(theta_k[k], after_one[k]) for k in after_one)
    # A resume past epoch k, and any checkpoint restore, leave the snapshot as it was.
    stamp = (tmp_path / "theta_k.pt").stat().st_mtime_ns
    trainer = _trainer(tmp_path, 2, [SnapshotAtEpoch(1, tmp_path / "theta_k.pt")])
    trainer.fit(
        FERClassifier(model, _optim("sgd"), datamodule.class_names),
        datamodule=datamodule,
        ckpt_path=tmp_path / "last.ckpt",
    )
    assert (tmp_path / "theta_k.pt").stat().st_mtime_ns == stamp
    assert not torch.equal(model.state_dict()["fc.weight"], after_one["fc.weight"])
