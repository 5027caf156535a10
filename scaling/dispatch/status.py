"""Status of a sweep: bring the store up to date with the scheduler (``reconcile``, one
query for all jobs), ingest the runs that finished, and summarise the points' states and the
allocation spent; ``watch`` repeats it until no job is left."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from scaling.clock import db_now, db_time
from scaling.dispatch.backends import backend_for
from scaling.dispatch.follow import Followed, RunFiles, followed, point_states
from scaling.dispatch.recover import _by_launcher, recover
from scaling.dispatch.retire import retire
from scaling.plan import Plan
from scaling.runspec import EVAL, TRAIN
from scaling.store import Ended, ingest_runs, record_points, state
from scaling.store.attempts import (
    ACTIVE,
    FAILURES,
    RESULTS,
    AttemptInfo,
    SubmissionInfo,
    attempts_of,
    submissions,
    update_attempts,
)
from scaling.store.db import read
from scaling.sync import planned_rows


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]  # point status -> points
    total: int
    hours_planned: float
    planned_unit: str  # "GPU-h", or "CPU-h" for a plan costed on CPU cores
    spent: dict[str, float]  # unit -> hours of the allocations: GPUs, or the CPUs of CPU-only jobs
    ingested: int
    active: int
    failures: tuple[tuple[str, str], ...]  # (point id, reason) of failed points
    done: int = 0  # points final: a result, or a trunk segment trained
    landed: tuple[str, ...] = ()  # the points this poll stored (their laws are refitted)


def reconcile(plan: Plan, engine: Engine, track: Callable[[Path], object] | None = None) -> Summary:
    """Bring the store up to date with the scheduler (one query for all jobs) and ingest
    every run that finished since the last call."""
    return _reconcile(plan, engine, track)[0]


def _reconcile(
    plan: Plan, engine: Engine, track: Callable[[Path], object] | None
) -> tuple[Summary, int, int]:
    """``reconcile``, also returning what ``recover`` adopted and voided. The sweep's attempts
    are read once, and each run file at most once (``RunFiles``)."""
    family = plan.sweep.name
    record_points(engine, family, planned_rows(plan), description=plan.sweep.description, new_only=True)
    adopted, voided = recover(plan, engine)
    history = read(engine, lambda conn: attempts_of(conn, family))
    files = RunFiles()
    live = [a for h in history.values() for a in h if a.state in ACTIVE and a.submission]
    subs = {s.token: s for s in submissions(engine, family, ["submitted", "released"])}
    wanted = [subs[t] for t in sorted({a.submission for a in live if a.submission in subs})]
    states: dict[tuple[str, int], Any] = {}
    for launcher, group in _by_launcher(wanted).items():
        states.update(backend_for(plan, launcher).states(group))
    by_id = followed(plan, engine)
    changes: list[dict[str, Any]] = []
    finished: list[tuple[AttemptInfo, str]] = []
    ended: dict[tuple[str, str], tuple[str, str | None]] = {}  # (point, stage) -> its end in this pass

    def last(point_id: str, stage: str) -> tuple[str, str | None] | None:
        """How the point's last attempt at ``stage`` ended: (state, reason)."""
        if (point_id, stage) in ended:
            return ended[(point_id, stage)]
        done = [(x.state, x.exit_reason) for x in history.get(point_id, []) if x.stage == stage]
        return done[-1] if done else None

    def order(a: AttemptInfo) -> tuple[bool, bool]:  # first stages, and trainings, end first
        f = by_id.get(a.point_id)
        return (f is not None and f.parent is not None, a.stage != TRAIN)

    for a in sorted(live, key=order):
        st = states.get((a.submission or "", a.array_index or 0))
        if st is None or st.state == a.state:
            continue
        change: dict[str, Any] = {"point_id": a.point_id, "key": a.key, "state": st.state, "node": st.node,
                                  "started_at": st.started_at, "ended_at": st.ended_at}  # fmt: skip
        sub = subs[a.submission or ""]
        change["log_path"] = str(backend_for(plan, sub.launcher).log_path(sub, a.array_index or 0))
        if st.state not in ACTIVE:
            change.update(_ending(by_id.get(a.point_id), a, st, Path(change["log_path"]), last, files))
            finished.append((a, change["state"]))
            ended[(a.point_id, a.stage)] = (change["state"], change.get("exit_reason"))
        changes.append(change)
    landed = _ingest(plan, engine, by_id, finished, track, files)
    # After the outcomes: an attempt's end says what the outcome said and what the scheduler saw.
    update_attempts(engine, changes)
    # The attempts as the changes left them: read once a poll, not again to summarise.
    history = _applied(history, changes)
    summary, point_state = _summarize(plan, engine, landed, by_id, history, subs, files)
    if finished and any(q.point.trajectory for q in plan.points):
        retire(plan, point_state)  # trunk checkpoints that every run resuming them has moved past
    return summary, adopted, voided


def _applied(
    history: dict[str, list[AttemptInfo]], changes: Sequence[dict[str, Any]]
) -> dict[str, list[AttemptInfo]]:
    """The attempts as ``update_attempts(changes)`` left them in the store, without reading
    them again: what ``attempts_of`` would now return (void attempts dropped)."""
    fields = ("state", "exit_reason", "log_path", "started_at", "ended_at")
    by_key = {(c["point_id"], c["key"]): {k: c[k] for k in fields if k in c} for c in changes}
    out: dict[str, list[AttemptInfo]] = {}
    for pid, attempts in history.items():
        now = [replace(a, **by_key[(pid, a.key)]) if (pid, a.key) in by_key else a for a in attempts]
        if kept := [a for a in now if a.state != "void"]:
            out[pid] = kept
    return out


Last = Callable[[str, str], "tuple[str, str | None] | None"]
# Outcomes stored per transaction: a poll that ends thousands commits every few thousand.
INGEST_BATCH = 2000


def _ending(
    p: Followed | None, a: AttemptInfo, st: Any, log: Path, last: Last, files: RunFiles | None = None
) -> dict[str, Any]:
    """A finished job's attempt state and reason, from what its run left: a training that
    completed left ``trained.json`` (or a diverged outcome), an evaluation the outcome."""
    files = files or RunFiles()
    directory = p.directory if p is not None else None
    outcome = files.outcome(directory) if directory is not None else None
    if outcome is not None and outcome.status == "failed" and _before(outcome.finished_at, st.started_at):
        outcome = None  # an earlier attempt's failure: this one died before it set it aside
    trained = directory is not None and files.trained(directory)
    if st.state == "cancelled" and st.started_at is None:
        return _never_ran(p, a, last)
    if st.state == "completed" and a.stage == TRAIN and trained:
        return {"state": "trained", "exit_reason": None}  # even if its evaluation already ended
    if outcome is not None and outcome.status in RESULTS:
        # Final whatever the job's own end: a diverged run's other ranks fail on their peer.
        return {"state": outcome.status, "exit_reason": outcome.error}
    if st.state == "completed":
        if outcome is None:
            return {
                "state": "failed",
                "exit_reason": "the job ended without writing outcome.json" + _tail(log),
            }
        return {"state": outcome.status, "exit_reason": outcome.error}
    if st.state == "failed" and outcome is not None and outcome.status == "failed":
        reason = outcome.error or ""
        if st.reason and st.reason not in reason:
            reason = f"{reason} [{st.reason}]"  # how the scheduler saw the job end: its ranks' codes
        return {"state": "failed", "exit_reason": reason}
    reason = st.reason or st.state
    return {"state": st.state, "exit_reason": reason + (_tail(log) if st.state != "cancelled" else "")}


def _before(finished_at: str, started: datetime | None) -> bool:
    when = db_time(finished_at)
    return started is not None and when is not None and when < started


def _never_ran(p: Followed | None, a: AttemptInfo, last: Last) -> dict[str, Any]:
    """A job cancelled before it started. If what it waited for did not complete (the
    scheduler cancels such jobs): an evaluation whose training failed never was an attempt
    (void); a second stage whose first stage failed, or a trajectory's run whose parent did
    not finish training, fails with that reason."""

    def state(point_id: str, stage: str) -> str | None:
        end = last(point_id, stage)
        return end[0] if end else None

    if a.stage == EVAL and state(a.point_id, TRAIN) != "trained":  # failed, or diverged: nothing to evaluate
        return {"state": "void", "exit_reason": "never ran: its training did not complete"}
    parent = p.parent if p is not None else None
    if a.stage != TRAIN or p is None or parent is None:
        return {"state": "cancelled", "exit_reason": "cancelled before it ran"}
    succeeded = "succeeded" in (state(parent, EVAL), state(parent, TRAIN))
    if p.resumes and not (succeeded or state(parent, TRAIN) == "trained"):
        why = (last(parent, TRAIN) or ("", None))[1]
        reason = f"never ran: its trunk segment {parent} did not finish training"
        reason += f" ({why})" if why else ""
        return {"state": "failed", "exit_reason": reason}
    if not p.resumes and not succeeded:
        return {"state": "failed", "exit_reason": f"never ran: its first stage {parent} did not succeed"}
    return {"state": "cancelled", "exit_reason": "cancelled before it ran"}


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("; log: " + " | ".join(t.strip() for t in text)) if text else ""


def _ingest(
    plan: Plan,
    engine: Engine,
    points: dict[str, Followed],
    ended: Sequence[tuple[AttemptInfo, str]],
    track: Callable[[Path], object] | None,
    files: RunFiles,
) -> tuple[str, ...]:
    """Store the outcomes that ended attempts wrote (a result, or a failure it recorded): one
    transaction for the poll's outcomes, then each handed to ``track`` (MLflow) once stored.
    Returns the points stored."""
    runs = []
    for a, new_state in ended:
        p = points.get(a.point_id)
        if p is None or new_state not in (*RESULTS, "failed"):
            continue
        outcome = files.outcome(p.directory)
        if outcome is None or (new_state == "failed" and outcome.status != "failed"):
            continue
        runs.append(Ended(p.directory, p.gmacs, a.key, outcome))
    landed: list[str] = []
    for chunk in (runs[i : i + INGEST_BATCH] for i in range(0, len(runs), INGEST_BATCH)):
        landed += ingest_runs(engine, plan.sweep.name, chunk)
        if track is not None:
            for r in chunk:
                track(r.run_dir)
    return tuple(landed)


def summarize(plan: Plan, engine: Engine, points: dict[str, Followed] | None = None) -> Summary:
    """Counts by state of the sweep's points (the plan's and any launched under other
    overrides), and the allocation spent against the plan."""
    return _summarize(plan, engine, (), points)[0]


def _summarize(
    plan: Plan,
    engine: Engine,
    landed: Sequence[str] = (),
    points: dict[str, Followed] | None = None,
    history: dict[str, list[AttemptInfo]] | None = None,
    subs: dict[str, SubmissionInfo] | None = None,
    files: RunFiles | None = None,
) -> tuple[Summary, dict[str, state.PointState]]:
    """``summarize``, also returning each point's state. ``history`` and ``subs``: the sweep's
    attempts and its submitted or released submissions as the store has them, if known."""
    points = points if points is not None else followed(plan, engine)
    if history is None:
        history = read(engine, lambda conn: attempts_of(conn, plan.sweep.name))
    if subs is None:
        subs = {s.token: s for s in submissions(engine, plan.sweep.name, ["submitted", "released"])}
    states = point_states(points, history, files)
    counts: dict[str, int] = {}
    spent: dict[str, float] = {}
    failures = []
    now = db_now()
    for pid, f in points.items():
        st = states[pid]
        status = "not submitted" if st.status == "planned" else st.status
        counts[status] = counts.get(status, 0) + 1
        if st.status in FAILURES:
            failures.append((pid, st.reason or st.status))
        for a in history.get(pid, []):
            if a.started_at is not None:
                seconds = max(0.0, ((a.ended_at or now) - a.started_at).total_seconds())
                amount, unit = _allocation(
                    subs.get(a.submission or ""), a.stage, f.ranks, plan.sweep.gpu.hours
                )
                spent[unit] = spent.get(unit, 0.0) + seconds / 3600 * amount
    # Until every job has ended: a point can be final (diverged) while its evaluation's job
    # is still to be cancelled by the scheduler.
    active = sum(1 for pid in points if any(a.state in ACTIVE for a in history.get(pid, [])))
    planned = sum(f.gpu_hours for f in points.values())
    done = sum(1 for st in states.values() if st.done)
    summary = Summary(
        counts,
        len(points),
        planned,
        plan.sweep.gpu.hours,
        spent,
        len(landed),
        active,
        tuple(failures),
        done,
        tuple(landed),
    )
    return summary, states


def _allocation(sub: SubmissionInfo | None, stage: str, ranks: int, default: str) -> tuple[float, str]:
    """What one attempt held while it ran: its GPUs, or the CPUs of a CPU-only job."""
    r = sub.resources if sub is not None else {}
    if sub is None:  # run by hand: its allocation is not known; its ranks, in the plan's unit
        return float(ranks), default
    if sub.launcher == "local":
        if r.get("gpus"):
            return float(ranks if stage == TRAIN else 1), "GPU-h"
        return float(max(1, int(r.get("cpus", 1)) // int(r.get("parallelism", 1)))), "CPU-h"
    if r.get("gpus_per_node"):
        return float(r["nodes"] * r["gpus_per_node"]), "GPU-h"
    return float(r["nodes"] * r["tasks_per_node"] * r["cpus_per_task"]), "CPU-h"


def watch(plan: Plan, engine: Engine, every_s: float, show: Callable[[Summary], None],
          track: Callable[[Path], object] | None = None) -> Summary:  # fmt: skip
    """Reconcile until no attempt of the sweep is pending or running."""
    while True:
        summary = reconcile(plan, engine, track)
        show(summary)
        if summary.active == 0:
            return summary
        time.sleep(every_s)
