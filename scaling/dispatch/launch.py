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
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from scaling.clock import db_now, db_time
from scaling.dispatch.backends import Backend, Dep, backend_for, jobs_root, owner, owner_gone
from scaling.dispatch.retire import retire
from scaling.errors import ClipscaleError
from scaling.outcome import Outcome, read_outcome, read_trained
from scaling.plan import Plan, PlannedPoint
from scaling.runspec import EVAL, TRAIN, RunSpec
from scaling.store import Ended, ingest_runs, record_points, state
from scaling.store.attempts import (
    ACTIVE,
    FAILURES,
    RESULTS,
    AttemptInfo,
    NewSubmission,
    SubmissionInfo,
    add_submissions,
    attempts_of,
    launched_points,
    locked,
    set_submission,
    submissions,
    update_attempts,
)
from scaling.store.db import read
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
    limits: str | None = None  # what was found of the cluster's limits

    @property
    def submitted(self) -> int:
        return sum(n for _, _, n in self.batches)


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
    now = db_now()
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
                set_submission(engine, s.token, "submitted", job, _task_ids(backend, job, s.size))
                adopted += 1
    to_start = submissions(engine, family, ["submitted"])
    to_start = [s for s in to_start if owner_gone(s.owner, (now - s.created_at).total_seconds())]
    for launcher, subs in _by_launcher(to_start).items():
        broken = backend_for(plan, launcher).start(subs)
        for s in subs:
            if s.token in broken:  # its launcher died before submitit put its pickles in place
                set_submission(
                    engine, s.token, "void", reason="cancelled: its launcher stopped mid-submission"
                )
            else:
                set_submission(engine, s.token, "released")
    return adopted, voided


def _by_launcher(subs: Sequence[SubmissionInfo]) -> dict[str, list[SubmissionInfo]]:
    out: dict[str, list[SubmissionInfo]] = {}
    for s in subs:
        out.setdefault(s.launcher, []).append(s)
    return out


def _task_ids(backend: Backend, job_id: str, size: int) -> Callable[[int], str]:
    return lambda index: backend.task_id(job_id, index, size)


# ---------------------------------------------------------------- the points followed


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


# ---------------------------------------------------------------- choosing points


def _decide(p: PlannedPoint, states: dict[str, state.PointState], taken: set[str],
            options: LaunchOptions) -> str | None:  # fmt: skip
    """Why a point is not submitted now, or None to submit it."""
    st = states[p.point.id]
    if st.done:
        return "finished"
    if st.active:
        return "pending or running"
    if p.point.parent is not None and p.point.parent not in taken:
        parent = states.get(p.point.parent)
        if p.point.resumes_parent:  # a trajectory's run needs its parent's checkpoint, not its evaluation
            if not (parent and parent.trained):
                if parent is not None and parent.status in FAILURES:
                    return "its trunk segment failed"
                return "waiting for its trunk segment"
        elif not (parent and parent.done):
            if parent is not None and parent.status in FAILURES:
                return "first stage failed"
            return "waiting for its first stage"
    if st.status in FAILURES and not options.retry_failed:
        return "failed (resubmit with --retry-failed)"
    if st.tries >= options.max_attempts:
        return f"had {st.tries} attempts (--max-attempts)"
    return None


def _choose(
    plan: Plan, conn: Connection, options: LaunchOptions, allowance: int | None = None
) -> tuple[list[tuple[PlannedPoint, str]], dict[str, int]]:
    """The points to submit now, each with the stage to submit (train or eval), as many as
    the cluster's submit limit allows (``allowance`` jobs: a training and its evaluation
    are two)."""
    history = attempts_of(conn, plan.sweep.name)
    root = Path(plan.sweep.runs_root)
    states = point_states({p.point.id: _planned(root, p) for p in plan.points}, history)
    chosen: list[tuple[PlannedPoint, str]] = []
    taken = {pid for pid, st in states.items() if st.active}
    skipped: dict[str, int] = {}
    # First stages come first in a plan, so a second stage sees its parent chosen.
    for p in sorted(plan.points, key=lambda q: q.point.parent is not None):
        why = _decide(p, states, taken, options)
        jobs = 2 if states[p.point.id].next_stage == TRAIN and p.point.evaluated else 1
        if why is None and allowance is not None:
            if jobs > allowance:
                why = "waiting: over the cluster's submit limit (launch again as jobs finish)"
            else:
                allowance -= jobs
        if why is None:
            chosen.append((p, states[p.point.id].next_stage))
            taken.add(p.point.id)
        else:
            skipped[why] = skipped.get(why, 0) + 1
    return chosen, skipped


# ---------------------------------------------------------------- launching


def _token(plan: Plan) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in plan.sweep.name)[:40]
    return f"clipscale-{name}-{uuid.uuid4().hex[:12]}"


def _batches(plan: Plan, backend: Backend, chosen: Sequence[tuple[PlannedPoint, str]]) -> list[NewSubmission]:
    """Job arrays to submit, in order: first-stage training arrays each followed by its
    evaluation array (task i evaluates task i's point); evaluations whose training is done;
    then each second stage alone (it waits for its own first stage's evaluation, which must
    exist by then), followed by its evaluation."""
    root = jobs_root(plan)

    def new(ids: tuple[str, ...], res: dict[str, Any], stage: str, after: str | None = None) -> NewSubmission:
        token = _token(plan)
        return NewSubmission(token, backend.name, ids, str(root / token), res, stage, after)

    out: list[NewSubmission] = []
    train = [p for p, stage in chosen if stage == TRAIN]
    evaluate = [p.point.id for p, stage in chosen if stage == EVAL]

    def trainings(group: list[PlannedPoint], single: bool) -> None:
        # An array's points are all evaluated or none (a trunk's segments): its evaluation
        # array mirrors it task for task. Single jobs keep the plan's order: a parent first.
        parts = (
            [((p.point.id,), p.point.evaluated, res) for p in group for res, _ in backend.batches([p])]
            if single
            else [(ids, flag, res) for flag in (True, False)
                  for res, ids in backend.batches([p for p in group if p.point.evaluated == flag])]
        )  # fmt: skip
        for ids, evaluated, res in parts:
            t = new(ids, res, TRAIN)
            evals = backend.eval_batches(ids) if evaluated else []
            out.extend([t, *(new(e, r, EVAL, t.token) for r, e in evals)])

    trainings([p for p in train if p.point.parent is None], single=False)
    out.extend(new(ids, res, EVAL) for res, ids in backend.eval_batches(evaluate))
    trainings([p for p in train if p.point.parent], single=True)
    return out


def launch(plan: Plan, engine: Engine, options: LaunchOptions = LaunchOptions()) -> LaunchReport:
    """Submit every point of the sweep that is not finished, pending or running."""
    backend = backend_for(plan)
    validate(plan, backend)
    adopted, voided = 0, 0
    if not options.dry_run:  # a dry run only reads
        # Records the sweep's points, settles earlier launches, and updates their jobs.
        _, adopted, voided = _reconcile(plan, engine, None)
        _repair_evaluations(plan, engine, backend)

    def reserve(conn: Connection) -> tuple[list[NewSubmission], dict[str, int]]:
        chosen, skipped = _choose(plan, conn, options, backend.allowance())
        batches = _batches(plan, backend, chosen)
        if not options.dry_run:
            add_submissions(conn, plan.sweep.name, batches, owner())
        return batches, skipped

    batches, skipped = locked(engine, plan.sweep.name, reserve)
    points = [b for b in batches if b.stage == TRAIN or b.after is None]  # each point counted once
    if options.dry_run:
        report = [(b.token, "", len(b.point_ids)) for b in points]
        return LaunchReport(tuple(report), skipped, adopted, voided, backend.limits())
    jobs: dict[str, str] = {}
    for i, b in enumerate(batches):
        try:
            jobs[b.token] = _submit(plan, engine, backend, b, jobs)
        except ClipscaleError:
            for rest in batches[i + 1 :]:  # an evaluation whose training was refused, and later ones
                set_submission(
                    engine, rest.token, "void", reason="not submitted: an earlier array was refused"
                )
            raise
    report = [(b.token, jobs[b.token], len(b.point_ids)) for b in points]
    return LaunchReport(tuple(report), skipped, adopted, voided, backend.limits())


def _submit(plan: Plan, engine: Engine, backend: Backend, b: NewSubmission, jobs: dict[str, str]) -> str:
    """Submit one batch held, record its job id, release it; its job id."""
    from scaling.dispatch.job import PointJob

    by_id = {p.point.id: p for p in plan.points}
    specs = [run_spec(plan, by_id[i]) for i in b.point_ids]
    after = _dependencies(plan, engine, backend, b, jobs)
    try:
        job_id = backend.submit(b.token, Path(b.folder), [PointJob(s, b.stage) for s in specs], b.resources,
                                after)  # fmt: skip
    except ClipscaleError as e:
        set_submission(engine, b.token, "void", reason=str(e))
        raise
    set_submission(engine, b.token, "submitted", job_id, _task_ids(backend, job_id, len(b.point_ids)))
    info = SubmissionInfo(b.token, plan.sweep.name, backend.name, "submitted", job_id, len(b.point_ids),
                          b.folder, dict(b.resources), "", db_now(), b.stage, b.after)  # fmt: skip
    if backend.start([info]):
        raise AssertionError(f"submitit left the pickles of {job_id} out of place")
    set_submission(engine, b.token, "released")
    return job_id


def run_spec(plan: Plan, p: PlannedPoint) -> RunSpec:
    s = plan.sweep
    return RunSpec(p.point, s.models[p.point.model], s.eval, str(Path(s.runs_root).resolve()), s.checkpoints,
                   p.macs.total, s.gpu.peak_tflops)  # fmt: skip


def _dependencies(
    plan: Plan, engine: Engine, backend: Backend, b: NewSubmission, jobs: dict[str, str]
) -> list[list[Dep]]:
    """What each task of a batch waits for: an evaluation for task i of its training batch;
    a second stage for its first stage's active evaluation (none once that succeeded); a
    trajectory's segment or branch for its parent's active training (none once trained)."""
    if b.after is not None:
        train = next(s for s in submissions(engine, plan.sweep.name, ["submitted", "released"])
                     if s.token == b.after)  # fmt: skip
        assert train.job_id is not None
        job = jobs.get(b.after, train.job_id)
        size = len(b.point_ids)
        return [[Dep(train.folder, job, i, backend.task_id(job, i, size))] for i in range(size)]
    if b.stage != TRAIN:
        return [[] for _ in b.point_ids]
    by_id = {p.point.id: p.point for p in plan.points}
    history = read(engine, lambda conn: attempts_of(conn, plan.sweep.name))
    subs = {s.token: s for s in submissions(engine, plan.sweep.name, ["submitted", "released"])}
    out: list[list[Dep]] = []
    for pid in b.point_ids:
        parent = by_id[pid].parent
        live = [a for a in history.get(parent or "", []) if a.state in ACTIVE and a.submission in subs]
        if by_id[pid].resumes_parent:  # a trajectory's run waits for its parent's training alone
            live = [a for a in live if a.stage == TRAIN]
        out.append([Dep(subs[a.submission].folder, subs[a.submission].job_id or "", a.array_index or 0,
                        a.job_id or "") for a in live[-1:] if a.submission])  # fmt: skip
    return out


def _repair_evaluations(plan: Plan, engine: Engine, backend: Backend) -> None:
    """A launcher killed between a training array and its evaluation array leaves the
    training without one: submit it now, task for task."""
    subs = submissions(engine, plan.sweep.name, ["intent", "submitted", "released"])
    paired = {s.after for s in subs if s.stage == EVAL}
    history = read(engine, lambda conn: attempts_of(conn, plan.sweep.name))
    active = {a.submission for h in history.values() for a in h if a.state in ACTIVE}
    alone = [s for s in subs if s.stage == TRAIN and s.token in active and s.token not in paired]
    ids = {(a.submission, a.array_index): pid for pid, h in history.items() for a in h}
    unevaluated = {q.point.id for q in plan.points if not q.point.evaluated}
    for s in alone:
        point_ids = tuple(ids[(s.token, i)] for i in range(s.size))
        if unevaluated.intersection(point_ids):
            continue  # a trunk's segments: trained, never evaluated
        res = backend.eval_batches(point_ids)[0][0]
        token = _token(plan)
        e = NewSubmission(token, backend.name, point_ids, str(jobs_root(plan) / token), res, EVAL, s.token)
        locked(engine, plan.sweep.name, partial(_record, family=plan.sweep.name, batch=e))
        _submit(plan, engine, backend, e, {})


def _record(conn: Connection, family: str, batch: NewSubmission) -> None:
    add_submissions(conn, family, [batch], owner())


# ---------------------------------------------------------------- status


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
    ingested = _ingest(plan, engine, by_id, finished, track, files)
    # After the outcomes: an attempt's end says what the outcome said and what the scheduler saw.
    update_attempts(engine, changes)
    # The attempts as the changes left them: read once a poll, not again to summarise.
    history = _applied(history, changes)
    summary, point_state = _summarize(plan, engine, ingested, by_id, history, subs, files)
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
) -> int:
    """Store the outcomes that ended attempts wrote (a result, or a failure it recorded): one
    transaction for the poll's outcomes, then each handed to ``track`` (MLflow) once stored."""
    runs = []
    for a, new_state in ended:
        p = points.get(a.point_id)
        if p is None or new_state not in (*RESULTS, "failed"):
            continue
        outcome = files.outcome(p.directory)
        if outcome is None or (new_state == "failed" and outcome.status != "failed"):
            continue
        runs.append(Ended(p.directory, p.gmacs, a.key, outcome))
    for chunk in (runs[i : i + INGEST_BATCH] for i in range(0, len(runs), INGEST_BATCH)):
        ingest_runs(engine, plan.sweep.name, chunk)
        if track is not None:
            for r in chunk:
                track(r.run_dir)
    return len(runs)


def summarize(
    plan: Plan, engine: Engine, ingested: int = 0, points: dict[str, Followed] | None = None
) -> Summary:
    """Counts by state of the sweep's points (the plan's and any launched under other
    overrides), and the allocation spent against the plan."""
    return _summarize(plan, engine, ingested, points)[0]


def _summarize(
    plan: Plan,
    engine: Engine,
    ingested: int = 0,
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
        counts, len(points), planned, plan.sweep.gpu.hours, spent, ingested, active, tuple(failures), done
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


# ---------------------------------------------------------------- cancelling


def cancel(plan: Plan, engine: Engine, point_ids: Sequence[str] = ()) -> int:
    """Cancel the active attempts of the sweep (or of these points); returns how many."""
    family = plan.sweep.name
    known = {p.point.id for p in plan.points}
    unknown = [i for i in point_ids if i not in known]
    if unknown:
        raise ClipscaleError(f"sweep {family} has no point {unknown[0]!r}")
    recover(plan, engine)
    history = read(engine, lambda conn: attempts_of(conn, family))
    targets = [  # a point's training and its evaluation waiting for it
        a
        for pid, h in history.items()
        for a in h
        if a.state in ACTIVE and a.state != "submitting" and (not point_ids or pid in point_ids)
    ]
    subs = {s.token: s for s in submissions(engine, family, ["submitted", "released"])}
    by_sub: dict[str, list[AttemptInfo]] = {}
    for a in targets:
        if a.submission in subs:
            by_sub.setdefault(a.submission, []).append(a)
    for token, attempts in by_sub.items():
        backend_for(plan, subs[token].launcher).cancel(subs[token], [a.array_index or 0 for a in attempts])
    now = db_now()
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
    return len({a.point_id for ts in by_sub.values() for a in ts})


def watch(plan: Plan, engine: Engine, every_s: float, show: Callable[[Summary], None],
          track: Callable[[Path], object] | None = None) -> Summary:  # fmt: skip
    """Reconcile until no attempt of the sweep is pending or running."""
    while True:
        summary = reconcile(plan, engine, track)
        show(summary)
        if summary.active == 0:
            return summary
        time.sleep(every_s)
