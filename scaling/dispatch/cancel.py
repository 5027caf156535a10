"""Cancel a sweep's pending and running attempts (``scaling cancel``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from scaling.clock import db_now
from scaling.dispatch.backends import backend_for
from scaling.dispatch.recover import recover
from scaling.errors import ClipscaleError
from scaling.plan import Plan
from scaling.store.attempts import ACTIVE, AttemptInfo, attempts_of, submissions, update_attempts
from scaling.store.db import read


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
