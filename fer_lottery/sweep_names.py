"""Readable sweep job folders: only the swept overrides, e.g. ``prune.ratio=0.9,seed=2``.

Hydra's ``override_dirname`` lists every command-line override, so small settings repeated in
every job (``trainer.max_epochs=2,...``) bury the one that varies. The sweep's own
``multirun.yaml``, written before any job starts, says which overrides are sweeps (from the
command line or an experiment's ``hydra.sweeper.params``); jobs name their folder by those alone.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


def _swept_keys(multirun_yaml: Path) -> set[str] | None:
    if not multirun_yaml.is_file():
        return None
    cfg = OmegaConf.load(multirun_yaml)
    parser = OverridesParser.create()
    task = list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    candidates = task + [f"{k}={v}" for k, v in params.items()]
    return {o.key_or_group for o in parser.parse_overrides(candidates) if o.is_sweep_override()}


def swept_dirname(sweep_dir: str, task_overrides) -> str:
    """The job's folder name: its swept ``key=value`` pairs, sorted and joined by commas."""
    task = [str(o) for o in task_overrides]
    swept = _swept_keys(Path(sweep_dir) / "multirun.yaml")
    parser = OverridesParser.create()
    keep = [
        o
        for o, parsed in zip(task, parser.parse_overrides(task), strict=True)
        if swept is None or parsed.key_or_group in swept
    ]
    return ",".join(sorted(keep)).replace("/", "_") or "job"
