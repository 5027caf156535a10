"""Dispatch against a real one-node Slurm (launchers/slurm-dev-cluster.sh): arrays, status
with sacct, a time limit hit and resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import SLURM_SCRIPT, assert_failed_at_the_next_collective, env_for, queued
from conftest import slurm_cli as cli
from conftest import slurm_sweep as sweep_file

from scaling import toyworld
from scaling.outcome import read_outcome, read_trained
from scaling.plan import Plan, plan
from scaling.store import connect
from scaling.store.models import Attempt, Submission
from scaling.train import run_dir

pytestmark = [pytest.mark.torch, pytest.mark.slurm]


def test_toy_sweep_runs_as_arrays_and_status_watch_ingests_every_point(
    slurm_cluster: str, world: Path, tmp_path: Path
) -> None:
    path = sweep_file(tmp_path, world, "arrays")
    env = env_for(tmp_path)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    out = cli("launch", f"sweep={path}", "--db", db, env=env)
    assert out.returncode == 0, out.stderr
    # 3 points, MaxArraySize 2: two arrays, and the launcher returned before they ended.
    assert "submitted 3 points in 2 job arrays" in out.stdout, out.stdout
    engine = connect(db)
    with engine.connect() as conn:
        tokens = set(conn.execute(sa.select(Submission.token)).scalars())
    assert len(queued(tokens)) >= 1
    out = cli("status", f"sweep={path}", "--db", db, "--watch", "--every", "2", env=env)
    assert out.returncode == 0, out.stderr
    status_lines = [line for line in out.stdout.splitlines() if line.startswith("sweep arrays [")]
    assert "3/3 done: 3 succeeded" in status_lines[-1]
    assert "law arrays [toy] toy_shapes/acc1: E = " in out.stdout  # refitted as the points landed
    csv = cli("runs", "sweep=arrays", "--db", db, "--format", "csv", env=env)
    lines = csv.stdout.strip().splitlines()
    assert (
        len(lines) == 4 and "toy_shapes/acc1" in lines[0] and all(",succeeded," in line for line in lines[1:])
    )
    with engine.connect() as conn:
        jobs = conn.execute(sa.select(Attempt.job_id, Attempt.stage, Attempt.state, Attempt.node)).all()
    # Each point: a training task, then an evaluation task of its own (array task ids).
    assert (
        sorted((stage, state) for _, stage, state, _ in jobs)
        == [("eval", "succeeded")] * 3 + [("train", "trained")] * 3
    )
    # Array task ids for the array of two, a plain job id for the one point left over.
    assert sorted("_" in job for job, _, _, _ in jobs) == [False] * 2 + [True] * 4
    assert all(node for _, _, _, node in jobs)


def test_time_limit_requeues_both_ranks_and_the_run_resumes_to_the_planned_samples(
    slurm_cluster: str, world: Path, tmp_path: Path
) -> None:
    # One 2-rank point that trains for longer than Slurm lets it run before signalling, in short
    # epochs (a checkpoint each); Slurm signals it 20 s (give or take its 60 s resolution) before.
    # On an idle 2-core machine toy-xs trains ~1,000 samples/s: 108k samples outlast even a
    # signal that comes 100 s in (36k finished first there, and nothing was requeued).
    overrides = ["model=[toy-xs]", "samples_seen=[108000]", "train.epochs=12", "train.gpus=2",
                 "clusters.slurm.time_limit_min=1", "clusters.slurm.signal_delay_s=20"]  # fmt: skip
    path = sweep_file(tmp_path, world, "limit")
    env = env_for(tmp_path)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert cli("launch", f"sweep={path}", *overrides, "--db", db, env=env).returncode == 0
    out = cli(
        "status", f"sweep={path}", *overrides, "--db", db, "--watch", "--every", "3", "--no-tracking", env=env
    )
    assert out.returncode == 0, out.stderr
    p: Plan = plan(str(path), overrides)
    point = p.points[0].point
    outcome = read_outcome(run_dir(p.sweep.runs_root, point))
    assert outcome is not None and outcome.status == "succeeded", out.stdout
    assert outcome.samples_seen == point.samples_seen  # exact, across requeues
    engine = connect(db)
    with engine.connect() as conn:
        job = conn.execute(sa.select(Attempt.job_id).where(Attempt.stage == "train")).scalar_one()
    history = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True,
                             text=True).stdout.split()  # fmt: skip
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    directory = run_dir(p.sweep.runs_root, point)
    assert "resum" in (directory / "out.log").read_text().lower()
    # Both ranks ran again after the requeue (the job's restart count is in their attempt)
    # and resumed from the checkpoint rank 0 found.
    records = [json.loads((directory / "ranks" / f"{r}.json").read_text()) for r in (0, 1)]
    assert [r["state"] for r in records] == ["done", "done"], records
    assert records[0]["attempt"] == records[1]["attempt"] and not records[0]["attempt"].endswith(".0")
    assert "=> resuming checkpoint" in (directory / "console.rank1.log").read_text()
    assert outcome.ranks == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cluster.partition=nope"], r"^error: the cluster has no partition 'nope' \(partitions: "),
        (
            ["clusters.slurm.mem_gb_per_gpu=100000"],
            r"^error: a job asks for 100000 GB per node but the nodes of",
        ),
        (["clusters.slurm.cpus_per_gpu=512"], r"^error: a job asks for 512 CPUs per node"),
        (
            ["clusters.slurm.gpus_per_node=1"],
            r"^error: a job asks for 1 GPUs per node but the nodes of .* have 0",
        ),
    ],
)
def test_bad_resources_are_refused_before_anything_is_submitted(
    slurm_cluster: str, world: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    path = sweep_file(tmp_path, world, "badres")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    out = cli("launch", f"sweep={path}", *overrides, "--db", db, env=env_for(tmp_path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert re.search(message, out.stderr), out.stderr
    assert not (tmp_path / "runs" / "_jobs").exists()
    if (tmp_path / "r.db").exists():
        with connect(db).connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(Attempt)).scalar() == 0


def test_sbatch_refusal_is_one_line_and_leaves_nothing_pending(
    slurm_cluster: str, world: Path, tmp_path: Path
) -> None:
    path = sweep_file(tmp_path, world, "refused")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = env_for(tmp_path)
    bad = ["+clusters.slurm.additional_parameters={no-such-sbatch-option: 1}", "samples_seen=[256]"]
    out = cli("launch", f"sweep={path}", *bad, "--db", db, env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: sbatch refused the array"), out.stderr
    with connect(db).connect() as conn:
        assert set(conn.execute(sa.select(Attempt.state)).scalars()) == {"void"}
    # The refused submission holds nothing: the next launch submits the point.
    dry = cli("launch", f"sweep={path}", "samples_seen=[256]", "--db", db, "--dry-run", env=env)
    assert "would submit 1 points" in dry.stdout, dry.stdout


def test_up_takes_down_the_state_a_dead_cluster_left(slurm_cluster: str) -> None:
    # A state dir whose daemons died with their machine (a reboot, a restored snapshot): `up`
    # removes it instead of asking for a manual `down`; the live cluster is still refused.
    stale = Path(tempfile.mkdtemp(prefix="stale-", dir="/var/tmp"))
    (stale / ".clipscale-slurm").touch()
    (stale / "pids").mkdir()
    (stale / "pids" / "munged").write_text("999999999 1\n")
    out = subprocess.run([str(SLURM_SCRIPT), "up", str(stale)], capture_output=True, text=True, timeout=120)
    assert not stale.exists(), out.stderr
    assert out.returncode == 1 and "a dev cluster is already up" in out.stderr, out.stderr
    assert subprocess.run([str(SLURM_SCRIPT), "status"], capture_output=True).returncode == 0


def test_slurm_down_is_one_line(slurm_cluster: str, world: Path, tmp_path: Path) -> None:
    # A client configured for a controller that does not answer (a port nothing listens on).
    conf = tmp_path / "slurm.conf"
    text = Path("/etc/slurm/slurm.conf").read_text()
    conf.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=1", text))
    path = sweep_file(tmp_path, world, "down")
    out = cli("launch", f"sweep={path}", "--db", f"sqlite:///{tmp_path / 'r.db'}",
              env={**env_for(tmp_path), "SLURM_CONF": str(conf)}, timeout=300)  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: cannot read the cluster's partitions: sinfo"), out.stderr


def test_a_two_rank_point_trains_on_two_tasks_and_is_evaluated_by_a_job_of_its_own(
    slurm_cluster: str, tmp_path: Path
) -> None:
    # The acceptance commands as a user types them, on the toy sweep.
    root = tmp_path / "data"
    toyworld.write_world(root, {"toy-4k": 4000})
    env = {
        **env_for(tmp_path),
        "CLIPSCALE_DATA_ROOT": str(root),
        "CLIPSCALE_RUNS_ROOT": str(tmp_path / "runs"),
    }
    axes = [
        "sweep=toy",
        "cluster=slurm",
        "model=[toy-s]",
        "data=[toy-4k]",
        "samples_seen=[16k]",
        "train.gpus=2",
    ]
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert cli("launch", *axes, "--db", db, env=env).returncode == 0
    # Status of the sweep as a whole follows the point launched under other overrides too.
    out = cli("status", "sweep=toy", "--db", db, "--watch", "--every", "3", "--no-tracking", env=env)
    last = [line for line in out.stdout.splitlines() if line.startswith("sweep toy [")][-1]
    assert out.returncode == 0 and "1/13 done: 1 succeeded, 12 not submitted" in last, out.stdout + out.stderr
    point = plan("toy", axes[1:]).points[0].point
    assert point.train.global_batch_size == 2 * 128
    directory = tmp_path / "runs" / point.id
    outcome = read_outcome(directory)
    assert outcome is not None and outcome.ranks == 2 and outcome.samples_seen == point.samples_seen
    assert "world_size: 2" in (directory / "params.txt").read_text()
    # One outcome, both ranks' logs, and of the checkpoints only the latest.
    assert not (directory / "history").exists()
    assert (directory / "console.log").is_file() and (directory / "console.rank1.log").is_file()
    assert sorted(f.name for f in (directory / "checkpoints").iterdir()) == ["epoch_latest.pt"]
    engine = connect(db)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Attempt.stage, Attempt.job_id, Attempt.state, Attempt.started_at,
                                      Attempt.ended_at).order_by(Attempt.id)).all()  # fmt: skip
    (train, evaluation) = rows
    assert (train.stage, train.state, evaluation.stage, evaluation.state) == (
        "train",
        "trained",
        "eval",
        "succeeded",
    )
    assert train.job_id != evaluation.job_id and evaluation.started_at >= train.ended_at
    folder = next((tmp_path / "runs" / "_jobs").glob("*/" + train.job_id + "_1_log.err")).parent
    assert (folder / f"{train.job_id}_0_log.err").is_file()  # Slurm's log of each task (rank)


def test_a_killed_rank_fails_the_point_within_the_collective_timeout(
    slurm_cluster: str, world: Path, tmp_path: Path
) -> None:
    overrides = ["samples_seen=[163840]", "train.epochs=8", "train.gpus=2", "+train.dist_timeout_min=1"]
    path = sweep_file(tmp_path, world, "rankkill")
    env = env_for(tmp_path)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert cli("launch", f"sweep={path}", *overrides, "--db", db, env=env).returncode == 0
    point = plan(str(path), overrides).points[0].point
    directory = tmp_path / "runs" / point.id
    deadline = time.monotonic() + 180
    while not (
        (directory / "ranks" / "1.json").exists() and "Train Epoch: 0" in _text(directory / "out.log")
    ):
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    os.kill(json.loads((directory / "ranks" / "1.json").read_text())["pid"], signal.SIGKILL)
    out = cli(
        "status", f"sweep={path}", *overrides, "--db", db, "--watch", "--every", "2", "--no-tracking", env=env
    )
    assert out.returncode == 0 and "1 failed" in out.stdout, out.stdout
    runs = cli("runs", "sweep=rankkill", "--db", db, "--format", "json", env=env)
    (row,) = json.loads(runs.stdout)
    assert row["status"] == "failed" and row["error"].startswith("rank 1: died without recording an error")
    # The job failed (not TIMEOUT: its limit is an hour) because rank 0's collective did.
    with connect(db).connect() as conn:
        state = conn.execute(sa.select(Attempt.state).where(Attempt.stage == "train")).scalar_one()
    outcome = read_outcome(directory)
    assert state == "failed" and outcome is not None
    assert_failed_at_the_next_collective(directory, outcome.samples_seen, point.samples_seen)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


CHAIN = """
finetune: {samples_seen: 128, image_size: 32, lr: 1.0e-4, epochs: 1, warmup: 1}
points:
  - match: {samples_seen: [384]}
    train: {extra_args: [--no-such-flag]}
"""


def test_a_failed_first_stage_fails_its_second_stage_and_the_other_chain_finishes(
    slurm_cluster: str, world: Path, tmp_path: Path
) -> None:
    path = sweep_file(tmp_path, world, "chain")
    path.write_text(
        path.read_text().replace("samples_seen: [256, 384, 512]", "samples_seen: [256, 384]") + CHAIN
    )
    env = env_for(tmp_path)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    out = cli("launch", f"sweep={path}", "--db", db, env=env)
    assert out.returncode == 0 and "submitted 4 points" in out.stdout, out.stdout + out.stderr
    out = cli(
        "status",
        f"sweep={path}",
        "--db",
        db,
        "--watch",
        "--every",
        "2",
        "--no-tracking",
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr  # --watch ended
    p = plan(str(path), [])
    first_ok, second_ok, first_bad, second_bad = (q.point for q in p.points)
    assert second_bad.parent == first_bad.id and "384" in first_bad.id
    rows = {r["id"]: r for r in json.loads(cli("runs", "sweep=chain", "--db", db, "--format", "json",
                                                env=env).stdout)}  # fmt: skip
    assert rows[first_ok.id]["status"] == rows[second_ok.id]["status"] == "succeeded"
    assert (
        rows[first_bad.id]["status"] == "failed" and "open_clip_train exited" in rows[first_bad.id]["error"]
    )
    assert rows[second_bad.id]["status"] == "failed"
    assert rows[second_bad.id]["error"] == f"never ran: its first stage {first_bad.id} did not succeed"
    # Slurm cancelled the second stage's job (its dependency could not be met).
    assert not queued(set(conn_tokens(db)))


def conn_tokens(db: str) -> list[str]:
    with connect(db).connect() as conn:
        return list(conn.execute(sa.select(Submission.token)).scalars())


@pytest.fixture()
def submit_limit(drained: None) -> Iterator[int]:
    """QOS normal lets root have 4 jobs queued (restored afterwards)."""
    qos = ["sacctmgr", "-i", "modify", "qos", "normal", "set"]
    subprocess.run([*qos, "MaxSubmitJobsPerUser=4"], check=True, capture_output=True)
    try:
        yield 4
    finally:
        subprocess.run([*qos, "MaxSubmitJobsPerUser=-1"], check=True, capture_output=True)
        subprocess.run(["scancel", "--user", "root"], check=False)


def test_a_launch_submits_only_what_the_clusters_submit_limit_allows(
    submit_limit: int, world: Path, tmp_path: Path
) -> None:
    path = sweep_file(tmp_path, world, "limits")
    env = env_for(tmp_path)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    mine = subprocess.run(["squeue", "-h", "-r", "-u", "root", "-o", "%i"], capture_output=True, text=True)
    queued = len(mine.stdout.split())
    out = cli("launch", f"sweep={path}", "--db", db, env=env)
    assert out.returncode == 0, out.stderr
    assert (
        f"cluster limits: MaxArraySize 1001; {submit_limit} jobs per user (QOS normal), {queued} queued"
        in out.stdout
    )
    # Three points, each a training and an evaluation job: two fit under 4, the third waits.
    points = (submit_limit - queued) // 2
    assert f"submitted {points} points" in out.stdout, out.stdout
    assert f"not submitted: {3 - points} waiting: over the cluster's submit limit" in out.stdout, out.stdout


def test_arrays_are_cut_to_the_clusters_max_array_size() -> None:
    from scaling.dispatch import slurm
    from scaling.dispatch.backends import SlurmBackend

    p = plan("toy", ["cluster=slurm"])
    backend = SlurmBackend(p)
    assert [len(ids) for _, ids in backend.batches(p.points)] == [12]
    backend._limits = slurm.Limits(max_array_size=5, max_submit=None, queued=0, source="")
    assert [len(ids) for _, ids in backend.batches(p.points)] == [5, 5, 2]
    assert backend.limits() == "cluster limits: MaxArraySize 5; no submit limit"


def test_a_trajectory_on_slurm_survives_its_trunk_killed_mid_way_and_a_relaunch_submits_nothing(
    slurm_cluster: str, world: Path, tmp_path: Path
) -> None:
    # samples_mode=branches: two trunk segments (jobs of their own, the second after the first)
    # and two branches, each after the segment it cools down from. The first segment is
    # requeued by hand once it has saved a checkpoint, as a preemption would.
    overrides = ["model=[toy-xs]", "samples_seen=[16000, 32000]", "+samples_mode=branches"]
    path = sweep_file(tmp_path, world, "branches")
    env = env_for(tmp_path)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    out = cli("launch", f"sweep={path}", *overrides, "--db", db, env=env)
    assert out.returncode == 0, out.stderr
    p: Plan = plan(str(path), overrides)
    first = next(q.point for q in p.points if q.point.parent is None)
    latest = run_dir(p.sweep.runs_root, first) / "checkpoints" / "epoch_latest.pt"
    engine = connect(db)
    deadline = time.monotonic() + 300
    while not latest.exists():
        assert time.monotonic() < deadline, "the first segment saved no checkpoint"
        time.sleep(0.2)
    with engine.connect() as conn:
        job = conn.execute(
            sa.select(Attempt.job_id).where(Attempt.point_id == first.id, Attempt.stage == "train")
        ).scalar_one()
    subprocess.run(["scontrol", "requeue", job], check=True)
    out = cli("status", f"sweep={path}", *overrides, "--db", db, "--watch", "--every", "2", "--no-tracking",
              env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for q in p.points:
        directory = run_dir(p.sweep.runs_root, q.point)
        # A segment of the trunk is trained, not evaluated; a branch is a point with a result.
        done = read_outcome(directory) if q.point.evaluated else read_trained(directory)
        assert done is not None and getattr(done, "status", "succeeded") == "succeeded", (
            q.point.id,
            out.stdout,
        )
        assert done.samples_seen == q.point.samples_seen
    history = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True,
                             text=True).stdout.split()  # fmt: skip
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    assert "resuming checkpoint" in (run_dir(p.sweep.runs_root, first) / "out.log").read_text().lower()
    # Every run a job of its own, started only once its parent's training job had ended.
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Attempt.point_id, Attempt.job_id).where(Attempt.stage == "train")).all()
    jobs = dict(rows)
    assert len(jobs) == 4

    def span(job_id: str) -> tuple[str, str]:
        cmd = ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "Start,End"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        start, end = out[-1].split("|")
        return start, end

    for q in p.points:
        if q.point.parent is not None:
            assert span(jobs[q.point.id])[0] >= span(jobs[q.point.parent])[1], q.point.id
    again = cli("launch", f"sweep={path}", *overrides, "--db", db, env=env)
    assert again.returncode == 0 and "submitted 0 points" in again.stdout, again.stdout
