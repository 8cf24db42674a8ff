"""One job, one device (#16 point 1): more would start DDP, whose second rank reruns the whole job
and waits forever on the dense-cache lock that the first holds."""

from __future__ import annotations

import pytest

from fer_lottery.config import validate
from fer_lottery.config.checks import device_count
from fer_lottery.core.errors import ConfigError
from tests.helpers import TINY_SYNTHETIC, run_cli


@pytest.mark.parametrize(
    ("devices", "count"),
    [
        (1, 1),
        ("1", 1),
        ([0], 1),
        ("0,", 1),
        ("0,1", 2),
        (2, 2),
        ([0, 1], 2),
        ("auto", None),
        (-1, None),
        ("-1", None),
    ],
)
def test_device_count(devices, count):
    assert device_count(devices) == count


def test_one_device_is_the_default_and_more_are_refused(compose_cfg):
    validate(compose_cfg(*TINY_SYNTHETIC))
    for devices in ("2", "auto", "-1", "[0,1]"):
        with pytest.raises(ConfigError, match=r"trainer\.devices=.* several devices \(DDP\)"):
            validate(compose_cfg(*TINY_SYNTHETIC, f"trainer.devices={devices}"))
    with pytest.raises(ConfigError, match="num_nodes=2"):
        validate(compose_cfg(*TINY_SYNTHETIC, "+trainer.extra.num_nodes=2"))


def test_two_cpu_devices_end_in_one_line_instead_of_hanging(tmp_path):
    """The reproduction of the hang: two CPU ranks. It must end, before any work."""
    proc = run_cli(
        *TINY_SYNTHETIC,
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "trainer.devices=2" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "split.json").exists()  # refused before any data was loaded


def test_results_record_the_device_used(run_job):
    results, _ = run_job("job")
    assert results["device/accelerator"] == "cpu"
    assert results["device/precision"] == "32-true"
    assert results["device/cuda_capability"] is None
    assert isinstance(results["device/name"], str) and results["device/name"]


def _fake_gpu(monkeypatch, capability, arch_list):
    import torch

    from fer_lottery.core import devices as device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arch_list)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Tesla P100-PCIE-16GB")
    device.cuda_problem.cache_clear()
    device._warn_fallback.cache_clear()
    return device


def test_a_gpu_this_torch_cannot_run_falls_back_to_the_cpu_with_one_warning(
    compose_cfg, monkeypatch, caplog
):
    """A P100 (sm_60) under a wheel built for sm_75 and up: auto trains on the CPU, and says so."""
    device = _fake_gpu(monkeypatch, (6, 0), ["sm_75", "sm_80", "sm_90"])
    cfg = compose_cfg(*TINY_SYNTHETIC)
    assert device.resolved_device(cfg) == "cpu" == device.lightning_accelerator(cfg)
    assert device.resolved_device(cfg) == "cpu"
    warnings = [r for r in caplog.records if "training on the CPU in fp32" in r.message]
    assert len(warnings) == 1 and "sm_60" in warnings[0].message
    assert device.device_facts(cfg, "32-true")["device/accelerator"] == "cpu"
    # An H100 (sm_90) under the same wheel trains on the GPU.
    device = _fake_gpu(monkeypatch, (9, 0), ["sm_75", "sm_80", "sm_90"])
    assert device.resolved_device(cfg) == "cuda" and device.lightning_accelerator(cfg) == "gpu"
    facts = device.device_facts(cfg, "bf16-mixed")
    assert facts["device/cuda_capability"] == "9.0" and facts["device/precision"] == "bf16-mixed"
    device.cuda_problem.cache_clear()


def test_the_report_never_pools_cpu_and_gpu_jobs(tmp_path):
    import json
    from pathlib import Path

    from fer_lottery.report.collect import collect
    from fer_lottery.report.conditions import condition_keys, rows_of

    base = json.loads((Path(__file__).parents[1] / "fixtures/results/magnitude.json").read_text())
    for kind in ("cpu", "cuda"):
        job = tmp_path / kind
        job.mkdir()
        (job / "results.json").write_text(json.dumps({**base, "device/accelerator": kind}))
    jobs, _ = collect([tmp_path])
    keys = condition_keys(jobs)
    assert keys == ["device.accelerator"]
    assert sorted(r.values["device.accelerator"] for r in rows_of(jobs, keys)) == ["cpu", "cuda"]


def test_evaluate_runs_in_the_stage_precision_and_puts_the_model_back(compose_cfg):
    """bf16-mixed on the CPU here (on a GPU the same code also moves the model there): the
    forward pass runs under autocast, as the stage's own test does, and in fp32 with 32-true."""
    import torch

    from fer_lottery.data.datamodule import FaceDataModule
    from fer_lottery.models import build_model
    from fer_lottery.training.stage import evaluate

    seen = []
    for precision in ("bf16-mixed", "32-true"):
        cfg = compose_cfg(*TINY_SYNTHETIC, f"trainer.precision={precision}")
        dm = FaceDataModule(cfg.data, None, seed=0)
        dm.setup()
        model = build_model("resnet18", None, 7).train()
        hook = model.fc.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        acc = evaluate(model, dm, "val", cfg)
        hook.remove()
        assert 0.0 <= acc <= 1.0
        assert model.training and next(model.parameters()).device.type == "cpu"
    assert seen[0] == torch.bfloat16 and seen[-1] == torch.float32


@pytest.mark.parametrize(
    ("job_num", "visible", "gpu"),
    [(None, 4, 0), (0, 1, 0), (5, 1, 0), (0, 4, 0), (1, 4, 1), (6, 4, 2), (7, 2, 1)],
)
def test_sweep_jobs_spread_over_the_visible_gpus_by_index(job_num, visible, gpu):
    from fer_lottery.core.devices import gpu_for_job

    assert gpu_for_job(job_num, visible) == gpu


def test_a_sweep_job_gets_its_own_gpu_and_touches_no_gpu_before_it_computes(
    compose_cfg, monkeypatch
):
    """Four GPUs faked on the CPU: job 6 trains on GPU 2 (Lightning's devices=[2]); computing
    there makes GPU 2 current and resets its peak memory, once per job, and not before."""
    import torch

    from fer_lottery.training.stage import trainer_kwargs

    device = _fake_gpu(monkeypatch, (9, 0), ["sm_90"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set", d)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(("reset", d)))
    monkeypatch.setenv(device.JOB_ENV, "6")
    cfg = compose_cfg(*TINY_SYNTHETIC)
    device.new_job()
    kwargs = trainer_kwargs(cfg)
    assert kwargs["devices"] == [2] and kwargs["accelerator"] == "gpu"
    assert calls == [] and not device.used_gpu()  # the kwargs (and the cache key) touch nothing
    assert device.compute_device(cfg) == torch.device("cuda", 2)
    assert device.compute_device(cfg) == torch.device("cuda", 2)
    gpu2 = torch.device("cuda", 2)
    assert calls == [("set", gpu2), ("reset", gpu2)] and device.used_gpu()
    monkeypatch.setenv(device.JOB_ENV, "")  # a single run: GPU 0
    assert device.assigned_gpu() == 0
    device.new_job()
    device.cuda_problem.cache_clear()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine with no GPU")
def test_a_gpu_job_with_no_usable_gpu_fails_in_one_line_before_any_work(tmp_path):
    """What the SLURM preset exports (FER_LOTTERY_ACCELERATOR=gpu), on a node without a GPU."""
    proc = run_cli(
        *TINY_SYNTHETIC,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"FER_LOTTERY_ACCELERATOR": "gpu"},
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "trainer.accelerator=gpu" in lines[0] and "torch sees no CUDA device" in lines[0]
    assert not (tmp_path / "run" / "split.json").exists()


def _hydra_with_launcher(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from fer_lottery.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize(
    ("launcher", "packed"),
    [
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=4"), 4),
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=1"), 1),
        (("hydra/launcher=joblib_gpu",), 4),  # the preset for one GPU
        (("hydra/launcher=submitit_local",), 1),
        ((), 1),
    ],
)
def test_packed_gpu_jobs_share_the_cpus_and_cpu_jobs_keep_every_cpu(
    compose_cfg, monkeypatch, launcher, packed
):
    """threads=null: a GPU job packed K at once by joblib takes CPUs // K threads; a CPU job,
    whose numbers depend on the thread count, takes every CPU under every launcher."""
    from hydra.core.hydra_config import HydraConfig

    from fer_lottery.core.seeding import available_cpus
    from fer_lottery.training import packing

    device = _fake_gpu(monkeypatch, (9, 0), ["sm_90"])
    _hydra_with_launcher(*launcher)
    try:
        assert packing.packed_jobs() == packed
        gpu_job = compose_cfg(*TINY_SYNTHETIC)
        expected = max(available_cpus() // packed, 1) if packed > 1 else None
        assert packing.job_threads(gpu_job) == expected
        cpu_job = compose_cfg(*TINY_SYNTHETIC, "trainer.accelerator=cpu")
        assert packing.job_threads(cpu_job) is None
        assert packing.job_threads(compose_cfg(*TINY_SYNTHETIC, "threads=3")) == 3
    finally:
        HydraConfig.instance().cfg = None
        device.cuda_problem.cache_clear()
