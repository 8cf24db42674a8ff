"""A finished job's final weights, stored sparse: a bit mask of the non-zero entries plus their
values, so a 90%-pruned ResNet-18 takes about 6 MB instead of a 100 MB Lightning checkpoint.

``weights.pt`` is a plain ``torch.save`` of tensors, strings and ints (it loads with
``weights_only=True``). A tensor that is mostly zeros is kept as ``{"shape", "dtype", "bits",
"values"}``: ``bits`` is the packed (1 bit per entry, ``store.bits``) map of non-zero entries,
``values`` the non-zero entries in order. Any other tensor is kept as it is. ``load_weights``
rebuilds every tensor exactly (``torch.equal``; a pruned entry is 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fer_lottery.core import paths
from fer_lottery.core.criteria import prunes
from fer_lottery.store.atomic import save_torch
from fer_lottery.store.bits import pack_bits, unpack_bits

FORMAT = "fer_lottery.sparse/1"
SPARSE_ABOVE = 0.5  # store sparse when more than this fraction of a tensor is zero


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.removeprefix("torch."))


def pack(tensor: torch.Tensor) -> torch.Tensor | dict:
    """``tensor`` as it is, or as a bit mask plus its non-zero values when mostly zero."""
    t = tensor.detach().cpu()
    if not t.is_floating_point() or t.numel() < 64:
        return t.clone()
    nonzero = t != 0
    if 1 - float(nonzero.float().mean()) <= SPARSE_ABOVE:
        return t.clone()
    bits = pack_bits(nonzero)
    return {
        "shape": bits["shape"],
        "dtype": str(t.dtype),
        "bits": bits["bits"],
        "values": t[nonzero].clone(),
    }


def unpack(entry: torch.Tensor | dict) -> torch.Tensor:
    """The tensor ``pack`` stored."""
    if torch.is_tensor(entry):
        return entry
    nonzero = unpack_bits(entry)
    out = torch.zeros(nonzero.shape, dtype=_dtype(entry["dtype"]))
    out[nonzero] = entry["values"]
    return out


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict to ``path`` (atomically), mostly-zero tensors sparse."""
    payload = {"format": FORMAT, "tensors": {k: pack(v) for k, v in state.items()}}
    save_torch(path, payload)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict ``save_weights`` wrote, every tensor exactly as it was."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fer_lottery weights file ({FORMAT})")
    return {k: unpack(v) for k, v in payload["tensors"].items()}


def run_weights_path(run_dir: str | Path) -> Path:
    """Where a finished job's final weights are: its ``weights.pt``, or, for a job that did not
    prune and used the dense cache, the cache entry's ``best.pt`` (``results.json`` names it).

    FileNotFoundError, naming what is missing, when the job has neither (a pruned job's weights
    are never the dense model's).
    """
    run_dir = Path(run_dir)
    if (run_dir / paths.WEIGHTS).is_file():
        return run_dir / paths.WEIGHTS
    results_path = run_dir / paths.RESULTS
    if not results_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {paths.WEIGHTS} and no {paths.RESULTS}")
    results = json.loads(results_path.read_text())
    prune = results.get("config", {}).get("prune", {})
    if prunes(prune.get("method"), prune.get("ratio")):
        raise FileNotFoundError(f"{run_dir}: a pruned job without its {paths.WEIGHTS}")
    key = results.get("dense/cache_key")
    if not key:
        raise FileNotFoundError(f"{run_dir}: no {paths.WEIGHTS}, and no dense cache entry")
    best = paths.dense_entry(results["config"]["cache_dir"], key) / paths.BEST
    if not best.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {paths.WEIGHTS}, and its dense entry {best} is gone"
        )
    return best


def run_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """A finished job's final weights as a plain state dict (see ``run_weights_path``)."""
    path = run_weights_path(run_dir)
    if path.name == paths.WEIGHTS:
        return load_weights(path)
    return torch.load(path, map_location="cpu", weights_only=True)
