"""Whether a SLURM partition can run a sweep's jobs at all, asked of ``sinfo``.

SLURM queues a job whose request exceeds every node of its partition and leaves it pending for
ever, so a sweep that asks for 32 GB on 24 GB nodes never starts and never fails.
``check_fit`` (called by the ``slurm`` preset's launcher,
``hydra_plugins.fer_lottery_slurm.FittedSlurmLauncher``, before anything is submitted) refuses
such a sweep in one line that names the key, the request and the largest node, with exit status
2. Where ``sinfo`` is not there (a submit host without the client tools), it says so and the
sweep is submitted as before.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    """What one node of a partition offers a job."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int


def _gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` field: ``gpu:4``, ``gpu:a100:2(S:0-1)``, ``(null)``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def partition_nodes(partition: str) -> list[Node] | None:
    """The nodes of ``partition`` (``sinfo``), [] when there is no such partition, or None when
    ``sinfo`` cannot be run here."""
    if shutil.which("sinfo") is None:
        return None
    proc = subprocess.run(
        ["sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%m|%G"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return None
    nodes = []
    for line in proc.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[1].isdigit():
            continue
        memory = re.match(r"\d+", fields[2])
        nodes.append(
            Node(fields[0], int(fields[1]), int(memory.group()) if memory else 0, _gpus(fields[3]))
        )
    return nodes


def partitions() -> list[str]:
    proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    return sorted({p.rstrip("*") for p in proc.stdout.split()})


def misfit(params: dict, nodes: list[Node]) -> str | None:
    """Why no node of the partition can run one job of this request, or None when one can."""
    tasks = int(params.get("tasks_per_node") or 1)
    offers = [
        ("mem_gb", "GB", lambda n: n.memory_mb / 1024),
        ("cpus_per_task", "CPUs", lambda n: n.cpus // tasks),  # per task
        ("gpus_per_node", "GPUs", lambda n: n.gpus),
    ]
    for key, unit, offer in offers:
        asked = float(params.get(key) or 0)  # mem_gb 0: SLURM's "all the node's memory"
        if asked and not any(offer(n) >= asked for n in nodes):
            best = max(nodes, key=offer)
            most = offer(best)
            per = (
                f" per task ({tasks} tasks per job)" if key == "cpus_per_task" and tasks > 1 else ""
            )
            where = f"partition {params.get('partition')}"
            if key == "gpus_per_node" and most == 0:
                return (
                    f"hydra.launcher.gpus_per_node={params[key]}: no node of {where} has a GPU "
                    "(sinfo), so the jobs would wait in the queue for ever: use another "
                    "hydra.launcher.partition, or train on its CPUs with "
                    "hydra.launcher.gpus_per_node=0 'hydra.launcher.setup=[]'"
                )
            return (
                f"hydra.launcher.{key}={params[key]} asks {asked:g} {unit}{per}, but the largest "
                f"node of {where} ({best.name}) offers {round(most, 1):g} {unit} (sinfo), so the "
                f"jobs would wait in the queue for ever: use hydra.launcher.{key}="
                f"{math.floor(most)} or less, or another hydra.launcher.partition"
            )
    return None


def check_fit(params: dict) -> None:
    """Exit 2 with one line when no node of ``params["partition"]`` fits one job's request."""
    partition = str(params.get("partition"))
    nodes = partition_nodes(partition)
    if nodes is None:
        log.warning(
            "sinfo is not available here: cannot check that partition %s fits the request; "
            "submitting",
            partition,
        )
        return
    if not nodes:
        log.error(
            "hydra.launcher.partition=%s: no such partition (sinfo lists: %s)",
            partition,
            ", ".join(partitions()) or "none",
        )
        sys.exit(2)
    problem = misfit(params, nodes)
    if problem is not None:
        log.error("%s", problem)
        sys.exit(2)
