"""Planning a samples-seen axis as one trajectory: a constant-LR trunk in segments, a cooldown
branch per point (samples_mode=branches) or the trunk's checkpoints as points
(samples_mode=checkpoints). No training here: tests/test_branches.py trains them."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaling.cli import main
from scaling.compute import trainer_epoch
from scaling.config import load_sweep
from scaling.errors import ClipscaleError
from scaling.plan import Plan, plan
from scaling.trajectory import COOLDOWN_TOLERANCE, SAMPLES_TOLERANCE, epoch_plan


def _trunks(p: Plan) -> dict[str, list]:  # type: ignore[type-arg]
    out = defaultdict(list)
    for q in p.points:
        assert q.point.trajectory is not None
        out[q.point.trajectory.trunk].append(q)
    return out


def test_every_branch_cools_down_from_its_own_segment_to_its_samples_seen() -> None:
    p = plan("toy", ["samples_mode=branches"])
    separate = plan("toy")
    trunks = _trunks(p)
    assert len(trunks) == 4  # 2 models x 2 data sets, each its own trajectory
    for runs in trunks.values():
        segments = [q.point for q in runs if q.point.trajectory.from_checkpoint]
        branches = [q.point for q in runs if not q.point.trajectory.from_checkpoint]
        assert [b.samples_seen_target for b in branches] == [4000, 16000, 64000]
        length = {q.point.samples_per_epoch for q in runs}
        assert len(length) == 1  # one epoch length: every branch starts on an epoch boundary
        # The segments chain: each resumes the one before at its end epoch, at constant LR.
        assert segments[0].parent is None and segments[0].start_epoch == 0
        for before, after in itertools.pairwise(segments):
            assert after.parent == before.id and after.start_epoch == before.train.epochs
        for s in segments:
            assert s.train.lr_scheduler == "const" and s.trajectory.cooldown_epochs == 0
        by_id = {s.id: s for s in segments}
        for b in branches:
            t, traj = b.train, b.trajectory
            start = by_id[b.parent]
            assert traj.start_epoch == start.train.epochs == t.epochs - traj.cooldown_epochs
            assert t.lr_scheduler == "const-cooldown" and traj.cooldown_epochs >= 1
            assert abs(b.samples_seen - b.samples_seen_target) <= SAMPLES_TOLERANCE * b.samples_seen_target
            assert abs(traj.cooldown_epochs / t.epochs - 0.2) <= COOLDOWN_TOLERANCE * 0.2
            # Exactly what the trainer will count: whole epochs of the shared length.
            assert (
                trainer_epoch(t.train_num_samples, t.batch_size, t.gpus, t.workers)[1] == b.samples_per_epoch
            )
            assert b.samples_seen == t.epochs * b.samples_per_epoch
            assert b.trained_samples == traj.cooldown_epochs * b.samples_per_epoch
    # Each run costs what it trains itself: the trunk once, in segments, plus each cooldown.
    for q in p.points:
        assert q.stage_compute_gmacs == pytest.approx(q.macs.total * q.point.trained_samples)
        assert q.compute_gmacs == pytest.approx(q.macs.total * q.point.samples_seen)
    assert p.separate_gpu_hours == pytest.approx(separate.total_gpu_hours)
    assert p.total_gpu_hours < 0.85 * separate.total_gpu_hours
    for runs in trunks.values():
        # The segments train the trunk once, up to the largest point's cooldown.
        largest = max((q.point for q in runs), key=lambda q: q.samples_seen)
        trunk = sum(q.point.trained_samples for q in runs if q.point.trajectory.from_checkpoint)
        assert trunk == largest.start_epoch * largest.samples_per_epoch


def test_checkpoints_mode_takes_the_axis_from_the_trunk_and_cools_down_the_largest() -> None:
    p = plan("toy", ["samples_mode=checkpoints", "model=[toy-s]", "data=[toy-4k]"])
    points = [q.point for q in p.points]
    checkpoints = [q for q in points if q.trajectory.from_checkpoint]
    branches = [q for q in points if not q.trajectory.from_checkpoint]
    assert [b.samples_seen_target for b in branches] == [64000]
    on_axis = sorted(c.samples_seen_target for c in checkpoints if c.samples_seen_target in (4000, 16000))
    assert on_axis == [4000, 16000]
    for c in checkpoints:
        if c.samples_seen_target in (4000, 16000):
            assert abs(c.samples_seen - c.samples_seen_target) <= SAMPLES_TOLERANCE * c.samples_seen_target
    # One run: the segments chain from scratch to the start of the largest point's cooldown.
    assert sum(q.trained_samples for q in points) == branches[0].samples_seen


def test_a_segment_keeps_its_id_when_a_longer_axis_adds_segments_around_it() -> None:
    # With the epoch length fixed, planning more samples-seen values later extends the same
    # trunk: what was trained keeps its id (and its run directory) and is not trained again.
    fixed = ["samples_mode=branches", "model=[toy-s]", "data=[toy-4k]", "train.epoch_samples=512"]
    short = plan("toy", [*fixed, "samples_seen=[4k,16k]"])
    long = plan("toy", [*fixed, "samples_seen=[4k,8k,16k,64k]"])
    ids_short = {q.point.id for q in short.points}
    ids_long = {q.point.id for q in long.points}
    assert ids_short <= ids_long
    trunk = {q.point.trajectory.trunk for q in short.points}
    assert trunk == {q.point.trajectory.trunk for q in long.points}
    # ...while the segment that now follows a new one resumes it instead.
    new_parent = {q.point.id: q.point.parent for q in long.points}
    assert any(new_parent[q.point.id] != q.point.parent for q in short.points)


def test_separate_ids_do_not_change() -> None:
    assert {q.point.id for q in plan("toy").points} == {
        q.point.id for q in plan("toy", ["samples_mode=separate"]).points
    }
    assert all(q.point.trajectory is None for q in plan("toy").points)


def test_the_paper_grid_as_branches_costs_less_and_each_point_says_its_trunk() -> None:
    result = CliRunner().invoke(main, ["plan", "sweep=paper", "samples_mode=branches", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    branches = [r for r in records if not r["from_checkpoint"]]
    assert len(branches) == 29 and all(r["trunk"] and r["cooldown"] for r in branches)
    separate = plan("paper").total_gpu_hours
    spent = sum(r["gpu_hours"] for r in records)  # a trunk's hours once, in its segments
    assert spent < 0.9 * separate
    text = CliRunner().invoke(main, ["plan", "sweep=paper", "samples_mode=branches"], terminal_width=400)
    assert text.exit_code == 0 and "samples_mode=branches:" in text.output
    assert "for the same points trained separately" in text.output


def test_a_long_axis_costs_well_under_its_separate_runs() -> None:
    overrides = ["model=[ViT-B-32]", "data=[LAION-2B]", "samples_seen=[128M,300M,640M,1.28B,3B,6.4B,12.8B]",
                 "include=[]", "points=[]", "train.warmup=500", "samples_mode=branches"]  # fmt: skip
    p = plan("paper", overrides)
    assert p.separate_gpu_hours is not None
    assert p.total_gpu_hours < 0.7 * p.separate_gpu_hours
    branches = [q.point for q in p.points if not q.point.trajectory.from_checkpoint]
    assert len(branches) == 7


def test_epoch_plan_meets_its_tolerances_with_the_longest_epoch() -> None:
    spec = load_sweep("toy")
    targets = [4000, 16000, 64000]
    ep = epoch_plan(targets, 0.2, spec.train)
    samples, cooldown = ep.miss()
    assert samples <= SAMPLES_TOLERANCE and cooldown <= COOLDOWN_TOLERANCE
    assert all(e - c >= 1 for e, c in zip(ep.epochs, ep.cooldowns, strict=True))
    # The next longer epoch (one more batch: the toy sweep's quantum) misses a tolerance.
    longer = ep.samples_per_epoch + spec.train.batch_size
    epochs = [max(2, round(t / longer)) for t in targets]
    cooldowns = [min(e - 1, max(1, round(0.2 * e))) for e in epochs]
    misses = [abs(e * longer - t) / t for e, t in zip(epochs, targets, strict=True)]
    shares = [abs(c / e - 0.2) / 0.2 for c, e in zip(cooldowns, epochs, strict=True)]
    assert max(misses) > SAMPLES_TOLERANCE or max(shares) > COOLDOWN_TOLERANCE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["samples_mode=branches", "train.warmup=30"], "does not come after warm-up"),
        (["samples_mode=sideways"], "unknown samples_mode 'sideways'"),
        (["samples_mode=branches", "cooldown=1.0"], "cooldown must lie in"),
        (["train.lr_scheduler=const-cooldown"], "needs --epochs-cooldown in train.extra_args"),
    ],
)
def test_bad_trajectory_settings_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ClipscaleError, match=message):
        plan("toy", overrides)


def test_a_second_stage_does_not_combine_with_branches() -> None:
    with pytest.raises(ClipscaleError, match="does not combine with finetune"):
        plan("clipa", ["samples_mode=branches"])


def _stored_trajectories(tmp_path: Path) -> tuple[Plan, str]:
    """The toy grid as checkpoints of one trajectory per model and data set, stored as if
    trained: the final (cooled-down) runs on a law, the constant-LR checkpoints 20 % worse."""
    from dataclasses import asdict

    from scaling.outcome import Outcome, write_outcome
    from scaling.store import connect, ingest_run, record_points
    from scaling.sync import planned_rows

    p = plan("toy", ["samples_mode=checkpoints"])
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = connect(url)
    record_points(engine, "toy", planned_rows(p))
    for q in p.points:
        directory = tmp_path / "runs" / q.point.id
        directory.mkdir(parents=True)
        (directory / "point.json").write_text(json.dumps(asdict(q.point)))
        error = 0.5 * q.compute_gmacs**-0.1 * (1.2 if q.point.trajectory.from_checkpoint else 1.0)
        seen = q.point.samples_seen
        outcome = Outcome(id=q.point.id, status="succeeded", samples_seen=seen, samples_seen_planned=seen,
                          epochs=q.point.train.epochs or 0, wall_time_s=1.0, train_time_s=1.0,
                          samples_per_s=1.0,
                          metrics={"toy_shapes": {"acc1": 1 - error}})  # fmt: skip
        write_outcome(directory, outcome)
        ingest_run(engine, directory, "toy", q.macs.total)
    return p, url


def test_runs_filter_on_how_a_point_was_trained(tmp_path: Path) -> None:
    from scaling.store import runs

    p, url = _stored_trajectories(tmp_path)
    branches = {q.point.id for q in p.points if not q.point.trajectory.from_checkpoint}
    assert set(runs(url, "sweep=toy", "from_checkpoint=false")["id"]) == branches
    assert set(runs(url, "sweep=toy", "checkpoints=final")["id"]) == branches
    assert len(runs(url, "sweep=toy", "checkpoints=only")) == len(p.points) - len(branches)
    assert set(runs(url, "sweep=toy", "schedule=const-cooldown")["id"]) == branches
    frame = runs(url, "sweep=toy", "cooldown>=0.15")
    assert set(frame["id"]) == branches and frame["cooldown"].between(0.15, 0.25).all()
    trunk = p.points[0].point.trajectory.trunk
    assert set(runs(url, "sweep=toy", f"trunk={trunk}")["trunk"]) == {trunk}
    with pytest.raises(ClipscaleError, match="checkpoints is one of final, all, only"):
        runs(url, "sweep=toy", "checkpoints=some")


def test_a_law_stands_on_final_points_unless_checkpoints_are_asked_for(tmp_path: Path) -> None:
    from scaling.fit import laws
    from scaling.store import connect

    p, url = _stored_trajectories(tmp_path)
    engine = connect(url)
    pareto = laws.Settings(method="pareto", n_boot=50)  # the frontier is the runs themselves
    final = laws.fit(engine, ["sweep=toy"], "toy_shapes", "acc1", pareto)
    n_checkpoints = sum(1 for q in p.points if q.point.trajectory.from_checkpoint)
    assert final.law.n_runs == len(p.points) - n_checkpoints and final.left_out == n_checkpoints
    assert final.law.alpha == pytest.approx(-0.1, abs=1e-6)  # the branches lie on the law exactly
    assert (
        final.points.startswith("checkpoints=final")
        and f"{n_checkpoints} checkpoints left out" in final.points
    )
    everything = laws.fit(engine, ["sweep=toy", "checkpoints=all"], "toy_shapes", "acc1", pareto)
    assert everything.law.n_runs == len(p.points) and everything.left_out == 0
    assert everything.record()["checkpoints"] == "all"


def test_a_small_batch_on_a_long_axis_tries_a_bounded_number_of_epoch_lengths() -> None:
    # Batch 256 on one GPU against 34B samples: millions of candidate epoch lengths; the
    # search tries at most 20,000 of them, spread over the range, and still meets both
    # tolerances.
    from dataclasses import replace

    from scaling import trajectory

    train = replace(load_sweep("paper").train, batch_size=256, gpus=1, workers=1)
    top = 3_000_000_000 * 0.2 // 256
    assert len(trajectory._candidates(int(top), 1)) <= 20_001
    ep = epoch_plan([3_000_000_000, 13_000_000_000, 34_000_000_000], 0.2, train)
    samples, cooldown = ep.miss()
    assert samples <= SAMPLES_TOLERANCE and cooldown <= COOLDOWN_TOLERANCE


def test_a_branch_retried_after_its_segment_trained_is_submitted() -> None:
    # A trunk segment of samples_mode=branches is never evaluated: trained is its end. A
    # relaunch that retries a failed branch must find its segment ready, not wait for it.
    from scaling.dispatch.launch import LaunchOptions, _decide
    from scaling.store.state import Try, decide

    p = plan("toy", ["samples_mode=branches", "model=[toy-s]", "data=[toy-4k]"])
    branch = next(q for q in p.points if not q.point.trajectory.from_checkpoint)
    segment = branch.point.parent
    assert segment is not None
    states = {
        segment: decide([Try("train", "trained")], evaluated=False),
        branch.point.id: decide([Try("train", "failed", "killed")]),
    }
    assert states[segment].done and states[segment].trained
    assert _decide(branch, states, set(), LaunchOptions(retry_failed=True)) is None


@pytest.mark.parametrize(
    "override", ["samples_mode=sideways", "cooldown=0", "train.lr_scheduler=const-cooldown"]
)
def test_bad_trajectory_settings_end_scaling_plan_in_one_line(override: str) -> None:
    result = CliRunner().invoke(main, ["plan", "sweep=toy", override])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
