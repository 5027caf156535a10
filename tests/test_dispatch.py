"""Dispatch on this machine: launch returns at once, status follows and ingests, reruns
submit only what is missing, a killed launch is settled, cancel stops points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import dispatch_sweep, wait_done

from scaling.dispatch import LaunchOptions, cancel, launch, reconcile, recover
from scaling.dispatch import local as local_backend
from scaling.errors import ClipscaleError
from scaling.plan import Plan, plan
from scaling.store import connect, runs
from scaling.store.models import Attempt, Submission
from scaling.sync import sync_sweep

pytestmark = pytest.mark.torch


def make_plan(tmp: Path, world: Path, name: str = "disp", overrides: list[str] | None = None) -> Plan:
    return plan(str(dispatch_sweep(tmp, world, name)), overrides or [])


def attempts(engine: sa.Engine, stage: str = "train") -> list[tuple[str, str, str]]:
    """(point, state, key) of every attempt at ``stage`` (training, or evaluation)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Attempt.point_id, Attempt.state, Attempt.key)
            .where(Attempt.stage == stage)
            .order_by(Attempt.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_launch_returns_at_once_then_status_ingests_and_rerun_submits_nothing(
    world: Path, tmp_path: Path
) -> None:
    p = make_plan(tmp_path, world)
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    report = launch(p, engine)
    assert report.submitted == 2 and len(report.batches) == 1
    # Launching returned while the points are still to train (a run takes seconds).
    first = reconcile(p, engine)
    assert first.active == 2, first.counts
    summary = wait_done(p, engine)
    assert summary.counts == {"succeeded": 2}, summary
    frame = runs(str(engine.url), "sweep=disp")
    assert sorted(frame["status"]) == ["succeeded", "succeeded"]
    assert frame["toy_shapes/acc1"].notna().all()
    # Per point one training attempt and one evaluation attempt (its own job, after the
    # training), filled from the run (no extra rows from ingesting it).
    assert [s for _, s, _ in attempts(engine)] == ["trained", "trained"]
    assert [s for _, s, _ in attempts(engine, "eval")] == ["succeeded", "succeeded"]
    again = launch(p, engine)
    assert again.submitted == 0 and again.skipped == {"finished": 2}
    # `scaling ingest` of the same outcomes fills the launched attempts, adds none.
    sync_sweep(p, engine)
    assert [s for _, s, _ in attempts(engine, "eval")] == ["succeeded", "succeeded"]
    assert len(attempts(engine)) == 2


def test_failed_point_needs_retry_failed_and_respects_max_attempts(world: Path, tmp_path: Path) -> None:
    # An extra trainer argument it rejects makes every attempt fail fast.
    p = make_plan(
        tmp_path, world, "bad", overrides=["samples_seen=[256]", "+train.extra_args=[--no-such-flag]"]
    )
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    launch(p, engine)
    summary = wait_done(p, engine)
    assert summary.counts == {"failed": 1}
    assert "open_clip_train exited" in summary.failures[0][1]
    assert launch(p, engine).skipped == {"failed (resubmit with --retry-failed)": 1}
    assert launch(p, engine, LaunchOptions(retry_failed=True, max_attempts=2)).submitted == 1
    wait_done(p, engine)
    last = launch(p, engine, LaunchOptions(retry_failed=True, max_attempts=2))
    assert last.submitted == 0 and last.skipped == {"had 2 attempts (--max-attempts)": 1}
    assert [s for _, s, _ in attempts(engine)] == ["failed", "failed"]
    # Each training's evaluation was cancelled unrun (its training failed): not an attempt.
    assert [s for _, s, _ in attempts(engine, "eval")] == ["void", "void"]


def test_cancel_stops_queued_and_running_points(world: Path, tmp_path: Path) -> None:
    p = make_plan(tmp_path, world, "stop", overrides=["samples_seen=[4096, 8192]"])
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    launch(p, engine)
    assert cancel(p, engine) == 2
    summary = wait_done(p, engine, 60)
    assert summary.counts == {"cancelled": 2}
    # Cancelled points are submitted again by the next launch.
    assert launch(p, engine, LaunchOptions(dry_run=True)).submitted == 2


def test_intent_of_a_killed_launcher_is_voided_and_the_point_resubmitted(world: Path, tmp_path: Path) -> None:
    p = make_plan(tmp_path, world, "kill", overrides=["samples_seen=[256]"])
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    point = p.points[0].point.id
    # A launcher that recorded its intent and died before starting a runner.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    from scaling.dispatch.backends import jobs_root
    from scaling.store.attempts import NewSubmission, add_submissions, locked

    reconcile(p, engine)  # records the sweep's points
    folder = jobs_root(p) / "clipscale-kill-dead"
    batch = NewSubmission("clipscale-kill-dead", "local", (point,), str(folder), {"parallelism": 1})
    owner = f"{os.uname().nodename} {dead.stdout.strip()} 1"
    locked(engine, "kill", lambda conn: add_submissions(conn, "kill", [batch], owner))
    assert launch(p, engine, LaunchOptions(dry_run=True)).skipped == {"pending or running": 1}
    assert recover(p, engine) == (0, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.select(Submission.state)).scalar() == "void"
    report = launch(p, engine)
    assert report.submitted == 1
    wait_done(p, engine)
    assert [s for _, s, _ in attempts(engine)] == ["void", "trained"]
    assert [s for _, s, _ in attempts(engine, "eval")] == ["succeeded"]


def test_local_claim_lets_exactly_one_of_runner_and_recovery_win(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    assert local_backend.settle(folder) is None  # recovery came first: void
    assert local_backend._claim(folder) is False  # so a late runner stands down
    other = tmp_path / "other"
    other.mkdir()
    assert local_backend._claim(other) is True
    assert local_backend.settle(other) == f"local:{os.getpid()}"
    assert local_backend.settle(tmp_path / "never-made") is None


_SIGNALS = """
import os, signal, sys, time
from scaling.dispatch import job

marker = sys.argv[1]
def requeue(signum, frame):  # stands in for submitit's checkpoint-and-requeue handler
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\\n")
signal.signal(signal.SIGUSR2, requeue)
job._signals_for_this_process_only()
child = os.fork()  # as the trainer's DataLoader workers are forked
if child == 0:
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(0.2)
    os._exit(0)
os.waitpid(child, 0)
os.kill(os.getpid(), signal.SIGUSR2)
time.sleep(0.2)
job._ignore_requeue_signal()  # the outcome is written: a late warning changes nothing
os.kill(os.getpid(), signal.SIGUSR2)
time.sleep(0.2)
print("exited normally")
"""


def test_only_the_job_process_acts_on_the_requeue_signal(tmp_path: Path) -> None:
    # Slurm signals every process of the step; forked DataLoader workers used to checkpoint
    # and requeue too, and the job failed on the second write of its pickle.
    marker = tmp_path / "handled"
    out = subprocess.run([sys.executable, "-c", _SIGNALS, str(marker)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "exited normally", out.stderr
    pids = marker.read_text().split()
    assert len(pids) == 1, pids  # the parent's, once: neither the fork nor the late signal


def test_launch_validates_the_whole_plan_first(world: Path, tmp_path: Path) -> None:
    p = make_plan(tmp_path, world, "val", overrides=["data=[toy-1k,toy-4k]"])
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(ClipscaleError, match=r"shard .*toy-4k.* not found"):
        launch(p, engine)
    assert attempts(engine) == []
    bad = make_plan(tmp_path, world, "par", overrides=["cluster.parallelism=0"])
    with pytest.raises(ClipscaleError, match=r"cluster\.parallelism must be"):
        launch(bad, engine)


def test_scaling_launch_and_status_cli(world: Path, tmp_path: Path) -> None:
    path = dispatch_sweep(tmp_path, world, "cli")
    env = {
        **os.environ,
        "CLIPSCALE_CACHE_DIR": str(tmp_path / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/ml.db",
    }
    db = f"sqlite:///{tmp_path / 'r.db'}"
    base = [sys.executable, "-m", "scaling.cli"]
    out = subprocess.run(
        [*base, "launch", f"sweep={path}", "--db", db], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "submitted 2 points in 1 local batches" in out.stdout and "scaling status" in out.stdout
    out = subprocess.run([*base, "status", f"sweep={path}", "--db", db, "--watch", "--every", "1"],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    status_lines = [line for line in out.stdout.splitlines() if line.startswith("sweep cli [")]
    assert "2/2 done: 2 succeeded" in status_lines[-1]
    # Each landing refits the sweep's law; with both points in, the law is fitted and recorded.
    assert "law cli [toy] toy_shapes/acc1: E = " in out.stdout
    fits = subprocess.run([*base, "fit", "sweep=cli", "--db", db, "--history", "--format", "json"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    history = json.loads(fits.stdout)
    assert history[-1]["n_runs"] == 2 and history[-1]["trigger"] == "ingest"
    csv = subprocess.run(
        [*base, "runs", "sweep=cli", "--db", db, "--format", "csv"], capture_output=True, text=True
    )
    assert (
        csv.returncode == 0 and len(csv.stdout.strip().splitlines()) == 3 and "toy_shapes/acc1" in csv.stdout
    )
    launch_on_slurm = [*base, "launch", f"sweep={path}", "--db", db, "cluster=slurm"]
    bad = subprocess.run(launch_on_slurm, capture_output=True, text=True, env={**env, "PATH": "/nonexistent"})
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "sinfo" in bad.stderr


def test_sacct_lines_expand_pending_ranges_and_map_states() -> None:
    from scaling.dispatch.slurm import _tasks, parse_sacct

    text = (
        "12_[2-4,7%2]|PENDING|None assigned|Unknown|Unknown|Priority|0:0\n"
        "12_0|COMPLETED|node1|2026-01-01T00:00:00|2026-01-01T00:10:00|None|0:0\n"
        "12_1|OUT_OF_MEMORY|node1|2026-01-01T00:00:00|2026-01-01T00:01:00|None|0:125\n"
        "13_0|CANCELLED by 0|node2|2026-01-01T00:00:00|2026-01-01T00:02:00|None|0:15\n"
    )
    states = parse_sacct(text)
    assert sorted(states) == ["12_0", "12_1", "12_2", "12_3", "12_4", "12_7", "13_0"]
    assert (
        states["12_3"].state == "pending"
        and states["12_3"].node is None
        and states["12_3"].reason == "Priority"
    )
    assert states["12_0"].state == "completed" and states["12_0"].node == "node1"
    assert (
        states["12_1"].state == "out_of_memory" and states["12_1"].reason == "OUT_OF_MEMORY, exit code 0:125"
    )
    assert states["13_0"].state == "cancelled"
    assert _tasks("5_3") == ["5_3"] and _tasks("7") == ["7"]
    # The never-started rest of an array, listed after a task that has run since: the task's
    # own line wins (the rest was cancelled when another task's failure broke a dependency).
    rest = parse_sacct(
        "9_0|COMPLETED|node1|2026-01-01T00:00:00|2026-01-01T00:01:00|Dependency|0:0\n"
        "9_[0-1%2]|CANCELLED|None assigned|None|2026-01-01T00:00:30|None|0:0\n"
    )
    assert (
        rest["9_0"].state == "completed"
        and rest["9_1"].state == "cancelled"
        and rest["9_1"].started_at is None
    )


@pytest.mark.parametrize(
    ("limit", "minutes"),
    [("infinite", None), ("UNLIMITED", None), ("45", 45), ("30:00", 30), ("5:30", 6), ("2:00:30", 121),
     ("2-12", 2 * 1440 + 12 * 60), ("2-12:30", 2 * 1440 + 12 * 60 + 30), ("1-00:00:00", 1440),
     ("1-02:03:04", 1440 + 123 + 1)],
)  # fmt: skip
def test_every_slurm_time_format(limit: str, minutes: int | None) -> None:
    from scaling.dispatch.slurm import _minutes

    assert _minutes(limit) == minutes


def test_sacct_times_are_stored_in_utc_whatever_the_local_time_zone(tmp_path: Path) -> None:
    # sacct prints naive times in its own time zone. A stand-in sacct (the only part faked:
    # no cluster needed) prints one instant in the zone it is given.
    from datetime import datetime

    from scaling.dispatch.slurm import task_states

    fake = tmp_path / "sacct"
    fake.write_text(
        '#!/bin/sh\nt=$(date -d @1767225600 +%Y-%m-%dT%H:%M:%S)\necho "12_0|COMPLETED|node1|$t|$t|None|0:0"\n'
    )
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "TZ": "Asia/Kolkata"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        state = task_states(["12"])["12_0"]
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert state.started_at == datetime(2026, 1, 1, 0, 0, 0)  # 1767225600 is 2026-01-01 00:00 UTC


def test_per_task_dependencies_in_slurms_forms() -> None:
    from scaling.dispatch.backends import Dep, _dependency

    assert _dependency([[], []]) is None
    # An evaluation array after its training array: task i after task i.
    assert _dependency([[Dep("f", "41", 0, "41_0")], [Dep("f", "41", 1, "41_1")]]) == "aftercorr:41"
    # A second stage (one job) after its first stage's evaluation task, or after a single job.
    assert _dependency([[Dep("f", "42", 3, "42_3")]]) == "afterok:42_3"
    assert _dependency([[Dep("f", "43", 0, "43")]]) == "afterok:43"
    with pytest.raises(ValueError):
        _dependency([[Dep("f", "41", 1, "41_1")], [Dep("f", "41", 0, "41_0")]])


def test_a_training_seen_ending_after_its_evaluation_is_still_trained(tmp_path: Path) -> None:
    # The controller may first see a training's end after its (fast) evaluation wrote the
    # outcome: the training attempt is "trained", the evaluation's "succeeded".
    from datetime import datetime

    from scaling.dispatch.follow import Followed
    from scaling.dispatch.slurm import TaskState
    from scaling.dispatch.status import _ending
    from scaling.outcome import Outcome, Trained, write_outcome, write_trained
    from scaling.store.attempts import AttemptInfo

    directory = tmp_path / "p"
    directory.mkdir()
    write_trained(directory, Trained("p", 512, 2, "checkpoints/epoch_latest.pt", 1.0, 512.0, None, 1))
    write_outcome(directory, Outcome("p", "succeeded", 512, 512, 2, 1.0, 1.0, 512.0))
    point = Followed("p", directory, 1.0, 1, None, 0.0)
    done = TaskState("completed", "node", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 1), None)

    def attempt(stage: str) -> AttemptInfo:
        return AttemptInfo(
            "p", f"t:{stage}", "slurm", "t", "1_0", 0, "running", None, None, None, None, stage
        )

    never = lambda point_id, stage: None  # noqa: E731
    assert _ending(point, attempt("train"), done, tmp_path / "log", never)["state"] == "trained"
    assert _ending(point, attempt("eval"), done, tmp_path / "log", never)["state"] == "succeeded"
