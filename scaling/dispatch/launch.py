"""Launch a sweep: fire-and-forget, idempotent, safe to kill.

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

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from scaling.clock import db_now
from scaling.dispatch.backends import Backend, Dep, backend_for, jobs_root, owner
from scaling.dispatch.follow import _planned, point_states
from scaling.dispatch.recover import _task_ids
from scaling.dispatch.status import _reconcile
from scaling.errors import ClipscaleError
from scaling.plan import Plan, PlannedPoint
from scaling.runspec import EVAL, TRAIN, RunSpec
from scaling.store import state
from scaling.store.attempts import (
    ACTIVE,
    FAILURES,
    NewSubmission,
    SubmissionInfo,
    add_submissions,
    attempts_of,
    locked,
    set_submission,
    submissions,
)
from scaling.store.db import read


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
