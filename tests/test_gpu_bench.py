"""bench/gpu_train.py on the CPU: a toy point trained through clipscale's job path and through
plain open_clip_train with the same arguments, both on open_clip's synthetic data. Speed
targets live in the bench's figures, never here: these tests check what it measured and how."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "gpu_train.py"
Ran = tuple[dict[str, Any], Path]  # the figures and the kept work directory

pytestmark = pytest.mark.torch


def load_bench() -> ModuleType:
    # As `python bench/gpu_train.py` runs it: bench/ on the path (its figures module).
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("gpu_train", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    tmp = tmp_path_factory.mktemp("gpu-bench")
    out, work = tmp / "figures.json", tmp / "work"
    args = ["--device", "cpu", "--models", "toy-xs:64", "--steps", "16", "--repeats", "1",
            "--skip-logs", "2", "--output", str(out), "--workdir", str(work)]  # fmt: skip
    done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text()), work


def test_both_paths_trained_and_were_measured(ran: Ran) -> None:
    figures, _ = ran
    assert figures["device"] == "cpu" and figures["device_kind"] == "cpu"
    assert set(figures["versions"]) >= {"torch", "open_clip_torch"}
    toy = figures["models"]["toy-xs"]
    assert toy["per_gpu_batch"] == 64 and toy["precision"] == "fp32" and toy["steps"] == 16
    a, b = toy["clipscale"]["samples_per_s"], toy["plain"]["samples_per_s"]
    assert a > 0 and b > 0
    assert toy["ratio"] == round(a / b, 4)
    # Warm-up windows are left out: 16 steps logged one by one, the first two skipped.
    assert toy["clipscale"]["steps_timed"] == toy["plain"]["steps_timed"] == 14


def test_mfu_is_null_on_cpu_and_gmacs_are_the_planners(ran: Ran) -> None:
    from scaling.compute import macs_for, macs_key
    from scaling.config import load_sweep

    figures, work = ran
    toy = figures["models"]["toy-xs"]
    assert figures["peak_tflops"] is None and toy["clipscale"]["mfu"] is toy["plain"]["mfu"] is None
    model = load_sweep(str(work / "toy-xs.yaml"), []).models["toy-xs"]
    counted = macs_for([(model, None, None, None)])[macs_key(model, None, None, None)]
    assert toy["gmacs_per_sample"] == counted.total > 0


def test_the_clipscale_path_went_through_the_job_and_the_plain_one_did_not(ran: Ran) -> None:
    figures, work = ran
    toy = figures["models"]["toy-xs"]
    repeat = work / "toy-xs" / "repeat0"
    job, plain = repeat / "clipscale" / toy["point_id"], repeat / "plain" / toy["point_id"]
    assert (job / "trained.json").is_file() and (job / "point.json").is_file()
    assert json.loads((job / "ranks" / "0.json").read_text())["state"] == "done"
    assert toy["job_path"]["rank0_state"] == "done" and toy["job_path"]["samples_seen"] == toy["samples_seen"]
    assert not (plain / "trained.json").exists() and not (plain / "ranks").exists()
    for run in (job, plain):
        assert "dataset_type: synthetic" in (run / "params.txt").read_text()
        assert not (run / "checkpoints").exists()  # removed once measured


def test_the_trainer_got_the_same_arguments_on_both_paths(ran: Ran) -> None:
    figures, _ = ran
    differ = set(figures["models"]["toy-xs"]["trainer_args_differ"])
    assert "logs" in differ and differ <= load_bench().PATH_KEYS


LOG = """\
2026-01-01,00:00:00 | INFO | Train Epoch: 0 [ 10/100 (10%)] Data (t): 0.500 Batch (t): 2.000, 5.0/s, 5.0/s/gpu LR: 0.1 Loss: 1.0 (1.0)
2026-01-01,00:00:01 | INFO | Train Epoch: 0 [ 30/100 (30%)] Data (t): 0.010 Batch (t): 0.100, 100.0/s, 100.0/s/gpu LR: 0.1 Loss: 1.0 (1.0)
2026-01-01,00:00:02 | INFO | Train Epoch: 0 [100/100 (100%)] Data (t): 0.020 Batch (t): 0.200, 50.0/s, 50.0/s/gpu LR: 0.1 Loss: 1.0 (1.0)
"""  # noqa: E501


def test_throughput_is_samples_over_step_time_after_the_warm_up() -> None:
    bench = load_bench()
    # 10 samples a step: after the first window, 2 steps of 0.1 s and 7 of 0.2 s.
    got = bench.steady_throughput(LOG, per_step=10, skip=1)
    assert got["samples_per_s"] == pytest.approx(90 / 1.6, abs=0.01)
    assert got["steps_timed"] == 9 and got["data_wait_fraction"] == pytest.approx(0.16 / 1.6, abs=1e-4)
    with pytest.raises(SystemExit):
        bench.steady_throughput(LOG, per_step=10, skip=3)
