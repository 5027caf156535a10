"""The fit history: every law fitted, with what it was fitted on, so a refit after new points
land says how the law moved (`scaling fit --history`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scaling.clock import db_now
from scaling.fit.laws import Fitted
from scaling.fit.powerlaw import Law
from scaling.outcome import json_safe
from scaling.store.db import read, transaction
from scaling.store.models import Fit


def _selection(f: Fitted) -> str:
    return json.dumps(sorted(f.filters))


def record_fit(engine: Engine, fitted: Fitted, trigger: str = "fit") -> bool:
    """Add the fit to the history unless the last fit of the same selection had the same
    inputs and settings; returns whether a row was added. The history keeps power laws by the
    runs bootstrap (its columns are α and β, and no σ); other fits are reported, not recorded."""
    return record_fits(engine, [fitted], trigger)[0]


def record_fits(engine: Engine, fits: Sequence[Fitted], trigger: str = "fit") -> list[bool]:
    """:func:`record_fit` for each of ``fits`` (a refit's laws), in one transaction."""
    rows = [_row(f, trigger) for f in fits]

    def work(conn: sa.Connection) -> list[bool]:
        return [row is not None and _add(conn, row) for row in rows]

    return transaction(engine, work) if any(r is not None for r in rows) else [False] * len(rows)


def _row(fitted: Fitted, trigger: str) -> dict[str, Any] | None:
    law = fitted.law
    if not isinstance(law, Law) or law.noise:
        return None
    return {
        "family": fitted.family, "selection": _selection(fitted), "dataset": fitted.dataset,
        "metric": fitted.metric, "method": law.method, "bins": law.bins, "n_runs": law.n_runs,
        "n_frontier": len(law.frontier), "alpha": law.alpha, "alpha_low": json_safe(law.alpha_ci[0]),
        "alpha_high": json_safe(law.alpha_ci[1]), "beta": law.beta, "beta_low": json_safe(law.beta_ci[0]),
        "beta_high": json_safe(law.beta_ci[1]), "level": law.level, "r2": law.r2, "n_boot": law.n_boot,
        "inputs": fitted.inputs, "trigger": trigger,
    }  # fmt: skip


def _add(conn: sa.Connection, row: dict[str, Any]) -> bool:
    """Insert the row unless the selection's last fit had the same inputs and settings."""
    same = (Fit.family == row["family"], Fit.selection == row["selection"], Fit.dataset == row["dataset"],
            Fit.metric == row["metric"])  # fmt: skip
    last = conn.execute(
        sa.select(Fit.inputs, Fit.method, Fit.bins, Fit.n_boot, Fit.level)
        .where(*same).order_by(Fit.fitted_at.desc(), Fit.id.desc()).limit(1)
    ).first()  # fmt: skip
    if last is not None and tuple(last) == (row["inputs"], row["method"], row["bins"], row["n_boot"],
                                            row["level"]):  # fmt: skip
        return False
    conn.execute(sa.insert(Fit).values(**row, fitted_at=db_now()))
    return True


def history(
    engine: Engine, family: str, dataset: str | None = None, metric: str | None = None
) -> list[dict[str, Any]]:
    """Every recorded fit of the family (oldest first), optionally of one metric."""
    where = [Fit.family == family]
    if dataset:
        where.append(Fit.dataset == dataset)
    if metric:
        where.append(Fit.metric == metric)
    q = sa.select(*Fit.__table__.columns).where(*where).order_by(Fit.fitted_at, Fit.id)
    return read(engine, lambda conn: [dict(r._mapping) for r in conn.execute(q)])
