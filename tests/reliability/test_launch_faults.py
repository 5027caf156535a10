"""A launcher killed at every step of a launch, then at random moments, on the real one-node
Slurm (launchers/slurm-dev-cluster.sh): rerunning the launch loses no point and submits none
twice. The node is drained, so submitted tasks stay queued while they are counted.

Not covered here: a controller that loses jobs itself (slurmctld's own state), and NCCL/CUDA
(nothing here trains)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import env_for, queued, reliability_count, slurm_cli, slurm_sweep
from faults import counts, killed, run_launch

from scaling.dispatch import launch
from scaling.plan import plan
from scaling.store import connect
from scaling.store.models import Attempt, Submission

pytestmark = [pytest.mark.torch, pytest.mark.slurm]


def assert_each_point_queued_once(db: str, family: str, p_ids: set[str], what: str) -> int:
    """Each point: one live training attempt and one evaluation attempt after it, each queued
    as exactly one released, unheld Slurm task. Returns the attempts voided on the way."""
    engine = connect(db)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Attempt.point_id, Attempt.stage, Attempt.state, Attempt.submission, Attempt.array_index)
            .where(Attempt.point_id.in_(p_ids))
        ).all()  # fmt: skip
        subs = dict(conn.execute(sa.select(Submission.token, Submission.state)
                                 .where(Submission.family == family)).all())  # fmt: skip
    engine.dispose()
    live = [r for r in rows if r.state != "void"]
    for stage in ("train", "eval"):
        got = sorted(r.point_id for r in live if r.stage == stage)
        assert got == sorted(p_ids), f"{what}, {stage}: {rows}"
    where = {(r.submission, r.array_index): (r.point_id, r.stage) for r in live}
    by_point: dict[tuple[str, str], int] = {}
    for task_id, token, reason in queued(set(subs)):
        assert subs[token] == "released", f"{what}: queued task {task_id} of a {subs[token]} submission"
        assert reason != "JobHeldUser", f"{what}: {task_id} still held"
        key = where[(token, int(task_id.split("_")[1]) if "_" in task_id else 0)]
        by_point[key] = by_point.get(key, 0) + 1
    expected = {(pid, stage): 1 for pid in p_ids for stage in ("train", "eval")}
    assert by_point == expected, f"{what}: {by_point}"
    return sum(1 for r in rows if r.state == "void")


def cancel_ours(db: str) -> None:
    """Cancels this test's jobs only (another user of the dev cluster keeps theirs)."""
    engine = connect(db)
    with engine.connect() as conn:
        tokens = conn.execute(sa.select(Submission.token)).scalars().all()
    engine.dispose()
    if tokens:
        subprocess.run(["scancel", "--name", ",".join(tokens)], check=False)


def test_a_launcher_killed_at_every_step_loses_no_point_and_submits_none_twice(
    drained: None, world: Path, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    two = ["samples_seen=[256,384]"]  # one training array of two, then its evaluation array
    path = slurm_sweep(tmp_path, world, "steps")
    plan(str(path), two)  # MACs cached, as for a user who planned first
    status, steps = run_launch([f"sweep={path}", *two, "--db", db], None, tmp_path / "steps.log")
    assert status == 0 and len(steps) >= 12, (status, steps)  # intents, sbatch, pickles, ids, releases
    for k, step in enumerate(steps):
        family = f"step{k}"
        path = slurm_sweep(tmp_path, world, family)
        overrides = [*two, f"train.seed={k + 1}"]  # new point ids every round
        status, reached = run_launch([f"sweep={path}", *overrides, "--db", db], k, tmp_path / f"{family}.log")
        assert killed(status) and reached[-1] == step, f"step {k} ({step}) was not hit: {reached}"
        p = plan(str(path), overrides)
        engine = connect(db)
        launch(p, engine)  # the user's rerun
        engine.dispose()
        ids = {q.point.id for q in p.points}
        assert_each_point_queued_once(db, family, ids, f"killed {step} (step {k})")
    cancel_ours(db)
    reliability_count("launcher faults injected (every step)", len(steps))
    reliability_count("points lost or submitted twice after a fault", 0)  # reached only if none was
    print(f"steps of a launch: {counts(steps)}")


def test_launcher_killed_at_10_random_moments_submits_every_point_exactly_once(
    drained: None, world: Path, tmp_path: Path
) -> None:
    env = env_for(tmp_path)
    rng = random.Random(5)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    # How long an unkilled launch takes, so kills land all over it.
    six = "samples_seen=[256,320,384,448,512,576]"  # 3 arrays of 2 (MaxArraySize)
    path = slurm_sweep(tmp_path, world, "probe")
    assert slurm_cli("plan", f"sweep={path}", six, env=env).returncode == 0  # MACs cached, as for a user
    started = time.monotonic()
    assert slurm_cli("launch", f"sweep={path}", six, "--db", db, env=env).returncode == 0
    span = time.monotonic() - started
    voided = []
    for i in range(10):
        path = slurm_sweep(tmp_path, world, f"kill{i}")
        overrides = [six, f"train.seed={i + 1}"]  # new point ids every round (the probe has seed 0)
        args = [sys.executable, "-m", "scaling.cli", "launch", f"sweep={path}", *overrides, "--db", db]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        # Most of a launch is start-up and validation; the kills favour its submitting end.
        delay = rng.uniform(0.5 * span, 1.05 * span)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        again = slurm_cli("launch", f"sweep={path}", *overrides, "--db", db, env=env)
        assert again.returncode == 0, again.stderr
        ids = {q.point.id for q in plan(str(path), overrides).points}
        voided.append(assert_each_point_queued_once(db, f"kill{i}", ids, f"kill {i} after {delay:.2f} s"))
    cancel_ours(db)
    reliability_count("launcher kills at random moments", 10)
    print(f"launch takes {span:.2f} s; voided attempts after each kill: {voided}")
