"""Export a finished distinctiveness-pruned run: its final weights, masked, then slimmed."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from fer_lottery.core import paths
from fer_lottery.core.criteria import prunes
from fer_lottery.core.errors import FerLotteryError
from fer_lottery.export.loader import build_model
from fer_lottery.export.slim import Export, slim
from fer_lottery.pruning.mask import Mask
from fer_lottery.store.atomic import save_torch
from fer_lottery.store.weights import run_weights

FORMAT = "fer_lottery-export/1"


class ExportError(FerLotteryError):
    """A run folder that cannot be exported: not a run, not distinctiveness, no final weights."""


def run_config(run_dir: Path) -> dict:
    """The resolved config from ``results.json``; the run must be distinctiveness-pruned."""
    path = run_dir / paths.RESULTS
    if not path.is_file():
        raise ExportError(
            f"{run_dir}: no results.json, so not a finished run (with data.folds=k, export each "
            "fold=<i> folder)"
        )
    try:
        cfg = json.loads(path.read_text())["config"]
    except (ValueError, KeyError) as exc:
        raise ExportError(f"{path}: unreadable, or no resolved config ({exc!r})") from None
    if not prunes(cfg["prune"]["method"], cfg["prune"].get("ratio")):
        raise ExportError(
            f"{run_dir}: a dense run (prune.method={cfg['prune']['method']}, prune.ratio="
            f"{cfg['prune'].get('ratio')}), never pruned: there are no removed units to slice "
            "out; export a distinctiveness-pruned run"
        )
    units = cfg["prune"]["method"] == "distinctiveness" or cfg["prune"].get("granularity") == "unit"
    if not units:
        raise ExportError(
            f"{run_dir}: prune.method={cfg['prune']['method']} with prune.granularity="
            f"{cfg['prune'].get('granularity', 'weight')}; export removes whole units, which only "
            "distinctiveness pruning and prune.granularity=unit remove"
        )
    return cfg


def masked_model(run_dir: Path) -> tuple[nn.Module, str, Mask]:
    """The run's final model as the run evaluated it (mask applied), its arch and its mask."""
    cfg = run_config(run_dir)
    arch = cfg["model"]["name"]
    try:
        weights = run_weights(run_dir)
    except FileNotFoundError as exc:
        raise ExportError(f"{exc}: no final weights to export") from None
    model = build_model(arch, cfg["model"]["num_classes"], weights)
    if not (run_dir / paths.MASK).is_file():
        raise ExportError(f"{run_dir}: no {paths.MASK}, so no record of which units were removed")
    try:
        mask = Mask.load(run_dir / paths.MASK)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{run_dir / paths.MASK} cannot be read as a mask ({exc})") from None
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
    save_torch(path, payload)


def export_run(run_dir: str | Path, out: str | Path | None = None) -> tuple[Export, Path]:
    """Slim the run in ``run_dir`` and save it (default ``run_dir/exported.pt``)."""
    run_dir = Path(run_dir)
    model, arch, mask = masked_model(run_dir)
    export = slim(model, arch, mask.tensors)
    path = Path(out) if out is not None else run_dir / paths.EXPORTED
    save_export(export, path)
    return export, path
