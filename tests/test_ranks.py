"""Several ranks per point on this machine: one process per rank over gloo (torch's CPU
backend), as on a GPU node they are one per GPU over NCCL. What these tests cannot cover:
NCCL and CUDA (the GPU benchmark, bench/gpu_train.py, runs the same job path on GPUs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import assert_failed_at_the_next_collective, dispatch_sweep, wait_done

from scaling.dispatch import launch
from scaling.outcome import Outcome, read_outcome, write_outcome
from scaling.plan import Plan, plan
from scaling.store import connect, runs
from scaling.store.models import Attempt
from scaling.train import run_dir

pytestmark = pytest.mark.torch


def two_ranks(tmp: Path, world: Path, name: str, samples: str, *extra: str) -> Plan:
    return plan(str(dispatch_sweep(tmp, world, name, samples=samples)), ["train.gpus=2", *extra])


def test_a_two_rank_point_trains_as_two_processes_and_is_evaluated_apart(world: Path, tmp_path: Path) -> None:
    p = two_ranks(tmp_path, world, "ranks", "256")
    point = p.points[0].point
    assert point.train.global_batch_size == 64  # 2 ranks x 32
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    launch(p, engine)
    summary = wait_done(p, engine)
    assert summary.counts == {"succeeded": 1}, summary
    directory = run_dir(p.sweep.runs_root, point)
    outcome = read_outcome(directory)
    assert outcome is not None and outcome.ranks == 2 and outcome.samples_seen == point.samples_seen == 256
    assert "world_size: 2" in (directory / "params.txt").read_text()
    records = [json.loads((directory / "ranks" / f"{r}.json").read_text()) for r in (0, 1)]
    assert [r["state"] for r in records] == ["done", "done"] and records[0]["attempt"] == records[1][
        "attempt"
    ]
    assert records[0]["pid"] != records[1]["pid"]
    assert (directory / "console.rank1.log").is_file()  # each rank's log is kept
    assert sorted(f.name for f in (directory / "checkpoints").iterdir()) == ["epoch_latest.pt"]
    with engine.connect() as conn:
        stages = conn.execute(sa.select(Attempt.stage, Attempt.state).order_by(Attempt.id)).all()
    assert [tuple(s) for s in stages] == [("train", "trained"), ("eval", "succeeded")]


def test_a_killed_rank_fails_the_point_at_once_with_its_cause(world: Path, tmp_path: Path) -> None:
    # Long enough to be killed mid-training: 160k samples take minutes on two cores.
    p = two_ranks(tmp_path, world, "kill", "163840", "train.epochs=8", "+train.dist_timeout_min=2")
    point = p.points[0].point
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    launch(p, engine)
    directory = run_dir(p.sweep.runs_root, point)
    record = directory / "ranks" / "1.json"
    deadline = time.monotonic() + 120
    while not (record.exists() and "Train Epoch: 0" in _read(directory / "out.log")):
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    os.kill(json.loads(record.read_text())["pid"], signal.SIGKILL)  # as the OOM killer would
    wait_done(p, engine)
    outcome = read_outcome(directory)
    assert outcome is not None and outcome.status == "failed" and outcome.failed_rank == 1
    assert (outcome.error or "").startswith("rank 1: died without recording an error (pid"), outcome.error
    assert_failed_at_the_next_collective(directory, outcome.samples_seen, point.samples_seen)
    frame = runs(str(engine.url), "sweep=kill")
    assert "rank 1" in frame["error"][0] and frame["status"][0] == "failed"
    with engine.connect() as conn:
        reason = conn.execute(sa.select(Attempt.exit_reason).where(Attempt.stage == "train")).scalar_one()
    assert "rank 1: killed by signal 9 (SIGKILL)" in reason  # the runner's account, beside rank 0's


def test_a_two_rank_run_that_diverges_ends_diverged_though_its_other_rank_fails(
    world: Path, tmp_path: Path
) -> None:
    # Rank 0 stops at the NaN loss and leaves the process group; rank 1 then fails on its
    # next collective. The point is diverged (final), not failed, and nothing is evaluated.
    p = two_ranks(tmp_path, world, "nan", "2048", "train.lr=1e30", "train.epochs=4")
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    launch(p, engine)
    summary = wait_done(p, engine)
    assert summary.counts == {"diverged": 1}, summary
    with engine.connect() as conn:
        stages = conn.execute(sa.select(Attempt.stage, Attempt.state).order_by(Attempt.id)).all()
    assert [tuple(s) for s in stages] == [("train", "diverged"), ("eval", "void")]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_a_retry_killed_before_its_outcome_does_not_inherit_the_last_error(
    world: Path, tmp_path: Path
) -> None:
    path = dispatch_sweep(tmp_path, world, "stale", samples="163840")
    p = plan(str(path), ["train.epochs=8"])
    point = p.points[0].point
    directory = run_dir(p.sweep.runs_root, point)
    directory.mkdir(parents=True)
    old = Outcome(id=point.id, status="failed", samples_seen=None, samples_seen_planned=point.samples_seen,
                  epochs=8, wall_time_s=1.0, train_time_s=None, samples_per_s=None, error="the old error",
                  finished_at="2026-01-01T00:00:00+00:00")  # fmt: skip
    write_outcome(directory, old)
    env = {**os.environ, "CLIPSCALE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "scaling.cli", "run", f"sweep={path}", "train.epochs=8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while "Train Epoch: 0" not in _read(directory / "out.log"):
        assert time.monotonic() < deadline and proc.poll() is None, "the retry never trained"
        time.sleep(0.5)
    proc.kill()  # hard: no outcome of its own
    proc.wait()
    assert read_outcome(directory) is None  # not the last attempt's error
    aside = list((directory / "history").glob("outcome-*.json"))
    assert len(aside) == 1 and json.loads(aside[0].read_text())["error"] == "the old error"


_THREADS = """
import os, sys
os.environ.update({k: v for k, v in (a.split("=") for a in sys.argv[2:])})
from scaling import distributed
n = distributed.set_threads(int(sys.argv[1]))
import torch
print(n, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"])
"""


@pytest.mark.parametrize(
    ("workers", "env", "threads"),
    # The local runner's share wins inside a Slurm allocation (points side by side in it).
    [(1, ["SLURM_CPUS_PER_TASK=4"], 3), (2, ["SLURM_CPUS_PER_TASK=8", "CLIPSCALE_CPUS=4"], 2),
     (2, ["CLIPSCALE_CPUS=1"], 1), (0, ["CLIPSCALE_CPUS=2"], 2)],
)  # fmt: skip
def test_a_rank_takes_the_threads_its_cpus_allow_less_its_data_workers(
    workers: int, env: list[str], threads: int
) -> None:
    # A Slurm task's CPUs (or the local runner's share) bound torch's threads, each data
    # worker taking one: a rank never starts a thread per core of the whole node.
    clean = {k: v for k, v in os.environ.items() if k not in ("SLURM_CPUS_PER_TASK", "CLIPSCALE_CPUS")}
    out = subprocess.run([sys.executable, "-c", _THREADS, str(workers), *env], capture_output=True, text=True,
                         env=clean, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(threads)] * 3


def test_points_side_by_side_get_gpus_of_their_own(tmp_path: Path) -> None:
    # No GPU here: the slots are lock files over GPU indices, and that is what is checked.
    from scaling.dispatch import local

    with (
        local._slot(tmp_path, 2, [0, 1, 2, 3], 2) as first,
        local._slot(tmp_path, 2, [0, 1, 2, 3], 2) as second,
    ):
        assert len(first) == len(second) == 2 and not set(first) & set(second)
    with local._slot(tmp_path, 1, [], 2) as none:  # a CPU-only machine: ranks share the cores
        assert none == []


def test_a_local_point_wanting_more_gpus_than_the_machine_has_is_refused(world: Path, tmp_path: Path) -> None:
    from scaling.dispatch.backends import LocalBackend
    from scaling.errors import ClipscaleError

    p = two_ranks(tmp_path, world, "toomany", "256", "+cluster.gpus=[0]")
    with pytest.raises(ClipscaleError, match=r"trains on 2 GPUs but this machine has 1"):
        LocalBackend(p).validate(p.points)
