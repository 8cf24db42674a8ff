"""Build a backbone with its start weights and a new head, and freeze its first k layer groups.

Any torchvision classification builder or timm model (``models.backbone``); weights from
``models.weights``. The random draws come in the same order for every backbone: the library's
own initialisation of the 1000-way network, then the new head (after the weights are loaded, or
before, for a state-dict file that holds a ``num_classes``-way head).
"""

from __future__ import annotations

import logging
from fnmatch import fnmatch
from pathlib import Path

import torch
from torch import nn

from fer_lottery.core.errors import ConfigError, WeightsError
from fer_lottery.models.backbone import (
    create,
    head_name,
    layer_group_names,
    replace_head,
    spec,
)
from fer_lottery.models.weights import Loaded, is_file_like, load_file, load_imagenet

log = logging.getLogger(__name__)


def layer_groups(model: nn.Module, name: str) -> list[tuple[str, list[nn.Module]]]:
    """The layer groups that ``model.frozen_layers`` counts, in order (``backbone``)."""
    groups = layer_group_names(model, spec(name))
    return [(label, [model.get_submodule(p) for p in paths]) for label, paths in groups]


def _load(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(
            f"model.weights={source} does not fit this architecture:\n{exc}\n"
            "Check model.name, or save the state dict from the same model."
        ) from None


def build(name: str, weights: str | None, num_classes: int | None = 7) -> tuple[nn.Module, Loaded]:
    """Backbone ``name`` with ``weights`` (imagenet or a tag, None or a file) and a new head,
    and where its weights came from (``Loaded.state`` dropped). ``num_classes=None`` keeps the
    library's 1000-way ImageNet head (with ImageNet weights: the ImageNet classifier)."""
    s = spec(name)
    model = create(s)
    if num_classes is None:
        loaded = load_imagenet(s, str(weights), model) if weights is not None else None
        if loaded is not None:
            _load(model, loaded.state, loaded.source)
            return model, Loaded(None, loaded.source, True, loaded.sha256)
        return model, Loaded(None, "random init (not pretrained)", False, None)
    if weights is None:
        replace_head(model, s, num_classes)
        log.debug("model: %s, random init (NOT pretrained)", name)
        return model, Loaded(None, "random init (not pretrained)", False, None)
    path = Path(str(weights)).expanduser()
    if path.is_file():
        loaded = load_file(path)
        head = head_name(model, s)
        state = loaded.state
        if f"{head}.weight" in state and state[f"{head}.weight"].shape[0] == num_classes:
            replace_head(model, s, num_classes)
            _load(model, state, str(path))
        else:
            _load(model, state, str(path))
            replace_head(model, s, num_classes)
        log.debug("model: %s, weights from %s", name, path)
        return model, Loaded(None, loaded.source, False, loaded.sha256)
    if is_file_like(str(weights)):
        raise WeightsError(
            f"model.weights={weights}: no such file. Give an existing state-dict path, "
            "imagenet, or null for a random init."
        )
    loaded = load_imagenet(s, str(weights), model)
    _load(model, loaded.state, loaded.source)
    replace_head(model, s, num_classes)
    log.debug(
        "model: %s, ImageNet-pretrained: %s; new %d-way head", name, loaded.source, num_classes
    )
    return model, Loaded(None, loaded.source, True, loaded.sha256)


def build_model(name: str, weights: str | None, num_classes: int = 7) -> nn.Module:
    """Backbone ``name`` with ``weights`` and a new ``num_classes``-way head (``build``)."""
    return build(name, weights, num_classes)[0]


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
