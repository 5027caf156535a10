"""The points a status poll follows (the plan's and any the sweep launched under other
overrides) and each one's state, from its attempts and what its run files say."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from scaling.outcome import Outcome, read_outcome, read_trained
from scaling.plan import Plan, PlannedPoint
from scaling.store import state
from scaling.store.attempts import ACTIVE, RESULTS, AttemptInfo, launched_points
from scaling.store.db import read
from scaling.train import run_dir


@dataclass(frozen=True)
class Followed:
    """A point that status follows: one of the plan's, or one the sweep launched under other
    overrides (``scaling status sweep=toy`` follows a point launched with ``train.gpus=2``)."""

    id: str
    directory: Path
    gmacs: float | None
    ranks: int
    parent: str | None
    gpu_hours: float  # planned; 0 for a point not in this plan
    resumes: bool = False  # resumes its parent's checkpoint (a trajectory): needs it trained, not evaluated
    evaluated: bool = True  # a trajectory's trunk segment is not (samples_mode=branches)


def followed(plan: Plan, engine: Engine) -> dict[str, Followed]:
    root = Path(plan.sweep.runs_root)
    out = {p.point.id: _planned(root, p) for p in plan.points}
    for pid, gmacs, config in read(engine, lambda conn: launched_points(conn, plan.sweep.name)):
        if pid not in out:
            ranks = int((config.get("train") or {}).get("gpus") or 1)
            traj = config.get("trajectory") or {}
            resumes = bool(traj) and config.get("parent") is not None
            out[pid] = Followed(pid, root / pid, gmacs, ranks, config.get("parent"), 0.0, resumes,
                                bool(traj.get("evaluated", True)))  # fmt: skip
    return out


def _planned(root: Path, p: PlannedPoint) -> Followed:
    t = p.point.train
    return Followed(p.point.id, run_dir(root, p.point), p.macs.total, t.gpus, p.point.parent, p.gpu_hours,
                    p.point.resumes_parent, p.point.evaluated)  # fmt: skip


class RunFiles:
    """The run files a status poll reads (``outcome.json``, ``trained.json``), each at most
    once: a point whose job just ended is asked about for its end, its ingest and its state."""

    def __init__(self) -> None:
        self._outcomes: dict[Path, Outcome | None] = {}
        self._trained: dict[Path, bool] = {}

    def outcome(self, directory: Path) -> Outcome | None:
        if directory not in self._outcomes:
            self._outcomes[directory] = read_outcome(directory)
        return self._outcomes[directory]

    def trained(self, directory: Path) -> bool:
        if directory not in self._trained:
            self._trained[directory] = read_trained(directory) is not None
        return self._trained[directory]


def point_states(
    points: dict[str, Followed], history: dict[str, list[AttemptInfo]], files: RunFiles | None = None
) -> dict[str, state.PointState]:
    """Each point's state (``scaling.store.state`` decides), with what its run directory
    says: finished training (``trained.json``) or a result not yet ingested. The files are
    read only where the attempts leave it open (no job active, no result), as each status
    poll asks this of every point."""
    files = files or RunFiles()
    out = {}
    for pid, f in points.items():
        tries = [state.Try(a.stage, a.state, a.exit_reason) for a in history.get(pid, [])]
        if any(t.state in ACTIVE or t.state in RESULTS for t in tries):
            out[pid] = state.decide(tries, evaluated=f.evaluated)
            continue
        there = f.directory.is_dir()
        outcome = files.outcome(f.directory) if there else None
        trained = there and files.trained(f.directory)
        out[pid] = state.decide(tries, trained, outcome.status if outcome else None, f.evaluated)
    return out
