"""Model building: heads, weights from a state dict, the offline message, freezing."""

import urllib.error

import pytest
import torch
from torch import nn

from fer_lottery.core.errors import ConfigError, WeightsError
from fer_lottery.models import build_model, freeze_layers, layer_groups
from fer_lottery.training.classifier import FERClassifier


@pytest.mark.parametrize("name, n_layers", [("resnet18", 6), ("alexnet", 8)])
def test_seven_way_head_and_layer_count(name, n_layers):
    model = build_model(name, None)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    assert len(layer_groups(model, name)) == n_layers


def test_state_dict_with_imagenet_head_loads_before_new_head(tmp_path):
    from torchvision.models import resnet18

    source = resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "imagenet_like.pt")
    model = build_model("resnet18", str(tmp_path / "imagenet_like.pt"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.out_features == 7


def test_state_dict_with_seven_way_head_loads_whole_model(tmp_path):
    source = build_model("alexnet", None)
    torch.save(source.state_dict(), tmp_path / "fer.pt")
    model = build_model("alexnet", str(tmp_path / "fer.pt"))
    for (k, a), b in zip(source.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_wrong_architecture_state_dict_is_explained(tmp_path):
    torch.save(build_model("alexnet", None).state_dict(), tmp_path / "alex.pt")
    with pytest.raises(WeightsError, match="does not fit this architecture"):
        build_model("resnet18", str(tmp_path / "alex.pt"))


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        build_model("resnet18", str(tmp_path / "missing.pt"))


def test_unknown_weight_name_lists_known(tmp_path):
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        build_model("resnet18", "IMAGENET9K")


def test_offline_download_suggests_null_or_path(monkeypatch, tmp_path):
    """Simulate no network: the download raises URLError, as it does offline."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as err:
        build_model("resnet18", "IMAGENET1K_V1")
    text = str(err.value)
    assert "offline" in text and "model.weights=null" in text and "state_dict" in text


@pytest.mark.parametrize("name, k", [("resnet18", 0), ("resnet18", 3), ("alexnet", 6)])
def test_freeze_first_k_layers(name, k):
    model = build_model(name, None)
    frozen = freeze_layers(model, name, k)
    groups = layer_groups(model, name)
    for i, (_, modules) in enumerate(groups):
        for m in modules:
            for p in m.parameters():
                assert p.requires_grad == (i >= k)
    assert len(frozen) == sum(len(mods) for _, mods in groups[:k])


def test_freeze_out_of_range():
    with pytest.raises(ConfigError, match="use 0..6"):
        freeze_layers(build_model("resnet18", None), "resnet18", 7)


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_statistics():
    model = build_model("resnet18", None)
    frozen = freeze_layers(model, "resnet18", 2)  # stem + layer1
    module = FERClassifier(model, None, [str(i) for i in range(7)], frozen)
    before = model.bn1.running_mean.clone()
    module.train()
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training
    module(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert torch.equal(model.bn1.running_mean, before)
    assert not torch.equal(model.layer2[0].bn1.running_mean, torch.zeros(128))


def test_optimizer_gets_only_trainable_parameters(compose_cfg):
    cfg = compose_cfg("optim=adam")
    model = build_model("alexnet", None)
    frozen = freeze_layers(model, "alexnet", 5)
    optimizer = FERClassifier(model, cfg.optim, list("abcdefg"), frozen).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    n_opt = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_opt == n_trainable < sum(p.numel() for p in model.parameters())
    assert all(isinstance(m, nn.Conv2d) for m in frozen)
