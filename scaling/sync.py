"""Bring the store up to date with a sweep: its planned points, and every finished run.

The controller's side of the hand-over: compute nodes only write ``outcome.json`` files
(they never open the database), and this reads them in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from sqlalchemy.engine import Engine

from scaling.outcome import OUTCOME_FILE
from scaling.plan import Plan
from scaling.store import Ended, PointRow, ingest_runs, record_points
from scaling.train import run_dir


def planned_rows(plan: Plan) -> list[PointRow]:
    return [
        PointRow(
            id=p.point.id,
            model=p.point.model,
            data=p.point.data,
            samples_seen=p.point.samples_seen,
            gmacs_per_sample=p.macs.total,
            status="planned",
            source="run",
            config=asdict(p.point),
            compute=p.compute_gmacs,  # a second stage's includes its first stage's
        )
        for p in plan.points
    ]


def sync_sweep(plan: Plan, engine: Engine, track: Callable[[Path], object] | None = None) -> dict[str, int]:
    """Record the sweep's points, then ingest each run directory that has an outcome
    (and hand it to ``track``, e.g. MLflow logging, once it is stored)."""
    record_points(engine, plan.sweep.name, planned_rows(plan), description=plan.sweep.description)
    runs = [Ended(d, p.macs.total) for p in plan.points
            if ((d := run_dir(plan.sweep.runs_root, p.point)) / OUTCOME_FILE).is_file()]  # fmt: skip
    ingest_runs(engine, plan.sweep.name, runs)  # one transaction: all of them or none
    if track is not None:
        for r in runs:
            track(r.run_dir)
    return {"points": len(plan.points), "ingested": len(runs)}
