"""Is this point done? The one place that answers, from the point's attempts, and the one
writer of ``points.status``.

A point runs in two stages, each a job of its own: training (on all its ranks), then
evaluation. Each try at a stage is an attempt (``attempts.stage``). The point's state:

- ``succeeded`` or ``diverged`` once an attempt ended with that result (final);
- while an attempt is active: its state (``submitting``, ``pending``, ``running``,
  ``requeued``), or ``evaluating`` for an evaluation;
- else the last attempt's end: ``trained`` (evaluation still to run), ``failed``,
  ``timeout``, ``cancelled``, ...;
- ``planned`` with no attempt; imported points keep the status of their table.

What to submit next follows from the same attempts: an evaluation when training has
finished (trained.json), else training. Nothing else decides either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scaling.outcome import RESULTS
from scaling.runspec import EVAL, TRAIN
from scaling.store.models import ACTIVE_STATES, Attempt, Point

FAILURES = frozenset({"failed", "timeout", "out_of_memory", "node_fail", "lost"})
__all__ = ["EVAL", "RESULTS", "TRAIN"]


@dataclass(frozen=True)
class Try:
    """What the decision needs of one attempt."""

    stage: str
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class PointState:
    status: str
    active: bool
    done: bool  # a final result: never run again
    next_stage: str  # what a launch would submit
    tries: int  # attempts at next_stage so far
    reason: str | None  # why the last attempt ended (a failure's cause)

    @property
    def trained(self) -> bool:
        """Whether its training has finished with a checkpoint: what a run resuming it needs
        (a trajectory's branch or next segment), evaluated or not."""
        return self.next_stage == EVAL or self.status in ("trained", "succeeded")


def decide(
    tries: Sequence[Try], trained: bool = False, result: str | None = None, evaluated: bool = True
) -> PointState:
    """A point's state from its attempts (oldest first), whether its training has finished
    (``trained.json``), and the result on disk (an outcome's status) if any. A point that is
    not ``evaluated`` (a trajectory's trunk segment) is done once trained."""
    if not evaluated and (trained or any(t.stage == TRAIN and t.state == "trained" for t in tries)):
        count = sum(1 for t in tries if t.stage == TRAIN)
        return PointState("trained", False, True, TRAIN, count, None)
    stage = EVAL if trained else TRAIN
    count = sum(1 for t in tries if t.stage == stage)
    last = tries[-1] if tries else None
    result_try = next((t for t in reversed(tries) if t.state in RESULTS), None)
    if result_try is not None:  # a result is final, whatever came after (a cancelled evaluation)
        why = result_try.reason if result_try.state == "diverged" else None  # how its loss went
        return PointState(result_try.state, False, True, stage, count, why)
    if result in RESULTS and (last is None or not _active(last)):  # ended, its attempt not yet told
        return PointState(str(result), False, True, stage, count, None)
    if last is None:
        return PointState("planned", False, False, stage, count, None)
    active = [t for t in tries if _active(t)]
    if active:  # a training still running comes before the evaluation waiting for it
        first = next((t for t in active if t.stage == TRAIN), active[-1])
        status = "evaluating" if first.stage == EVAL else first.state
        return PointState(status, True, False, stage, count, None)
    return PointState(last.state, False, False, stage, count, last.reason)


def _active(t: Try) -> bool:
    return t.state in ACTIVE_STATES


def tries_of(conn: Connection, point_ids: Iterable[str]) -> dict[str, list[Try]]:
    """Every non-void attempt of these points, oldest first."""
    ids = list(point_ids)
    out: dict[str, list[Try]] = {i: [] for i in ids}
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        rows = conn.execute(
            sa.select(Attempt.point_id, Attempt.stage, Attempt.state, Attempt.exit_reason)
            .where(Attempt.point_id.in_(chunk), Attempt.state != "void")
            .order_by(Attempt.id)
        )
        for r in rows:
            out[r.point_id].append(Try(r.stage, r.state, r.exit_reason))
    return out


def refresh(conn: Connection, point_ids: Iterable[str], now: datetime) -> None:
    """Write ``points.status`` (and ``points.error``, why a point failed or diverged) of these
    points from their attempts. Points without one keep theirs (planned, or an imported
    table's)."""
    rows = []
    for pid, tries in tries_of(conn, point_ids).items():
        if tries:
            st = decide(tries)
            error = st.reason if st.status in FAILURES or st.status in ("cancelled", "diverged") else None
            rows.append({"pid": pid, "st": st.status, "err": error})
    if rows:  # one statement for all (executemany); a row already as decided is left alone
        status, err = sa.bindparam("st", type_=sa.String), sa.bindparam("err", type_=sa.Text)
        changed = sa.or_(Point.status != status, Point.error.is_distinct_from(err))
        stmt = sa.update(Point).where(Point.id == sa.bindparam("pid"), changed)
        conn.execute(stmt.values(status=status, error=err, updated_at=now), rows)
