"""A trajectory trained for real on the CPU: the trunk's segments at constant learning rate,
then branches that resume a segment's checkpoint and cool down to their samples seen."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import pytest
from test_train import tiny_plan

from scaling import checkpoints
from scaling.errors import ClipscaleError
from scaling.plan import Plan
from scaling.train import run_dir, run_point

pytestmark = pytest.mark.torch

_LR = re.compile(r"Train Epoch: (\d+) .* LR: ([0-9.e-]+)")


def _lrs(directory: Path) -> list[tuple[int, float]]:
    return [(int(m[1]), float(m[2])) for m in _LR.finditer((directory / "out.log").read_text())]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trajectory(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Plan:
    tmp = tmp_path_factory.mktemp("trajectory")
    return tiny_plan(tmp, world, tmp / "runs", ["+samples_mode=branches", "samples_seen=[512,1024]"])


def _run(p: Plan, point_id: str):  # type: ignore[no-untyped-def]
    q = next(q.point for q in p.points if q.point.id == point_id)
    return run_point(q, p.sweep.models[q.model], p.sweep.eval, p.sweep.runs_root, quiet=True)


def test_a_branch_waits_for_its_segment_then_cools_down_to_exactly_its_samples(trajectory: Plan) -> None:
    p = trajectory
    segments = [q.point for q in p.points if q.point.trajectory.from_checkpoint]
    branches = [q.point for q in p.points if not q.point.trajectory.from_checkpoint]
    root = Path(p.sweep.runs_root)
    # Before its segment has trained, a branch refuses to start, and trains nothing.
    with pytest.raises(ClipscaleError, match="has not finished training"):
        _run(p, branches[0].id)
    assert not (checkpoints.folder(run_dir(root, branches[0])) / checkpoints.LATEST).exists()

    for s in segments:
        outcome = _run(p, s.id)
        assert outcome.status == "succeeded", outcome.error
        assert outcome.samples_seen == s.samples_seen  # its weights' samples, the trunk's before it included
        lrs = _lrs(run_dir(root, s))
        assert {e for e, _ in lrs} == set(range(s.start_epoch, s.train.epochs))  # only its own epochs
        past_warmup = [lr for e, lr in lrs if e * (s.steps // s.train.epochs) >= s.train.warmup]
        assert past_warmup and all(lr == pytest.approx(s.train.lr) for lr in past_warmup)
    parents = {s.id: run_dir(root, s) / "checkpoints" / checkpoints.LATEST for s in segments}
    before = {sid: _digest(path) for sid, path in parents.items()}

    for b in branches:
        outcome = _run(p, b.id)
        assert outcome.status == "succeeded", outcome.error
        assert outcome.samples_seen == b.samples_seen == b.train.epochs * b.samples_per_epoch
        lrs = _lrs(run_dir(root, b))
        # The whole run is the cooldown: from the trunk's rate down towards zero.
        assert lrs[0][0] == b.trajectory.start_epoch and lrs[0][1] == pytest.approx(b.train.lr)
        assert all(x[1] > y[1] for x, y in itertools.pairwise(lrs))
        # open_clip logs every epoch's last step: the last of a linear decay over the cooldown.
        cooldown_steps = b.trajectory.cooldown_epochs * (b.steps // b.train.epochs)
        assert lrs[-1][1] == pytest.approx(b.train.lr / cooldown_steps, rel=1e-3)
    # The branches resumed the segments' checkpoints through links and left them as they were.
    assert {sid: _digest(path) for sid, path in parents.items()} == before


def test_a_requeued_branch_resumes_its_own_checkpoint_not_the_trunks(trajectory: Plan) -> None:
    p = trajectory
    branch = max((q.point for q in p.points), key=lambda q: q.samples_seen)
    directory = run_dir(p.sweep.runs_root, branch)
    if not (directory / "outcome.json").exists():
        pytest.skip("needs the trajectory trained by the test before")
    # As a time limit leaves it: its own latest checkpoint, no result yet.
    for name in ("outcome.json", "trained.json"):
        (directory / name).unlink()
    own = checkpoints.folder(directory) / checkpoints.LATEST
    digest = _digest(own)
    _run(p, branch.id)
    assert _digest(own) == digest  # nothing re-linked from the trunk over its own
    log = (directory / "out.log").read_text()
    assert log.count("clipscale: resuming the trunk at epoch") == 1, log


# ---------------------------------------------------------------- dispatched


def _dispatched(tmp: Path, world: Path, name: str, extra: list[str] | None = None) -> Plan:
    from conftest import dispatch_sweep

    from scaling.plan import plan

    path = dispatch_sweep(tmp, world, name, samples="256, 512")
    return plan(str(path), ["+samples_mode=branches", *(extra or [])])


def test_a_trajectory_launched_locally_trains_every_branch_and_a_relaunch_submits_nothing(
    world: Path, tmp_path: Path
) -> None:
    from conftest import wait_done

    from scaling.dispatch import launch
    from scaling.outcome import read_outcome, read_trained
    from scaling.store import connect, runs

    p = _dispatched(tmp_path, world, "traj")
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    report = launch(p, engine)
    assert report.submitted == len(p.points) == 4  # two segments, two branches
    summary = wait_done(p, engine, 600)
    # The trunk's segments are trained, not evaluated; the branches are the points.
    assert summary.counts == {"succeeded": 2, "trained": 2} and summary.done == 4, summary
    for q in p.points:
        directory = run_dir(p.sweep.runs_root, q.point)
        if q.point.trajectory.from_checkpoint:
            trained = read_trained(directory)
            assert trained is not None and trained.samples_seen == q.point.samples_seen
            assert read_outcome(directory) is None
        else:
            outcome = read_outcome(directory)
            assert outcome is not None and outcome.samples_seen == q.point.samples_seen
    again = launch(p, engine)
    assert again.submitted == 0 and again.skipped == {"finished": 4}
    # The first segment's checkpoint went once its evaluation and both runs resuming it (the
    # next segment, the first branch) had trained; the last segment keeps its own, to extend
    # the trunk; every branch keeps its final checkpoint.
    first, last = (q.point for q in p.points if q.point.trajectory.from_checkpoint)
    latest = checkpoints.LATEST
    assert not (checkpoints.folder(run_dir(p.sweep.runs_root, first)) / latest).exists()
    assert (checkpoints.folder(run_dir(p.sweep.runs_root, last)) / latest).exists()
    for q in p.points:
        if not q.point.trajectory.from_checkpoint:
            assert (checkpoints.folder(run_dir(p.sweep.runs_root, q.point)) / latest).exists()
    frame = runs(str(engine.url), "sweep=traj", "status=succeeded")
    assert len(frame) == 2 and frame["toy_shapes/acc1"].notna().all()
    assert not frame["from_checkpoint"].any() and (frame["schedule"] == "const-cooldown").all()


def test_a_failed_trunk_fails_its_branches_with_the_reason(world: Path, tmp_path: Path) -> None:
    from conftest import wait_done

    from scaling.dispatch import launch
    from scaling.store import connect, runs

    # An argument the trainer rejects fails the first segment at once.
    p = _dispatched(tmp_path, world, "trajbad", ["+train.extra_args=[--no-such-flag]"])
    engine = connect(f"sqlite:///{tmp_path / 'r.db'}")
    launch(p, engine)
    summary = wait_done(p, engine, 300)
    assert summary.counts == {"failed": 4}, summary
    frame = runs(str(engine.url), "sweep=trajbad").set_index("id")
    first = next(q.point for q in p.points if q.point.parent is None)
    assert "open_clip_train exited" in frame.loc[first.id, "error"]
    for q in p.points:
        if q.point.parent is not None:
            error = frame.loc[q.point.id, "error"]
            why = f"never ran: its trunk segment {q.point.parent} did not finish training"
            assert error.startswith(why), error
    # Its branches wait for the trunk: relaunching without --retry-failed submits none of them.
    again = launch(p, engine)
    assert again.submitted == 0
    assert again.skipped == {"failed (resubmit with --retry-failed)": 1, "its trunk segment failed": 3}
