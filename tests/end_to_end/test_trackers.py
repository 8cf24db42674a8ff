"""MLflow and W&B beside TensorBoard (#30), read back through their own clients: a real
``mlflow server`` over the store a real sweep wrote, answering on its REST API, and W&B's offline
run files read with W&B's own reader. A tracker that is missing or does not answer gets one
warning and changes nothing in the job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import TINY_SYNTHETIC, run_cli

SWEEP = (*TINY_SYNTHETIC, "retrain.epochs=1", "trainer.max_epochs=2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, path: str, **query) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _numbers(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    skip = ("time/", "config", "dense/cache")
    return {k: v for k, v in results.items() if not k.startswith(skip)}


@pytest.mark.slow
def test_a_real_mlflow_server_answers_for_a_real_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        *SWEEP,
        "prune.ratio=0.5,0.9",
        "logger=[tensorboard,mlflow]",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    port = _free_port()
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", (sweep / "mlruns").as_uri(), "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5).close()
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
                time.sleep(1)
        # The sweep is one experiment, named after its folder; each job one run.
        experiment = _get(
            base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=str(sweep.resolve())
        )["experiment"]
        found = _post(
            base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]}
        )["runs"]
        by_name = {r["info"]["run_name"]: r for r in found}
        assert sorted(by_name) == ["prune.ratio=0.5", "prune.ratio=0.9"]
        for name, run in by_name.items():
            results = json.loads((sweep / name / "results.json").read_text())
            assert run["info"]["status"] == "FINISHED"
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            assert params["prune.ratio"] == name.split("=")[1] and params["seed"] == "1"
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            assert tags["condition"] == name and tags["seed"] == "1"
            assert tags["dense_cache_key"] == results["dense/cache_key"]
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert metrics["test/acc"] == pytest.approx(results["test/acc"], abs=1e-12)
            assert metrics["prune/sparsity"] == pytest.approx(results["prune/sparsity"])
            # Every stage's per-epoch curve, the dense one too where the cache gave the model.
            for stage, epochs in (("dense", 2), ("retrain", 1)):
                history = _get(
                    base,
                    "/api/2.0/mlflow/metrics/get-history",
                    run_id=run["info"]["run_id"],
                    metric_key=f"{stage}/val/acc",
                )["metrics"]
                assert len(history) == epochs, (name, stage, history)
        assert sorted(
            json.loads((sweep / n / "results.json").read_text())["dense/cache"] for n in by_name
        ) == ["hit", "miss"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wandb_records(run_dir: Path) -> dict:
    """What W&B's own reader finds in a job's offline run files: the run record, the history
    rows, the summary and the config."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    store = DataStore()
    store.open_for_scan(str(path))
    out: dict = {"history": [], "summary": {}, "run": None}
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update(
                {_key(i): json.loads(i.value_json) for i in record.summary.update}
            )
        elif kind == "run":
            out["run"] = record.run
    out["config"] = {i.key: json.loads(i.value_json) for i in out["run"].config.update}
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_runs_offline_and_its_files_read_back(tmp_path):
    sweep = tmp_path / "sweep"
    env = {"WANDB_API_KEY": "", "WANDB_BASE_URL": "http://127.0.0.1:9"}  # no account, no network
    run_cli(
        "-m",
        *SWEEP,
        "prune.ratio=0.5",
        "logger=[tensorboard,csv,wandb]",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=env,
    )
    (job,) = [p.parent for p in sweep.glob("*/results.json")]
    results = json.loads((job / "results.json").read_text())
    found = _wandb_records(job)
    run = found["run"]
    assert run.display_name == job.name and run.run_group.endswith(sweep.name)
    assert "seed=1" in run.tags and f"dense_cache_key={results['dense/cache_key']}" in run.tags
    assert found["config"]["prune.ratio"] == 0.5 and found["config"]["seed"] == 1
    for stage, epochs in (("dense", 2), ("retrain", 1)):
        curve = [row[f"{stage}/val/acc"] for row in found["history"] if f"{stage}/val/acc" in row]
        assert len(curve) == epochs, stage
    assert found["summary"]["test/acc"] == pytest.approx(results["test/acc"], abs=1e-12)
    assert json.loads((job / "trackers.json").read_text())["wandb"]["id"] == run.run_id


def test_a_missing_or_silent_tracker_gets_one_warning_and_changes_nothing(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    run_cli(*SWEEP, "prune.ratio=0.5", f"hydra.run.dir={plain}", cwd=tmp_path)
    closed = _free_port()  # nothing listens there
    silent = tmp_path / "silent"
    proc = run_cli(
        *SWEEP,
        "prune.ratio=0.5",
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri=http://127.0.0.1:{closed}",
        f"hydra.run.dir={silent}",
        cwd=tmp_path,
    )
    warnings = [ln for ln in proc.stderr.splitlines() if "logger=mlflow" in ln]
    assert len(warnings) == 1, proc.stderr
    assert f"http://127.0.0.1:{closed} does not answer" in warnings[0]
    assert "logger.mlflow.tracking_uri=null" in warnings[0]
    assert _numbers(silent) == _numbers(plain)
    # A tracker package that is not installed: the same, for W&B.
    monkeypatch.setitem(sys.modules, "wandb", None)
    missing = tmp_path / "missing"
    proc = run_cli(
        *SWEEP, "prune.ratio=0.5", "logger=wandb", f"hydra.run.dir={missing}", cwd=tmp_path
    )
    warnings = [ln for ln in proc.stderr.splitlines() if "logger=wandb" in ln]
    assert len(warnings) == 1 and "pip install -e '.[trackers]'" in warnings[0], proc.stderr
    assert _numbers(missing) == _numbers(plain)


def test_a_resumed_job_continues_its_run_and_a_relaunch_marks_the_stale_one(tmp_path):
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = tmp_path / "run"
    job = (*SWEEP, "prune.ratio=0.5", "logger=[tensorboard,mlflow]", f"hydra.run.dir={run_dir}")
    killed = run_cli(*job, cwd=tmp_path, check=False, fault="retrain/epoch0/batch1=KILL")
    assert killed.returncode != 0
    first = json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"]
    run_cli(*job, cwd=tmp_path)
    assert json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"] == first
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == str(run_dir.resolve())]
    (run,) = client.search_runs([experiment.experiment_id])  # one run, continued
    assert run.info.run_id == first and run.info.status == "FINISHED"
    # The dense stage trained in the killed attempt and came from the cache in the resumed one:
    # its curve is in the run once.
    assert len(client.get_metric_history(first, "dense/val/acc")) == 2
    # The same folder relaunched with another setting: a new run, the old one marked stale.
    run_cli(*job, "trainer.max_epochs=1", cwd=tmp_path)
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert (
        len(runs) == 2
        and "trainer.max_epochs: 2 -> 1" in runs[first].data.tags["fer_lottery.stale"]
    )
    (new,) = [r for r in runs.values() if r.info.run_id != first]
    assert first in new.data.params["replaces_stale_run"] and new.info.status == "FINISHED"
