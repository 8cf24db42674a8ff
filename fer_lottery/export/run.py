"""Export a finished distinctiveness-pruned run: its final weights, masked, then slimmed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from fer_lottery.errors import FerLotteryError
from fer_lottery.export.loader import build_model
from fer_lottery.export.slim import Export, slim
from fer_lottery.pruning.mask import Mask
from fer_lottery.store.atomic import write_atomic
from fer_lottery.store.weights import WEIGHTS_FILE, load_weights

FORMAT = "fer_lottery-export/1"


class ExportError(FerLotteryError):
    """A run folder that cannot be exported: not a run, not distinctiveness, no final weights."""


def final_weights_path(run_dir: Path) -> Path:
    """Where a run keeps its final weights.

    ``weights.pt`` (sparse, ``fer_lottery.store.weights``) when the run wrote one (every finished
    pruned run does), else, for runs from older versions, ``best.ckpt`` of the last
    retraining stage: ``retrain``, or ``retrain<r>`` with the highest r (IMP rounds).
    """
    weights = run_dir / "weights.pt"
    if weights.is_file():
        return weights
    stages = {}
    for ckpt in (run_dir / "checkpoints").glob("retrain*/best.ckpt"):
        found = re.fullmatch(r"retrain(\d*)", ckpt.parent.name)
        if found:
            stages[int(found.group(1) or 0)] = ckpt
    if not stages:
        raise ExportError(
            f"{run_dir}: no final weights (weights.pt, or checkpoints/retrain*/best.ckpt of an "
            "older run)"
        )
    return stages[max(stages)]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The run's final model weights as a plain state dict (the Lightning prefix removed)."""
    path = final_weights_path(run_dir)
    if path.name == WEIGHTS_FILE:
        return load_weights(path)  # sparse, as every finished job stores them
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:  # a Lightning checkpoint: the model's entries are "model.*"
        state = {
            k.removeprefix("model."): v
            for k, v in state["state_dict"].items()
            if k.startswith("model.")
        }
    return state


def run_config(run_dir: Path) -> dict:
    """The resolved config from ``results.json``; the run must be distinctiveness-pruned."""
    path = run_dir / "results.json"
    if not path.is_file():
        raise ExportError(
            f"{run_dir}: no results.json, so not a finished run (with data.folds=k, export each "
            "fold=<i> folder)"
        )
    try:
        cfg = json.loads(path.read_text())["config"]
    except (ValueError, KeyError) as exc:
        raise ExportError(f"{path}: unreadable, or no resolved config ({exc!r})") from None
    if cfg["prune"]["method"] != "distinctiveness":
        raise ExportError(
            f"{run_dir}: prune.method={cfg['prune']['method']}; export removes whole units, which "
            "only distinctiveness pruning removes"
        )
    return cfg


def masked_model(run_dir: Path) -> tuple[nn.Module, str, Mask]:
    """The run's final model as the run evaluated it (mask applied), its arch and its mask."""
    cfg = run_config(run_dir)
    arch = cfg["model"]["name"]
    model = build_model(arch, cfg["model"]["num_classes"], final_weights(run_dir))
    if not (run_dir / "mask.pt").is_file():
        raise ExportError(f"{run_dir}: no mask.pt, so no record of which units were removed")
    mask = Mask.load(run_dir / "mask.pt")
    mask.apply(model)
    return model.eval(), arch, mask


def save_export(export: Export, path: Path) -> None:
    """``{"format", "arch", "state_dict", "summary"}``, written atomically."""
    payload = {
        "format": FORMAT,
        "arch": export.arch,
        "state_dict": export.model.state_dict(),
        "summary": export.summary(),
    }
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def export_run(run_dir: str | Path, out: str | Path | None = None) -> tuple[Export, Path]:
    """Slim the run in ``run_dir`` and save it (default ``run_dir/exported.pt``)."""
    run_dir = Path(run_dir)
    model, arch, mask = masked_model(run_dir)
    export = slim(model, arch, mask.tensors)
    path = Path(out) if out is not None else run_dir / "exported.pt"
    save_export(export, path)
    return export, path
