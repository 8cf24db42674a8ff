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

from fer_lottery.config.renamed import new_name
from fer_lottery.core import paths


def swept_keys(multirun_yaml: Path) -> set[str] | None:
    """The keys a sweep sweeps (command line or ``hydra.sweeper.params``); None without the file.
    A sweep launched before a key moved (``config.renamed``) names it at its new place."""
    if not multirun_yaml.is_file():
        return None
    cfg = OmegaConf.load(multirun_yaml)
    parser = OverridesParser.create()
    task = list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    candidates = task + [f"{k}={v}" for k, v in params.items()]
    swept = {o.key_or_group for o in parser.parse_overrides(candidates) if o.is_sweep_override()}
    return {new_name(key) or key for key in swept}


def swept_dirname(sweep_dir: str, task_overrides) -> str:
    """The job's folder name: its swept ``key=value`` pairs, sorted and joined by commas."""
    task = [str(o) for o in task_overrides]
    swept = swept_keys(Path(sweep_dir) / paths.MULTIRUN)
    parser = OverridesParser.create()
    keep = [
        o
        for o, parsed in zip(task, parser.parse_overrides(task), strict=True)
        if swept is None or parsed.key_or_group in swept
    ]
    return ",".join(sorted(keep)).replace("/", "_") or "job"


# Always shown in TensorBoard's hparams tab, swept or not: what a row of the tab is.
IDENTITY_KEYS = ("prune.method", "prune.ratio", "retrain.rewind", "seed")


def swept_params(cfg) -> dict[str, object]:
    """This job's swept keys (or, in a single run, its command-line overrides) and their values.

    TensorBoard's hparams tab lists these beside each run's final metrics, so a sweep's table
    shows what varies instead of every config key. Outside Hydra only ``IDENTITY_KEYS`` appear.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    task: list[str] = []
    swept: set[str] | None = None
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        task = [str(o) for o in hc.overrides.task]
        if hc.mode == RunMode.MULTIRUN:
            swept = swept_keys(Path(hc.sweep.dir) / paths.MULTIRUN)
    out: dict[str, object] = {}
    parser = OverridesParser.create()
    for text, parsed in zip(task, parser.parse_overrides(task), strict=True):
        key = parsed.key_or_group
        if key.startswith("hydra") or (swept is not None and key not in swept):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        out[key] = value if isinstance(value, (int, float, str, bool)) else text.split("=", 1)[1]
    for key in IDENTITY_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        out.setdefault(key, value.value if hasattr(value, "value") else value)
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in out.items()}


def expected_jobs(sweep_dir: Path) -> list[str]:
    """Job folder names a basic-sweeper multirun was asked for (from its ``multirun.yaml``);
    none for another sweeper (Optuna decides its trials as it goes)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    cfg = OmegaConf.load(sweep_dir / paths.MULTIRUN)
    if "BasicSweeper" not in str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")):
        return []
    task = list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    parsed = OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in params.items()] + task
    )
    # The command line beats the preset's params, as in BasicSweeper.
    by_key = {o.key_or_group: o for o in parsed}
    batches = BasicSweeper.split_arguments(list(by_key.values()), None)
    return [swept_dirname(str(sweep_dir), job) for batch in batches for job in batch]
