"""Which trunk checkpoints a sweep still needs (``samples_mode=branches|checkpoints``).

A trunk segment's final checkpoint is what its own evaluation reads and what every run that
continues it resumes: the next segment, and the branches that cool down from it. Once its
evaluation has a result and each of those runs has finished training, nothing planned
needs it, and it is removed: a trunk would otherwise keep a checkpoint per branch start.
The last segment of each trunk keeps its checkpoint, for a longer axis planned later to
extend the trunk from it. A run that had linked the checkpoint in as its own keeps the
file's data until it saves its own (a hard link). A status poll calls it, with the
points' states it has just decided.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from scaling import checkpoints
from scaling.plan import Plan
from scaling.runspec import run_dir
from scaling.store.state import PointState


def retire(plan: Plan, states: Mapping[str, PointState]) -> list[Path]:
    """Remove the trunk checkpoints nothing planned needs any more (``states``: each point's,
    as ``scaling.store.state`` decides); the paths removed."""
    points = [q.point for q in plan.points]
    children: dict[str, list[str]] = {}
    for p in points:
        if p.parent is not None and p.resumes_parent:
            children.setdefault(p.parent, []).append(p.id)
    last: dict[str, int] = {}
    for p in points:
        if p.trajectory is not None and p.trajectory.from_checkpoint:
            last[p.trajectory.trunk] = max(last.get(p.trajectory.trunk, 0), p.train.epochs or 0)
    root = Path(plan.sweep.runs_root)
    removed = []
    for p in points:
        traj = p.trajectory
        if traj is None or not traj.from_checkpoint or (p.train.epochs or 0) == last[traj.trunk]:
            continue
        latest = checkpoints.folder(run_dir(root, p)) / checkpoints.LATEST
        # The segment is through with it: evaluated, or trained where it is not evaluated.
        if not latest.exists() or not states[p.id].done:
            continue
        if all(states[c].trained for c in children.get(p.id, ())):
            with contextlib.suppress(FileNotFoundError):
                latest.unlink()
                removed.append(latest)
    return removed
