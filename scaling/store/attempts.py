"""Submissions and attempts: what a launch submitted, and what became of each try.

A launch writes its submissions (state ``intent``) and their attempts (``submitting``)
in one transaction *before* anything reaches a scheduler, so a launcher killed at any
instant leaves a record that the next launch or status can settle: the job was
submitted (adopt its id) or it was not (``void``). A point's training and its evaluation
are separate submissions (``stage``); an evaluation names the training it follows
(``after``). Attempt states:

- active: ``submitting``, ``pending``, ``running``, ``requeued`` (the point is taken);
- finished: ``succeeded``, ``diverged`` (a result), ``trained`` (training done, its
  evaluation to come), ``failed``, ``timeout``, ``out_of_memory``, ``node_fail``, ``lost``
  (failures), ``cancelled``;
- ``void``: never submitted, not counted as an attempt.

What a point's status is follows from its attempts in ``scaling.store.state`` alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from scaling.clock import db_now
from scaling.store import state
from scaling.store.db import transaction
from scaling.store.ingest import _family
from scaling.store.models import ACTIVE_STATES, Attempt, Family, FamilyPoint, Point, Submission
from scaling.store.state import FAILURES, RESULTS

ACTIVE = ACTIVE_STATES
__all__ = ["ACTIVE", "FAILURES", "RESULTS"]
T = TypeVar("T")


@dataclass(frozen=True)
class AttemptInfo:
    point_id: str
    key: str
    launcher: str
    submission: str | None
    job_id: str | None
    array_index: int | None
    state: str
    exit_reason: str | None
    log_path: str | None
    started_at: datetime | None
    ended_at: datetime | None
    stage: str = "train"


@dataclass(frozen=True)
class SubmissionInfo:
    token: str
    family: str
    launcher: str
    state: str
    job_id: str | None
    size: int
    folder: str
    resources: dict[str, Any]
    owner: str
    created_at: datetime
    stage: str = "train"
    after: str | None = None  # an evaluation's training submission


@dataclass(frozen=True)
class NewSubmission:
    """A batch about to be submitted: one job array, or one local runner."""

    token: str
    launcher: str
    point_ids: tuple[str, ...]  # in array-index order
    folder: str
    resources: Mapping[str, Any]
    stage: str = "train"
    after: str | None = None  # the token of the training batch an evaluation follows


def locked(engine: Engine, family: str, work: Callable[[Connection], T]) -> T:
    """Run ``work`` holding the sweep's lock: launches of one sweep never interleave
    (SQLite serialises writers already; PostgreSQL locks the family row)."""

    def run(conn: Connection) -> T:
        _family(conn, family, "sweep", "")
        conn.execute(sa.select(Family.name).where(Family.name == family).with_for_update())
        return work(conn)

    return transaction(engine, run)


def attempts_of(conn: Connection, family: str) -> dict[str, list[AttemptInfo]]:
    """Every non-void attempt of the sweep's points, oldest first, by point id."""
    rows = conn.execute(
        sa.select(Attempt.__table__)
        .join(FamilyPoint, FamilyPoint.point_id == Attempt.point_id)
        .where(FamilyPoint.family == family, Attempt.state != "void")
        .order_by(Attempt.id)
    )
    out: dict[str, list[AttemptInfo]] = {}
    for a in rows:
        out.setdefault(a.point_id, []).append(
            AttemptInfo(
                a.point_id,
                a.key,
                a.launcher,
                a.submission,
                a.job_id,
                a.array_index,
                a.state,
                a.exit_reason,
                a.log_path,
                a.started_at,
                a.ended_at,
                a.stage,
            )
        )
    return out


def launched_points(conn: Connection, family: str) -> list[tuple[str, float | None, dict[str, Any]]]:
    """(id, GMACs per sample, resolved point) of every point of the sweep that was launched."""
    launched = sa.select(Attempt.point_id).where(Attempt.state != "void")
    rows = conn.execute(
        sa.select(Point.id, Point.gmacs_per_sample, Point.config)
        .join(FamilyPoint, FamilyPoint.point_id == Point.id)
        .where(FamilyPoint.family == family, Point.id.in_(launched))
    )
    return [(r.id, r.gmacs_per_sample, json.loads(r.config or "{}")) for r in rows]


def add_submissions(conn: Connection, family: str, batches: Sequence[NewSubmission], owner: str) -> None:
    """Record batches as ``intent``, each of their points as a ``submitting`` attempt."""
    now = db_now()
    for b in batches:
        conn.execute(
            sa.insert(Submission).values(
                token=b.token,
                family=family,
                launcher=b.launcher,
                state="intent",
                job_id=None,
                size=len(b.point_ids),
                folder=b.folder,
                resources=json.dumps(dict(b.resources), sort_keys=True),
                owner=owner,
                created_at=now,
                updated_at=now,
                stage=b.stage,
                after=b.after,
            )
        )
        rows = [
            {"point_id": pid, "key": f"{b.token}:{i}", "launcher": b.launcher, "job_id": None,
             "array_index": i, "state": "submitting", "submission": b.token, "node": None,
             "started_at": None, "ended_at": None, "exit_reason": None, "log_path": None, "stage": b.stage}
            for i, pid in enumerate(b.point_ids)
        ]  # fmt: skip
        conn.execute(sa.insert(Attempt), rows)
        state.refresh(conn, b.point_ids, now)


def submissions(engine: Engine, family: str, states: Sequence[str]) -> list[SubmissionInfo]:
    def work(conn: Connection) -> list[SubmissionInfo]:
        rows = conn.execute(
            sa.select(Submission.__table__)
            .where(Submission.family == family, Submission.state.in_(states))
            .order_by(Submission.created_at, Submission.token)
        )
        return [
            SubmissionInfo(
                s.token,
                s.family,
                s.launcher,
                s.state,
                s.job_id,
                s.size,
                s.folder,
                json.loads(s.resources),
                s.owner,
                s.created_at,
                s.stage,
                s.after,
            )
            for s in rows
        ]

    return transaction(engine, work)


def set_submission(
    engine: Engine,
    token: str,
    to: str,
    job_id: str | None = None,
    task_ids: Callable[[int], str] | None = None,
    reason: str | None = None,
) -> None:
    """Move a submission on: ``submitted``/``released`` with its job id (the attempts get
    their task ids and become ``pending``), or ``void`` (so do its attempts)."""

    def work(conn: Connection) -> None:
        now = db_now()
        values: dict[str, Any] = {"state": to, "updated_at": now}
        if job_id is not None:
            values["job_id"] = job_id
        conn.execute(sa.update(Submission).where(Submission.token == token).values(**values))
        attempts = sa.update(Attempt).where(Attempt.submission == token)
        if to == "void":
            conn.execute(attempts.values(state="void", exit_reason=reason, ended_at=now))
            ids = conn.execute(sa.select(Attempt.point_id).where(Attempt.submission == token)).scalars()
            state.refresh(conn, list(ids), now)
        elif task_ids is not None:
            rows = conn.execute(
                sa.select(Attempt.id, Attempt.array_index).where(Attempt.submission == token)
            ).all()
            pending = (
                sa.update(Attempt)
                .where(Attempt.id == sa.bindparam("b_id"), Attempt.state == "submitting")
                .values(job_id=sa.bindparam("b_job"), state="pending")
            )
            if rows:  # one statement for the array, not one per task
                conn.execute(pending, [{"b_id": i, "b_job": task_ids(index or 0)} for i, index in rows])
            ids = conn.execute(sa.select(Attempt.point_id).where(Attempt.submission == token)).scalars()
            state.refresh(conn, list(ids), now)

    transaction(engine, work)


def update_attempts(engine: Engine, changes: Sequence[Mapping[str, Any]]) -> None:
    """Apply reconciled attempt states (each change names ``key`` and ``point_id``), and
    bring their points' status up to date."""
    if not changes:
        return

    def work(conn: Connection) -> None:
        now = db_now()
        # One executemany per set of changed columns, not one statement per attempt.
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for c in changes:
            groups.setdefault(tuple(sorted(k for k in c if k not in ("key", "point_id"))), []).append(c)
        for columns, group in groups.items():
            if not columns:
                continue
            stmt = (
                sa.update(Attempt)
                .where(Attempt.point_id == sa.bindparam("b_point"), Attempt.key == sa.bindparam("b_key"))
                .values({k: sa.bindparam(f"b_{k}") for k in columns})
            )
            params = [{"b_point": c["point_id"], "b_key": c["key"], **{f"b_{k}": c[k] for k in columns}}
                      for c in group]  # fmt: skip
            conn.execute(stmt, params)
        state.refresh(conn, {c["point_id"] for c in changes}, now)

    transaction(engine, work)
