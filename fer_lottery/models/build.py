"""Build ResNet-18 or AlexNet with a new 7-way head, load weights, freeze the first k layers."""

from __future__ import annotations

import logging
from fnmatch import fnmatch
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from fer_lottery.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

ARCHITECTURES = {"resnet18": models.resnet18, "alexnet": models.alexnet}
WEIGHT_ENUMS = {"resnet18": models.ResNet18_Weights, "alexnet": models.AlexNet_Weights}


def layer_groups(model: nn.Module, name: str) -> list[tuple[str, list[nn.Module]]]:
    """The layers that ``model.frozen_layers`` counts, in order.

    ResNet-18: stem (conv1 + bn1), layer1..layer4, fc. AlexNet: conv1..conv5, fc6, fc7, fc8.
    """
    if name == "resnet18":
        return [
            ("stem", [model.conv1, model.bn1]),
            ("layer1", [model.layer1]),
            ("layer2", [model.layer2]),
            ("layer3", [model.layer3]),
            ("layer4", [model.layer4]),
            ("fc", [model.fc]),
        ]
    if name == "alexnet":
        convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
        names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
        return [(n, [m]) for n, m in zip(names, convs + fcs, strict=True)]
    raise ConfigError(f"model.name={name!r}: expected one of {sorted(ARCHITECTURES)}")


def _head(model: nn.Module, name: str) -> nn.Linear:
    return model.fc if name == "resnet18" else model.classifier[6]


def _set_head(model: nn.Module, name: str, num_classes: int) -> None:
    old = _head(model, name)
    new = nn.Linear(old.in_features, num_classes)
    if name == "resnet18":
        model.fc = new
    else:
        model.classifier[6] = new


def _imagenet_state(name: str, weights: str) -> dict[str, torch.Tensor]:
    try:
        enum = WEIGHT_ENUMS[name][weights]
    except KeyError:
        allowed = [w.name for w in WEIGHT_ENUMS[name]]
        raise ConfigError(
            f"model.weights={weights!r} is not a torchvision weight set for {name} "
            f"(known: {', '.join(allowed)}), nor an existing state-dict file. "
            "Use IMAGENET1K_V1, null (random init) or a path to a state-dict file."
        ) from None
    try:
        return enum.get_state_dict(progress=False)
    except Exception as exc:  # URLError, HTTPError, OSError, hash mismatch...
        raise WeightsError(
            f"Could not download the {weights} weights for {name} ({type(exc).__name__}: {exc}). "
            "Are you offline? Use model.weights=null for a random init (not pretrained), or "
            "model.weights=/path/to/state_dict.pt (saved by torch.save(model.state_dict(), path))."
        ) from None


def _file_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"model.weights={path}: cannot read a state dict from this file "
            f"({type(exc).__name__}: {exc}). Save one with torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict):
        raise WeightsError(f"model.weights={path} holds a {type(state).__name__}, not a state dict")
    return state


def _load(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(
            f"model.weights={source} does not fit this architecture:\n{exc}\n"
            "Check model.name, or save the state dict from the same torchvision model."
        ) from None


def build_model(name: str, weights: str | None, num_classes: int = 7) -> nn.Module:
    """torchvision ``name`` with ``weights`` (IMAGENET1K_V1, None or a file) and a new head.

    A state-dict file may hold the original 1000-way head (loaded before the head is replaced)
    or a ``num_classes``-way head (loaded after).
    """
    if name not in ARCHITECTURES:
        raise ConfigError(f"model.name={name!r}: expected one of {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[name](weights=None)
    if weights is None:
        log.info("model: %s, random init (NOT pretrained)", name)
        _set_head(model, name, num_classes)
        return model
    path = Path(str(weights)).expanduser()
    if path.is_file():
        state = _file_state(path)
        head_key = "fc.weight" if name == "resnet18" else "classifier.6.weight"
        if head_key in state and state[head_key].shape[0] == num_classes:
            _set_head(model, name, num_classes)
            _load(model, state, str(path))
        else:
            _load(model, state, str(path))
            _set_head(model, name, num_classes)
        log.info("model: %s, weights from %s", name, path)
        return model
    if any(sep in str(weights) for sep in ("/", "\\")) or path.suffix in {".pt", ".pth", ".ckpt"}:
        raise WeightsError(
            f"model.weights={weights}: no such file. Give an existing state-dict path, "
            "IMAGENET1K_V1, or null for a random init."
        )
    _load(model, _imagenet_state(name, str(weights)), str(weights))
    _set_head(model, name, num_classes)
    log.info("model: %s, ImageNet-pretrained (%s), new %d-way head", name, weights, num_classes)
    return model


def freeze_layers(model: nn.Module, name: str, k: int) -> list[nn.Module]:
    """Freeze the first ``k`` layer groups (``requires_grad=False``) and return their modules.

    The caller keeps BatchNorm in those modules in eval mode (see FERClassifier.train), so their
    running statistics stay as loaded.
    """
    groups = layer_groups(model, name)
    if not 0 <= k <= len(groups):
        raise ConfigError(
            f"model.frozen_layers={k} is out of range for {name}, which has {len(groups)} "
            f"layers ({', '.join(g for g, _ in groups)}): use 0..{len(groups)}"
        )
    frozen = [m for _, mods in groups[:k] for m in mods]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def prunable_weights(model: nn.Module, include: list[str] | tuple[str, ...] = ("*",)) -> list[str]:
    """State-dict names of the conv and linear weights whose module name matches ``include``.

    Biases and BatchNorm are never pruned by weight-level strategies. ``include`` holds glob
    patterns over module names (``"*"``: all; ``"layer*"``: ResNet blocks; ``"classifier.*"``).
    """
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and any(fnmatch(name, p) for p in include)
    ]


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass through conv and linear layers: (total, nonzero).

    ``nonzero`` counts only the MACs of weights that are not zero, i.e. what a sparse kernel
    would do. Bias additions, BatchNorm, pooling and activations are not counted.
    """
    counts = [0, 0]

    def hook(module: nn.Module, inputs, output) -> None:
        positions = output[0].numel() // module.weight.shape[0]  # output pixels (1 for linear)
        counts[0] += positions * module.weight.numel()
        counts[1] += positions * int(torch.count_nonzero(module.weight))

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.compiler.set_stance("force_eager"):  # hooks, even in a compiled model
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts[0], counts[1]
