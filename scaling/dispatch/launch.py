"""Launch a sweep, follow it, cancel it: fire-and-forget, idempotent, safe to kill.

The order of a launch is what makes it safe to kill at any instant:

1. validate the whole plan (shards, evaluation sets, resources against the cluster);
2. settle what an earlier, killed launch left half-done (``recover``);
3. in one locked transaction, choose the points to submit and record each batch as an
   ``intent`` with a ``submitting`` attempt per point;
4. per batch: submit it held, record its job id, put its payload in place, release it.

A kill before 4 leaves intents that were never submitted (voided on the next run); a kill
inside 4 leaves a held job found again by its name (its token) and completed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from scaling.dispatch.backends import Backend, backend_for, jobs_root, owner, owner_gone
from scaling.errors import ClipscaleError
from scaling.outcome import read_outcome
from scaling.plan import Plan, PlannedPoint
from scaling.store import ingest_run, record_points
from scaling.store.attempts import (
    ACTIVE,
    FAILURES,
    RESULTS,
    AttemptInfo,
    NewSubmission,
    SubmissionInfo,
    add_submissions,
    attempts_of,
    locked,
    set_submission,
    submissions,
    update_attempts,
)
from scaling.store.db import transaction
from scaling.sync import planned_rows
from scaling.train import run_dir


@dataclass(frozen=True)
class LaunchOptions:
    retry_failed: bool = False  # also resubmit points whose last attempt failed
    max_attempts: int = 3  # never submit a point that has had this many attempts
    dry_run: bool = False


@dataclass(frozen=True)
class LaunchReport:
    batches: tuple[tuple[str, str, int], ...]  # (token, job id, tasks)
    skipped: dict[str, int] = field(default_factory=dict)  # why -> points
    recovered: int = 0
    voided: int = 0

    @property
    def submitted(self) -> int:
        return sum(n for _, _, n in self.batches)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def validate(plan: Plan, backend: Backend) -> None:
    """Everything a point needs before anything is submitted, for every point."""
    from scaling.evaluate import check_eval_sets
    from scaling.train import check_shards

    for pattern in sorted({p.point.shards for p in plan.points}):
        check_shards(pattern)
    check_eval_sets(plan.sweep.eval)
    backend.validate(plan.points)


# ---------------------------------------------------------------- recovery


def recover(plan: Plan, engine: Engine) -> tuple[int, int]:
    """Settle submissions left by launchers that are gone: adopt the ones the scheduler
    has (and start them), void the others. Returns (adopted, voided)."""
    family = plan.sweep.name
    now = _now()
    pending = [
        s
        for s in submissions(engine, family, ["intent", "submitted"])
        if owner_gone(s.owner, (now - s.created_at).total_seconds())
    ]
    # A killed launcher's sbatch can land after the intent was voided: such a held array
    # is found by its name and cancelled before it can run.
    recent_void = [
        s for s in submissions(engine, family, ["void"]) if (now - s.created_at).total_seconds() < 3600
    ]
    adopted, voided = 0, 0
    for launcher, intents in _by_launcher([s for s in pending if s.state == "intent"] + recent_void).items():
        backend = backend_for(plan, launcher)
        found = backend.settle(intents)
        backend.discard([job for s in intents if s.state == "void" and (job := found.get(s.token))])
        for s in (s for s in intents if s.state == "intent"):
            job = found.get(s.token)
            if job is None:
                set_submission(engine, s.token, "void", reason="never submitted: its launcher stopped first")
                voided += 1
            else:
                set_submission(engine, s.token, "submitted", job, _task_ids(backend, job))
                adopted += 1
    to_start = submissions(engine, family, ["submitted"])
    to_start = [s for s in to_start if owner_gone(s.owner, (now - s.created_at).total_seconds())]
    for launcher, subs in _by_launcher(to_start).items():
        backend_for(plan, launcher).start(subs)
        for s in subs:
            set_submission(engine, s.token, "released")
    return adopted, voided


def _by_launcher(subs: Sequence[SubmissionInfo]) -> dict[str, list[SubmissionInfo]]:
    out: dict[str, list[SubmissionInfo]] = {}
    for s in subs:
        out.setdefault(s.launcher, []).append(s)
    return out


def _task_ids(backend: Backend, job_id: str) -> Callable[[int], str]:
    return lambda index: backend.task_id(job_id, index)


# ---------------------------------------------------------------- choosing points


def _decide(
    p: PlannedPoint,
    history: Sequence[AttemptInfo],
    done: set[str],
    taken: set[str],
    options: LaunchOptions,
) -> str | None:
    """Why a point is not submitted now, or None to submit it."""
    if p.point.id in done:
        return "finished"
    last = history[-1] if history else None
    if last is not None and last.state in ACTIVE:
        return "pending or running"
    if p.point.parent is not None and p.point.parent not in done and p.point.parent not in taken:
        return "waiting for its first stage"
    if last is not None and last.state in FAILURES and not options.retry_failed:
        return "failed (resubmit with --retry-failed)"
    if len(history) >= options.max_attempts:
        return f"had {len(history)} attempts (--max-attempts)"
    return None


def _finished(plan: Plan, history: dict[str, list[AttemptInfo]]) -> set[str]:
    done = set()
    for p in plan.points:
        attempts = history.get(p.point.id, [])
        if attempts and attempts[-1].state in RESULTS:
            done.add(p.point.id)
            continue
        if not attempts or attempts[-1].state not in ACTIVE:
            outcome = read_outcome(run_dir(plan.sweep.runs_root, p.point))
            if outcome is not None and outcome.status in RESULTS:
                done.add(p.point.id)
    return done


def _choose(
    plan: Plan, conn: Connection, options: LaunchOptions
) -> tuple[list[PlannedPoint], dict[str, int]]:
    history = attempts_of(conn, plan.sweep.name)
    done = _finished(plan, history)
    chosen: list[PlannedPoint] = []
    taken = {pid for pid, h in history.items() if h and h[-1].state in ACTIVE}
    skipped: dict[str, int] = {}
    # First stages come first in a plan, so a second stage sees its parent chosen.
    for p in sorted(plan.points, key=lambda q: q.point.parent is not None):
        why = _decide(p, history.get(p.point.id, []), done, taken, options)
        if why is None:
            chosen.append(p)
            taken.add(p.point.id)
        else:
            skipped[why] = skipped.get(why, 0) + 1
    return chosen, skipped


# ---------------------------------------------------------------- launching


def _batches(plan: Plan, backend: Backend, chosen: Sequence[PlannedPoint]) -> list[NewSubmission]:
    root = jobs_root(plan)
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in plan.sweep.name)[:40]
    out = []
    for stage in (False, True):
        group = [p for p in chosen if (p.point.parent is not None) == stage]
        for res, ids in backend.batches(group):
            token = f"clipscale-{name}-{uuid.uuid4().hex[:12]}"
            out.append(NewSubmission(token, backend.name, ids, str(root / token), res))
    return out


def launch(plan: Plan, engine: Engine, options: LaunchOptions = LaunchOptions()) -> LaunchReport:
    """Submit every point of the sweep that is not finished, pending or running."""
    backend = backend_for(plan)
    validate(plan, backend)
    adopted, voided = 0, 0
    if not options.dry_run:  # a dry run only reads
        # Records the sweep's points, settles earlier launches, and updates their jobs.
        _, adopted, voided = _reconcile(plan, engine, None)

    def reserve(conn: Connection) -> tuple[list[NewSubmission], dict[str, int]]:
        chosen, skipped = _choose(plan, conn, options)
        batches = _batches(plan, backend, chosen)
        if not options.dry_run:
            add_submissions(conn, plan.sweep.name, batches, owner())
        return batches, skipped

    batches, skipped = locked(engine, plan.sweep.name, reserve)
    if options.dry_run:
        return LaunchReport(tuple((b.token, "", len(b.point_ids)) for b in batches), skipped, adopted, voided)
    done = []
    for b in batches:
        job_id = _submit(plan, engine, backend, b)
        done.append((b.token, job_id, len(b.point_ids)))
    return LaunchReport(tuple(done), skipped, adopted, voided)


def _submit(plan: Plan, engine: Engine, backend: Backend, b: NewSubmission) -> str:
    from scaling.dispatch.job import PointJob, PointSpec

    by_id = {p.point.id: p.point for p in plan.points}
    specs = [PointSpec(by_id[i], plan.sweep.models[by_id[i].model], plan.sweep.eval,
                       str(Path(plan.sweep.runs_root).resolve())) for i in b.point_ids]  # fmt: skip
    after = _parents_jobs(plan, engine, [s.point for s in specs])
    try:
        job_id = backend.submit(b.token, Path(b.folder), [PointJob(s) for s in specs], b.resources, after)
    except ClipscaleError as e:
        set_submission(engine, b.token, "void", reason=str(e))
        raise
    set_submission(engine, b.token, "submitted", job_id, _task_ids(backend, job_id))
    info = SubmissionInfo(b.token, plan.sweep.name, backend.name, "submitted", job_id, len(b.point_ids),
                          b.folder, dict(b.resources), "", _now())  # fmt: skip
    backend.start([info])
    set_submission(engine, b.token, "released")
    return job_id


def _parents_jobs(plan: Plan, engine: Engine, points: Sequence[Any]) -> list[str]:
    """Job ids of the still-active first stages of these points (``afterok``)."""
    parents = {p.parent for p in points if p.parent is not None}
    if not parents:
        return []
    history = transaction(engine, lambda conn: attempts_of(conn, plan.sweep.name))
    jobs = []
    for pid in sorted(parents):
        h = history.get(pid, [])
        if h and h[-1].state in ACTIVE and h[-1].job_id:
            jobs.append(h[-1].job_id)
    return jobs


# ---------------------------------------------------------------- status


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]  # point status -> points
    total: int
    gpu_hours_planned: float
    gpu_hours_spent: float
    ingested: int
    active: int
    failures: tuple[tuple[str, str], ...]  # (point id, reason) of failed points


def reconcile(plan: Plan, engine: Engine, track: Callable[[Path], object] | None = None) -> Summary:
    """Bring the store up to date with the scheduler (one query for all jobs) and ingest
    every run that finished since the last call."""
    return _reconcile(plan, engine, track)[0]


def _reconcile(
    plan: Plan, engine: Engine, track: Callable[[Path], object] | None
) -> tuple[Summary, int, int]:
    """``reconcile``, also returning what ``recover`` adopted and voided."""
    family = plan.sweep.name
    record_points(engine, family, planned_rows(plan), description=plan.sweep.description)
    adopted, voided = recover(plan, engine)
    history = transaction(engine, lambda conn: attempts_of(conn, family))
    live = [h[-1] for h in history.values() if h and h[-1].state in ACTIVE and h[-1].submission]
    subs = {s.token: s for s in submissions(engine, family, ["submitted", "released"])}
    wanted = [subs[t] for t in sorted({a.submission for a in live if a.submission in subs})]
    states: dict[tuple[str, int], Any] = {}
    for launcher, group in _by_launcher(wanted).items():
        states.update(backend_for(plan, launcher).states(group))
    by_id = {p.point.id: p for p in plan.points}
    changes: list[dict[str, Any]] = []
    finished: list[AttemptInfo] = []
    for a in live:
        st = states.get((a.submission or "", a.array_index or 0))
        if st is None or st.state == a.state:
            continue
        change: dict[str, Any] = {"point_id": a.point_id, "key": a.key, "state": st.state, "node": st.node,
                                  "started_at": st.started_at, "ended_at": st.ended_at}  # fmt: skip
        sub = subs[a.submission or ""]
        change["log_path"] = str(backend_for(plan, sub.launcher).log_path(sub, a.array_index or 0))
        if st.state not in ACTIVE:
            change.update(_ending(plan, by_id.get(a.point_id), st, Path(change["log_path"])))
            finished.append(a)
        changes.append(change)
    update_attempts(engine, changes)
    ingested = _ingest(plan, engine, finished, track)
    return summarize(plan, engine, ingested), adopted, voided


def _ending(plan: Plan, p: PlannedPoint | None, st: Any, log: Path) -> dict[str, Any]:
    """A finished job's attempt state and reason: its outcome.json if it wrote one."""
    outcome = read_outcome(run_dir(plan.sweep.runs_root, p.point)) if p is not None else None
    if st.state == "completed":
        if outcome is None:
            return {
                "state": "failed",
                "exit_reason": "the job ended without writing outcome.json" + _tail(log),
            }
        return {"state": outcome.status, "exit_reason": outcome.error}
    if st.state == "failed" and outcome is not None and outcome.status == "failed":
        return {"state": "failed", "exit_reason": outcome.error}
    reason = st.reason or st.state
    return {"state": st.state, "exit_reason": reason + (_tail(log) if st.state != "cancelled" else "")}


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("; log: " + " | ".join(t.strip() for t in text)) if text else ""


def _ingest(
    plan: Plan, engine: Engine, ended: Sequence[AttemptInfo], track: Callable[[Path], object] | None
) -> int:
    by_id = {p.point.id: p for p in plan.points}
    count = 0
    for a in ended:
        p = by_id.get(a.point_id)
        if p is None:
            continue
        directory = run_dir(plan.sweep.runs_root, p.point)
        if read_outcome(directory) is None:
            continue
        ingest_run(engine, directory, plan.sweep.name, p.macs.total, attempt_key=a.key)
        if track is not None:
            track(directory)
        count += 1
    return count


def summarize(plan: Plan, engine: Engine, ingested: int = 0) -> Summary:
    history = transaction(engine, lambda conn: attempts_of(conn, plan.sweep.name))
    counts: dict[str, int] = {}
    spent = 0.0
    failures = []
    now = _now()
    done = _finished(plan, history)
    for p in plan.points:
        h = history.get(p.point.id, [])
        state = h[-1].state if h else "not submitted"
        if not h and p.point.id in done:
            state = "succeeded"
        counts[state] = counts.get(state, 0) + 1
        if h and state in FAILURES:
            failures.append((p.point.id, h[-1].exit_reason or state))
        for a in h:
            if a.started_at is not None:
                seconds = ((a.ended_at or now) - a.started_at).total_seconds()
                spent += max(0.0, seconds) / 3600 * p.point.train.gpus
    active = sum(n for s, n in counts.items() if s in ACTIVE)
    return Summary(counts, len(plan.points), plan.total_gpu_hours, spent, ingested, active, tuple(failures))


# ---------------------------------------------------------------- cancelling


def cancel(plan: Plan, engine: Engine, point_ids: Sequence[str] = ()) -> int:
    """Cancel the active attempts of the sweep (or of these points); returns how many."""
    family = plan.sweep.name
    known = {p.point.id for p in plan.points}
    unknown = [i for i in point_ids if i not in known]
    if unknown:
        raise ClipscaleError(f"sweep {family} has no point {unknown[0]!r}")
    recover(plan, engine)
    history = transaction(engine, lambda conn: attempts_of(conn, family))
    targets = [
        h[-1]
        for pid, h in history.items()
        if h and h[-1].state in ACTIVE and h[-1].state != "submitting" and (not point_ids or pid in point_ids)
    ]
    subs = {s.token: s for s in submissions(engine, family, ["submitted", "released"])}
    by_sub: dict[str, list[AttemptInfo]] = {}
    for a in targets:
        if a.submission in subs:
            by_sub.setdefault(a.submission, []).append(a)
    for token, attempts in by_sub.items():
        backend_for(plan, subs[token].launcher).cancel(subs[token], [a.array_index or 0 for a in attempts])
    now = _now()
    update_attempts(
        engine,
        [
            {
                "point_id": a.point_id,
                "key": a.key,
                "state": "cancelled",
                "ended_at": now,
                "exit_reason": "cancelled with scaling cancel",
            }
            for ts in by_sub.values()
            for a in ts
        ],
    )
    return sum(len(v) for v in by_sub.values())


def watch(plan: Plan, engine: Engine, every_s: float, show: Callable[[Summary], None],
          track: Callable[[Path], object] | None = None) -> Summary:  # fmt: skip
    """Reconcile until no attempt of the sweep is pending or running."""
    while True:
        summary = reconcile(plan, engine, track)
        show(summary)
        if summary.active == 0:
            return summary
        time.sleep(every_s)
