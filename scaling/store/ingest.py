"""Write into the store: planned points, run outcomes, published tables. All idempotent.

Every write is an upsert keyed by the point id (and attempt key, metric name), so
ingesting the same outcome twice, or from two processes at once, leaves one row each.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from scaling.clock import db_now, db_time
from scaling.errors import ClipscaleError
from scaling.modeltypes import trained_type
from scaling.outcome import POINT_FILE, STATUSES, Outcome, read_outcome
from scaling.store import state
from scaling.store.db import transaction
from scaling.store.models import ACTIVE_STATES, Attempt, Family, FamilyPoint, Metric, Point

METRIC_COLUMNS = (
    "acc1", "acc5", "mean_per_class_recall", "image_retrieval_recall@5", "text_retrieval_recall@5",
    "mean_average_precision",
)  # fmt: skip
TABLE_COLUMNS = {"arch", "samples_seen", "gmacs", "upstream_dataset", "downstream_dataset", "name"}


@dataclass(frozen=True)
class PointRow:
    id: str
    model: str
    data: str
    samples_seen: int | None  # None: not published (then ``no_compute`` says so)
    gmacs_per_sample: float | None
    status: str
    source: str
    config: dict[str, Any]
    samples_per_s: float | None = None
    mfu: float | None = None
    compute: float | None = None  # in the family's own units, where not GMACs per sample × samples
    params: float | None = None
    data_size: int | None = None
    no_compute: str | None = None  # why its compute is not known

    def values(self, now: datetime) -> dict[str, Any]:
        compute = self.compute
        if compute is None and self.gmacs_per_sample is not None and self.samples_seen is not None:
            compute = self.gmacs_per_sample * self.samples_seen
        return {
            "id": self.id, "model": self.model, "data": self.data, "samples_seen": self.samples_seen,
            "gmacs_per_sample": self.gmacs_per_sample, "compute_gmacs": compute, "status": self.status,
            "source": self.source, "config": json.dumps(self.config, sort_keys=True), "updated_at": now,
            "samples_per_s": self.samples_per_s, "mfu": self.mfu, "params": self.params,
            "data_size": self.data_size, "no_compute": self.no_compute,
            **trajectory_columns(self.config, self.model),
        }  # fmt: skip


def trajectory_columns(config: dict[str, Any], model: str) -> dict[str, Any]:
    """How a point was trained, from its resolved config (a grid point's): its model type
    (an imported run's, from its model's name) and how it lies along its samples-seen axis."""
    raw_train, raw_traj = config.get("train"), config.get("trajectory")
    train: dict[str, Any] = raw_train if isinstance(raw_train, dict) else {}
    traj: dict[str, Any] | None = raw_traj if isinstance(raw_traj, dict) else None
    cooldown = None
    if traj and traj.get("cooldown_epochs") and train.get("epochs"):
        cooldown = traj["cooldown_epochs"] / train["epochs"]
    return {
        "schedule": train.get("lr_scheduler"),
        "trunk": traj.get("trunk") if traj else None,
        "cooldown": cooldown,
        "from_checkpoint": bool(traj and traj.get("from_checkpoint")),
        "model_type": trained_type(model, train.get("model_type")),
    }


def upsert(conn: Connection, table: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str],
           update: Sequence[str] = ()) -> None:  # fmt: skip
    """INSERT … ON CONFLICT DO UPDATE (or NOTHING) on SQLite and PostgreSQL."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        raise ClipscaleError(f"the store supports SQLite and PostgreSQL, not {conn.dialect.name}")
    stmt = insert(table.__table__)
    if update:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in update}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, list(rows))


def _family(conn: Connection, name: str, kind: str, description: str) -> None:
    row = {"name": name, "kind": kind, "description": description, "created_at": db_now()}
    upsert(conn, Family, [row], ["name"])
    existing = conn.execute(sa.select(Family.kind).where(Family.name == name)).scalar_one()
    if existing != kind:
        raise ClipscaleError(f"family {name!r} is already a {existing}, not a {kind}")


def _points(conn: Connection, family: str, points: Sequence[PointRow], keep_status: bool,
            throughput: bool = False) -> None:  # fmt: skip
    """Upsert points; their status only where ``keep_status`` is false (imported tables: a
    run's status is ``state``'s to write), their throughput only if ``throughput``."""
    now = db_now()
    columns = ["model", "data", "samples_seen", "gmacs_per_sample", "compute_gmacs", "source", "config",
               "updated_at", "schedule", "trunk", "cooldown", "from_checkpoint", "params", "data_size",
               "no_compute", "model_type", *(["samples_per_s", "mfu"] if throughput else [])]  # fmt: skip
    upsert(
        conn, Point, [p.values(now) for p in points], ["id"], columns if keep_status else [*columns, "status"]
    )
    upsert(conn, FamilyPoint, [{"family": family, "point_id": p.id} for p in points], ["family", "point_id"])


def record_points(
    engine: Engine, family: str, points: Sequence[PointRow], kind: str = "sweep", description: str = "",
    new_only: bool = False,
) -> None:  # fmt: skip
    """Register points of a sweep as planned; a point that already has a status keeps it.
    With ``new_only``, points the family already holds are left as they are: a point's id
    is a hash of what it is, so a status poll has only new points to add, not every row to
    write again."""

    def work(conn: Connection) -> None:
        _family(conn, family, kind, description)
        rows = points
        if new_only:
            held = set(
                conn.execute(sa.select(FamilyPoint.point_id).where(FamilyPoint.family == family)).scalars()
            )
            rows = [p for p in points if p.id not in held]
        _points(conn, family, rows, keep_status=True)

    transaction(engine, work)


# ---------------------------------------------------------------- run outcomes


def _metric_rows(point_id: str, metrics: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(metrics, dict):
        raise ClipscaleError(f"{where}: metrics must map evaluation sets to metrics")
    rows = []
    for dataset, values in metrics.items():
        if not isinstance(values, dict):
            raise ClipscaleError(f"{where}: metrics of {dataset!r} must map names to numbers")
        for metric, value in values.items():
            rows.append(_metric(point_id, str(dataset), str(metric), value, where))
    return rows


def _metric(point_id: str, dataset: str, metric: str, value: Any, source: str) -> dict[str, Any]:
    """A metric row; a value that is not a finite number is stored as missing, with why."""
    row: dict[str, Any] = {
        "point_id": point_id,
        "dataset": dataset,
        "metric": metric,
        "value": None,
        "reason": None,
    }
    if value is None:
        row["reason"] = f"missing in {source}"
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClipscaleError(f"{source}: {dataset}/{metric} is not a number ({value!r})")
    elif not math.isfinite(value):
        row["reason"] = f"{value} in {source}"
    else:
        row["value"] = float(value)
    return row


def outcome_rows(
    run_dir: Path, gmacs_per_sample: float | None, outcome: Outcome | None = None
) -> tuple[PointRow, dict[str, Any], list[dict[str, Any]]]:
    """The point, attempt and metric rows of one finished run directory (its outcome read
    here unless given)."""
    outcome = outcome or read_outcome(run_dir)
    if outcome is None:
        raise ClipscaleError(f"{run_dir} has no outcome.json")
    where = str(run_dir / "outcome.json")
    if outcome.status not in STATUSES:
        raise ClipscaleError(f"{where}: unknown status {outcome.status!r}")
    try:
        config = json.loads((run_dir / POINT_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ClipscaleError(f"{run_dir / POINT_FILE} is not readable: {e}") from None
    if config.get("id") != outcome.id:
        raise ClipscaleError(f"{where} belongs to {outcome.id!r}, but point.json to {config.get('id')!r}")
    samples = outcome.samples_seen or outcome.samples_seen_planned
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ClipscaleError(f"{where}: samples_seen must be a whole number of samples, got {samples!r}")
    point = PointRow(outcome.id, config["model"], config["data"], samples, gmacs_per_sample, outcome.status,
                     "run", config, outcome.samples_per_s, outcome.mfu)  # fmt: skip
    return point, _attempt(run_dir, outcome), _metric_rows(outcome.id, outcome.metrics, where)


def _attempt(run_dir: Path, outcome: Outcome) -> dict[str, Any]:
    return {
        "point_id": outcome.id, "key": f"local:{outcome.started_at}", "launcher": "local", "job_id": None,
        "array_index": None, "state": outcome.status, "node": outcome.host or None,
        "started_at": db_time(outcome.started_at), "ended_at": db_time(outcome.finished_at),
        "exit_reason": outcome.error, "log_path": str(run_dir / "out.log"),
    }  # fmt: skip


_STILL_ACTIVE = ""


def _dispatched_attempts(conn: Connection, point_ids: Sequence[str]) -> dict[str, str]:
    """The key of each point's newest launched attempt, which an outcome on disk belongs to
    (a run ingested by hand, outside ``scaling status``, has none and gets its own row).
    While that attempt is still queued or running, the outcome is an earlier one's:
    ``_STILL_ACTIVE``, and no attempt is touched."""
    newest: dict[str, tuple[str, str]] = {}
    for chunk in (point_ids[i : i + 500] for i in range(0, len(point_ids), 500)):
        rows = conn.execute(
            sa.select(Attempt.point_id, Attempt.key, Attempt.state)
            .where(Attempt.point_id.in_(chunk), Attempt.submission.is_not(None), Attempt.state != "void")
            .order_by(Attempt.id)
        )
        newest |= {r.point_id: (str(r.key), r.state) for r in rows}  # ordered by id: the newest stays
    return {pid: _STILL_ACTIVE if st in ACTIVE_STATES else key for pid, (key, st) in newest.items()}


def _with_first_stage(conn: Connection, point: PointRow) -> PointRow:
    """A second stage (CLIPA's fine-tune) costs its own samples plus its first stage's
    compute, as its parent's row has it; a trajectory's samples seen already count its trunk."""
    config = point.config
    first = config.get("parent") if (config.get("stage") or 1) > 1 and not config.get("trajectory") else None
    if first is None or point.gmacs_per_sample is None or point.samples_seen is None:
        return point
    prior = conn.execute(sa.select(Point.compute_gmacs).where(Point.id == first)).scalar()
    if prior is None:
        return point
    return replace(point, compute=point.gmacs_per_sample * point.samples_seen + prior)


def ingest_run(
    engine: Engine,
    run_dir: Path,
    family: str,
    gmacs_per_sample: float | None = None,
    attempt_key: str | None = None,
) -> str:
    """Store one run's outcome under ``family`` (a sweep); returns the point id. The
    outcome fills the attempt ``attempt_key`` (a dispatched job) if given, else an
    attempt of its own (a run started by hand)."""
    return ingest_runs(engine, family, [Ended(run_dir, gmacs_per_sample, attempt_key)])[0]


@dataclass(frozen=True)
class Ended:
    """A run directory whose outcome is to be stored, and the attempt it ended (None: the
    point's newest dispatched one, or one of its own for a run started by hand)."""

    run_dir: Path
    gmacs_per_sample: float | None = None
    attempt_key: str | None = None
    outcome: Outcome | None = None  # its outcome.json, where the caller has read it already


_UPDATE = ("state", "node", "started_at", "ended_at", "exit_reason", "log_path")


def ingest_runs(engine: Engine, family: str, runs: Sequence[Ended]) -> list[str]:
    """Store many runs' outcomes in one transaction, a statement per table rather than per
    run (a status poll at scale ends thousands at once); the point ids, in order. Every
    outcome is read first: a bad one stores none."""
    read = [(r, *outcome_rows(r.run_dir, r.gmacs_per_sample, r.outcome)) for r in runs]
    if not read:
        return []

    def work(conn: Connection) -> None:
        _family(conn, family, "sweep", "")
        ids = list(dict.fromkeys(point.id for _, point, _, _ in read))
        dispatched = _dispatched_attempts(conn, ids)
        last = {point.id: (point, metrics) for _, point, _, metrics in read}  # a point's newest outcome
        points = [_with_first_stage(conn, point) for point, _ in last.values()]
        _points(conn, family, points, keep_status=True, throughput=True)
        own, ended = [], []
        for r, point, attempt, _ in read:
            key = r.attempt_key or dispatched.get(point.id)
            if key is None:
                own.append(attempt)
            elif key != _STILL_ACTIVE:
                ended.append({"pid": point.id, "k": key, **{f"v_{c}": attempt[c] for c in _UPDATE}})
        upsert(conn, Attempt, own, ["point_id", "key"], _UPDATE)
        if ended:
            where = (Attempt.point_id == sa.bindparam("pid"), Attempt.key == sa.bindparam("k"))
            values: dict[str, Any] = {
                c: sa.bindparam(f"v_{c}") for c in _UPDATE
            }  # a column's own name is SQLAlchemy's
            conn.execute(sa.update(Attempt).where(*where).values(values), ended)
        # The newest outcome's metrics replace the point's old ones as a whole.
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            conn.execute(sa.delete(Metric).where(Metric.point_id.in_(chunk)))
        rows = [m for _, metrics in last.values() for m in metrics]
        upsert(conn, Metric, rows, ["point_id", "dataset", "metric"], ["value", "reason"])
        state.refresh(conn, ids, db_now())

    transaction(engine, work)
    return [point.id for _, point, _, _ in read]


# ---------------------------------------------------------------- published tables


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file; one that cannot be read is one line."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or ()), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ClipscaleError(f"cannot read {path}: {e}") from None


def read_table(path: Path) -> tuple[list[PointRow], list[dict[str, Any]]]:
    """Points and metrics of a table in the scaling-laws paper's ``zeroshot_results.csv`` format."""
    header, rows = read_csv(path)
    missing = TABLE_COLUMNS - set(header)
    if missing:
        raise ClipscaleError(
            f"{path} is not a results table in the scaling-laws format: "
            f"no column {', '.join(sorted(missing))}"
        )
    points: dict[str, PointRow] = {}
    metrics: dict[tuple[str, str, str], dict[str, Any]] = {}
    for n, row in enumerate(rows, start=2):
        where = f"{path}:{n}"
        cells = _ragged(row, len(header))
        if cells is not None:
            raise ClipscaleError(f"{where}: {cells} cells, but the header has {len(header)} (a cut or "
                                 "shifted row?)")  # fmt: skip
        point = _table_point(row, where)
        points.setdefault(point.id, point)
        for column in METRIC_COLUMNS:
            text = (row.get(column) or "").strip()
            if text:
                value = _number(text, column, where)
                metrics[(point.id, row["downstream_dataset"], column)] = _metric(
                    point.id, row["downstream_dataset"], column, value, where
                )
    if not points:
        raise ClipscaleError(f"{path} holds no runs")
    return list(points.values()), list(metrics.values())


def _ragged(row: dict[Any, Any], width: int) -> int | None:
    """The cells of a csv.DictReader row with more than the header's ``width`` (it keeps them
    under the key None) or fewer (it reads them as None); None for a whole row."""
    extra, missing = row.get(None) or (), sum(v is None for v in row.values())
    return width + len(extra) - missing if extra or missing else None


def _number(text: str, column: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ClipscaleError(f"{where}: {column} is not a number ({text!r})") from None


def _table_point(row: dict[str, str], where: str) -> PointRow:
    samples = _number(row["samples_seen"], "samples_seen", where)
    gmacs = _number(row["gmacs"], "gmacs", where)
    if not (0 < samples < math.inf and 0 < gmacs < math.inf):
        raise ClipscaleError(f"{where}: samples_seen and gmacs must be positive and finite")
    key = {k: row[k] for k in ("name", "arch", "samples_seen", "upstream_dataset")}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    label = f"{row['arch']}_{row['upstream_dataset']}_{row.get('samples_seen_pretty') or int(samples)}"
    config = {"name": row["name"], "arch": row["arch"], "upstream_dataset": row["upstream_dataset"],
              "samples_seen_pretty": row.get("samples_seen_pretty", "")}  # fmt: skip
    return PointRow(f"{label}_{digest}", row["arch"], row["upstream_dataset"], int(samples), gmacs,
                    "succeeded", "import", config)  # fmt: skip


def import_table(engine: Engine, path: Path, family: str, description: str = "") -> int:
    """Import a published table as family ``family``; returns the number of runs."""
    points, metrics = read_table(path)
    return import_rows(engine, path, family, points, metrics, description)


def import_rows(
    engine: Engine, path: Path, family: str, points: Sequence[PointRow], metrics: Sequence[dict[str, Any]],
    description: str = "", members: Sequence[str] = (),
) -> int:  # fmt: skip
    """Write points and metrics read from a table as family ``family``, in one transaction;
    ``members``: points the store has already that join the family too."""

    def work(conn: Connection) -> None:
        _family(conn, family, "import", description or f"imported from {path.name}")
        _points(conn, family, points, keep_status=False)
        upsert(
            conn, FamilyPoint, [{"family": family, "point_id": p} for p in members], ["family", "point_id"]
        )
        upsert(conn, Metric, metrics, ["point_id", "dataset", "metric"], ["value", "reason"])

    transaction(engine, work)
    return len(points)


def _compiled_upsert(conn: Connection, names: Sequence[str]) -> tuple[str, list[str] | None]:
    """The metric upsert as driver SQL, with the parameter order if the driver is positional."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    stmt = insert(Metric).values({n: sa.bindparam(n) for n in names})
    excluded = {"value": stmt.excluded.value, "reason": stmt.excluded.reason}
    stmt = stmt.on_conflict_do_update(index_elements=["point_id", "dataset", "metric"], set_=excluded)
    compiled = stmt.compile(dialect=conn.dialect)
    return str(compiled), list(compiled.positiontup) if compiled.positional and compiled.positiontup else None


def chunks(rows: Iterable[dict[str, Any]], size: int = 10_000) -> Iterable[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def ingest_metrics(engine: Engine, rows: Iterable[dict[str, Any]]) -> int:
    """Bulk upsert of metric rows (point_id, dataset, metric, value, reason) in one transaction.

    The statement is SQLAlchemy's, compiled once; the rows go to the driver's executemany
    as plain tuples, which is what makes a million rows take seconds rather than tens.
    """
    count = 0
    names = ["point_id", "dataset", "metric", "value", "reason"]

    def work(conn: Connection) -> None:
        nonlocal count
        sql, order = _compiled_upsert(conn, names)
        for batch in chunks(rows):
            params = [tuple(row[n] for n in order) for row in batch] if order else batch
            conn.exec_driver_sql(sql, params)
            count += len(batch)

    transaction(engine, work)
    return count
