"""The straight line between two trained models: interpolated weights, BatchNorm statistics
recomputed on the training split, and accuracy and loss at each point (linear mode
connectivity, Frankle et al. 2020).

Interpolating two networks' BatchNorm running statistics gives statistics that no network on
the path has: averaged weights shrink the activations' variance, so an interpolated ResNet
normalises with the wrong scale and its accuracy collapses in the middle of the path even when
the two ends are connected. So at each point the statistics of every BatchNorm layer that
trains are recomputed, as ``torch.optim.swa_utils.update_bn`` does (running averages reset,
one pass of the training split with the layers in train mode). Unlike ``update_bn``, each
batch's statistics are weighted by its size (``momentum = n_b / n_seen``), so the result is the
mean over images, not over batches; a last batch of one image is left out, as training drops
it (BatchNorm in train mode cannot normalise one image); the pass uses the training images
without augmentation, keeps dropout off, and leaves the BatchNorm layers of frozen modules
alone: their statistics are theta0's at both ends, so they are on the path already.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from fer_lottery.core.devices import compute_device
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.training.stage import autocast_dtype, split_logits, trainer_kwargs


def interpolate(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * a + alpha * b for every floating-point entry; integer entries (BatchNorm's
    ``num_batches_tracked``) are taken from ``a`` at alpha < 0.5, else from ``b``. At alpha 0
    and 1 this is ``a`` and ``b`` exactly."""
    out = {}
    for name, x in a.items():
        y = b[name]
        if alpha == 0 or alpha == 1:
            out[name] = (x if alpha == 0 else y).clone()
        elif x.is_floating_point():
            out[name] = torch.lerp(x, y.to(x.dtype), alpha)
        else:
            out[name] = (x if alpha < 0.5 else y).clone()
    return out


def trained_batchnorms(
    model: nn.Module, frozen: list[nn.Module]
) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` outside the frozen modules."""
    skip = {id(m) for f in frozen for m in f.modules()}
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in skip
    ]


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, frozen: list[nn.Module], datamodule: FaceDataModule, cfg: DictConfig
) -> int:
    """Recompute the running statistics of the model's trained BatchNorm layers from one pass
    over the training split (no augmentation, dropout off); returns the number of layers."""
    layers = trained_batchnorms(model, frozen)
    if not layers:
        return 0
    device = compute_device(cfg)
    home = next(model.parameters()).device
    was_training = model.training
    model.to(device).eval()
    momenta = {}
    for layer in layers:
        momenta[layer] = layer.momentum
        layer.reset_running_stats()
        layer.train()
    dtype = autocast_dtype(trainer_kwargs(cfg)["precision"])
    seen = 0
    try:
        for images, _ in datamodule.eval_loader("train"):
            if len(images) < 2 and seen:  # one image: train-mode BatchNorm cannot take it
                continue
            seen += len(images)
            for layer in layers:  # running = the image-weighted mean of the batch statistics
                layer.momentum = len(images) / seen
            x = datamodule.transform(images.to(device, non_blocking=True), train=False)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                model(x)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        model.to(home).train(was_training)
    return len(layers)


def point_metrics(
    model: nn.Module, datamodule: FaceDataModule, cfg: DictConfig, split: str
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on a split."""
    logits, labels = split_logits(model, datamodule, split, cfg)
    if not len(labels):
        return 0.0, 0.0
    acc = float((logits.argmax(1) == labels).float().mean())
    return acc, float(F.cross_entropy(logits, labels))


def evaluate_path(
    model: nn.Module,
    frozen: list[nn.Module],
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    alphas: list[float],
    datamodule: FaceDataModule,
    cfg: DictConfig,
    recompute_bn: bool = True,
) -> list[dict[str, float]]:
    """Val and test accuracy and loss of ``model`` at each alpha of the line from ``a`` to
    ``b``, with the BatchNorm statistics recomputed at every point (``recompute_bn=False``
    keeps the interpolated ones: only to show what the recomputation is for). The model holds
    the last point's weights afterwards."""
    rows = []
    for alpha in alphas:
        model.load_state_dict(interpolate(a, b, alpha))
        if recompute_bn:
            recompute_batchnorm(model, frozen, datamodule, cfg)
        row = {"alpha": alpha}
        for split in ("val", "test"):
            row[f"{split}/acc"], row[f"{split}/loss"] = point_metrics(model, datamodule, cfg, split)
        rows.append(row)
    return rows


def error_barrier(accuracies: list[float]) -> float:
    """The highest error on the path minus the mean error of its two ends (Frankle et al.
    2020's instability); 0 when the path is no worse than its ends."""
    errors = [1 - a for a in accuracies]
    return max(errors) - (errors[0] + errors[-1]) / 2
