"""Read from the store: one row per point with a ``<dataset>/<metric>`` column per metric.

Filters become bound parameters of one SELECT; nothing the user types is pasted into SQL.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scaling.errors import ClipscaleError
from scaling.modeltypes import MODEL_TYPES
from scaling.store.db import read
from scaling.store.models import POINT_STATUSES, Family, FamilyPoint, Metric, Point
from scaling.units import parse_count

if TYPE_CHECKING:  # numpy is imported where values are read: `scaling runs` starts without it
    import numpy as np

POINT_COLUMNS = (
    "id",
    "family",
    "model",
    "data",
    "samples_seen",
    "gmacs_per_sample",
    "compute_gmacs",
    "status",
    "samples_per_s",
    "mfu",
    "error",
    "schedule",
    "trunk",
    "cooldown",
    "from_checkpoint",
    "model_type",
    "params",
    "data_size",
    "no_compute",
)
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq}
# DOTALL: a value may hold a newline (a family named so), as any other character.
_FILTER = re.compile(r"^(?P<key>[^<>=!]+?)(?P<op>>=|<=|>|<|=)(?P<value>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Filters:
    """What `scaling runs` narrows to; metric conditions use ``dataset/metric`` keys."""

    conditions: tuple[Condition, ...] = field(default_factory=tuple)


def parse_filters(args: Sequence[str]) -> Filters:
    """``family=paper``, ``'model=[ViT-B-32,ViT-L-14]'``, ``samples_seen>=3B``,
    ``imagenet1k/acc1>0.6`` … into conditions."""
    conditions = []
    for arg in args:
        m = _FILTER.match(arg)
        if not m or not m["key"].strip():
            raise ClipscaleError(
                f"cannot read filter {arg!r}: use key=value, key>=value or dataset/metric>value"
            )
        key, op, raw = m["key"].strip(), m["op"], m["value"].strip()
        values = (
            tuple(v.strip() for v in raw[1:-1].split(","))
            if raw.startswith("[") and raw.endswith("]")
            else (raw,)
        )
        if key not in (*_TEXT, *_NUMERIC, "checkpoints") and "/" not in key:
            valid = ", ".join((*_TEXT, *_NUMERIC, "checkpoints"))
            raise ClipscaleError(f"unknown filter {key!r} (valid: {valid}, or dataset/metric)")
        if op != "=" and (key in _TEXT or key == "checkpoints" or len(values) != 1):
            raise ClipscaleError(f"filter {arg!r}: {op} needs one number")
        if key == "checkpoints" and (len(values) != 1 or values[0] not in CHECKPOINTS):
            raise ClipscaleError(f"filter {arg!r}: checkpoints is one of {', '.join(CHECKPOINTS)}")
        _known(key, values)
        conditions.append(Condition(key, op, values))
    filters = Filters(tuple(conditions))
    _where(filters)  # every value read now (a count, a number, a flag): no store needed to say it is bad
    return filters


def _known(key: str, values: tuple[str, ...]) -> None:
    """A status or model type outside the closed set is a typo, not a filter matching nothing."""
    closed: tuple[str, ...] = {"status": POINT_STATUSES, "model_type": MODEL_TYPES}.get(key, ())
    for v in values if closed else ():
        if v not in closed:
            raise ClipscaleError(f"unknown {key} {v!r} (valid: {', '.join(closed)})")


_TEXT = {"family": FamilyPoint.family, "sweep": FamilyPoint.family, "model": Point.model, "data": Point.data,
         "status": Point.status, "id": Point.id, "schedule": Point.schedule, "trunk": Point.trunk,
         "from_checkpoint": Point.from_checkpoint, "model_type": Point.model_type}  # fmt: skip
_NUMERIC = {"samples_seen": Point.samples_seen, "compute_gmacs": Point.compute_gmacs,
            "gmacs_per_sample": Point.gmacs_per_sample, "cooldown": Point.cooldown}  # fmt: skip
# Which points of a trajectory: finished runs only (separate runs and cooled-down branches),
# all (the trunk's constant-LR checkpoints too), or the checkpoints alone.
CHECKPOINTS = ("final", "all", "only")
_BOOLEAN = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _flag(key: str, text: str) -> bool:
    if text.lower() not in _BOOLEAN:
        raise ClipscaleError(f"filter {key}: {text!r} is not true or false")
    return _BOOLEAN[text.lower()]


def _number(key: str, text: str) -> float:
    if key == "samples_seen":
        return parse_count(text, "samples_seen")
    try:
        return float(text)
    except ValueError:
        raise ClipscaleError(f"filter {key}: {text!r} is not a number") from None


def _where(filters: Filters) -> list[Any]:
    clauses: list[Any] = []
    for c in filters.conditions:
        if c.key == "checkpoints":
            if c.values[0] != "all":
                clauses.append(Point.from_checkpoint.is_(c.values[0] == "only"))
        elif c.key == "from_checkpoint":
            clauses.append(Point.from_checkpoint.in_([_flag(c.key, v) for v in c.values]))
        elif c.key in _TEXT:
            clauses.append(_TEXT[c.key].in_(c.values))
            if c.key == "sweep":
                clauses.append(FamilyPoint.family.in_(sa.select(Family.name).where(Family.kind == "sweep")))
        elif c.key in _NUMERIC:
            column = _NUMERIC[c.key]
            if c.op == "=":
                clauses.append(column.in_([_number(c.key, v) for v in c.values]))
            else:
                clauses.append(_OPS[c.op](column, _number(c.key, c.values[0])))
        else:
            dataset, _, metric = c.key.partition("/")
            value = (
                Metric.value.in_([_number(c.key, v) for v in c.values])
                if c.op == "="
                else _OPS[c.op](Metric.value, _number(c.key, c.values[0]))
            )
            # IN over the (dataset, metric, value) index: a range scan, not a probe per point.
            matching = sa.select(Metric.point_id).where(
                Metric.dataset == dataset, Metric.metric == metric, value
            )
            clauses.append(Point.id.in_(matching))
    return clauses


def fetch(
    engine: Engine, filters: Filters = Filters(), only: tuple[str, str] | None = None, metrics: bool = True
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str, Any]]]:
    """Point rows (one per point and family) and their metrics, for the filters; with
    ``only`` (dataset, metric), that metric alone (a law needs one of a family's many), and
    without ``metrics`` none (the points are all that is asked)."""
    columns = [FamilyPoint.family, *(getattr(Point, c) for c in POINT_COLUMNS if c != "family")]
    points = _selected(filters, *columns).order_by(*_ORDER)

    def work(conn: sa.Connection) -> tuple[list[dict[str, Any]], list[tuple[str, str, str, Any]]]:
        rows = [dict(r._mapping) for r in conn.execute(points)]
        ids = sorted({r["id"] for r in rows}) if metrics else []
        found: list[tuple[str, str, str, Any]] = []
        for chunk in _slices(ids):
            q = sa.select(Metric.point_id, Metric.dataset, Metric.metric, Metric.value).where(
                Metric.point_id.in_(chunk)
            )
            if only is not None:
                q = q.where(Metric.dataset == only[0], Metric.metric == only[1])
            found.extend((r[0], r[1], r[2], r[3]) for r in conn.execute(q))
        return rows, found

    return read(engine, work)


def _selected(filters: Filters, *columns: Any) -> Any:
    """Columns of the filtered points (their ids by default), as a query the store runs (or
    joins as a subquery): the points are never listed here."""
    return (
        sa.select(*(columns or (Point.id,)))
        .join_from(FamilyPoint, Point, Point.id == FamilyPoint.point_id)
        .where(*_where(filters))
    )


_ORDER = (FamilyPoint.family, Point.compute_gmacs, Point.id)  # how point rows are listed


def metric_names(engine: Engine, filters: Filters) -> set[tuple[str, str]]:
    """The (dataset, metric) pairs with a value among the filtered points. The store's pairs
    are found by seeking the (dataset, metric, value) index from one pair to the next, and
    each is asked whether a filtered point has a value for it (found at the first such row),
    instead of reading every metric row of the filtered points."""

    def held(conn: sa.Connection, dataset: str, metric: str) -> bool:
        q = (
            sa.select(Metric.point_id)
            .join_from(Metric, Point, Point.id == Metric.point_id)
            .join(FamilyPoint, FamilyPoint.point_id == Point.id)
            .where(
                Metric.dataset == dataset,
                Metric.metric == metric,
                Metric.value.is_not(None),
                *_where(filters),
            )
            .limit(1)
        )
        return conn.execute(q).first() is not None

    def work(conn: sa.Connection) -> set[tuple[str, str]]:
        return {pair for pair in _pairs(conn) if held(conn, *pair)}

    return read(engine, work)


def _pairs(conn: sa.Connection) -> list[tuple[str, str]]:
    """Every (dataset, metric) in the store, one index seek each (a loose index scan)."""
    found: list[tuple[str, str]] = []
    first = sa.select(Metric.dataset, Metric.metric).order_by(Metric.dataset, Metric.metric).limit(1)
    row = conn.execute(first).first()
    while row is not None:
        found.append((row[0], row[1]))
        same = first.where(Metric.dataset == row[0], Metric.metric > row[1])
        row = conn.execute(same).first() or conn.execute(first.where(Metric.dataset > row[0])).first()
    return found


def point_columns(engine: Engine, filters: Filters, columns: Sequence[str]) -> dict[str, list[Any]]:
    """Columns of the filtered points, in :func:`fetch`'s order (family, compute, id): what
    the laws of a hundred thousand runs read, without a dict per row."""
    q = _selected(filters, *(getattr(Point, c) for c in columns)).order_by(*_ORDER)
    # The driver's own tuples: Row objects for a hundred thousand points take seconds more.
    rows = read(engine, lambda conn: conn.execute(q).cursor.fetchall())
    return {c: list(map(operator.itemgetter(k), rows)) for k, c in enumerate(columns)}


# A pair's whole (dataset, metric) index range is read, and the other points' values dropped
# here, where the store holds at most this many points per point selected (a range holds a
# value per point at most): a probe of the selection for each value costs more than reading a
# value (measured at 100k points: 0.36 s read whole, 0.96 s probed).
WHOLE_RANGE = 2


def metric_values(
    engine: Engine, filters: Filters, pairs: Sequence[tuple[str, str]], ids: Sequence[str]
) -> dict[tuple[str, str], np.ndarray]:
    """Each (dataset, metric)'s value for each of ``ids`` (the filtered points), in their
    order, NaN where a point has none: a range of the (dataset, metric, value) index per pair,
    what a refit of many laws reads once."""
    at = {pid: i for i, pid in enumerate(ids)}

    def work(conn: sa.Connection) -> dict[tuple[str, str], np.ndarray]:
        out = {}
        stored = conn.execute(sa.select(sa.func.count()).select_from(Point)).scalar_one()
        whole = stored <= WHOLE_RANGE * len(at)
        for dataset, metric in pairs:
            q = sa.select(Metric.point_id, Metric.value).where(Metric.dataset == dataset)
            q = q.where(Metric.metric == metric)
            if not whole:
                q = q.where(Metric.point_id.in_(_selected(filters)))
            out[(dataset, metric)] = _aligned(conn.execute(q).cursor.fetchall(), at)  # the driver's tuples
        return out

    return read(engine, work)


def _aligned(rows: Sequence[tuple[str, Any]], at: dict[str, int]) -> np.ndarray:
    """(point id, value) rows as one value per point of ``at``; other points' rows dropped."""
    import numpy as np

    values = np.full(len(at), np.nan)
    if rows:
        ids = map(operator.itemgetter(0), rows)
        where = np.fromiter(map(at.get, ids, itertools.repeat(-1)), dtype=np.int64, count=len(rows))
        mine = where >= 0
        found = np.array(list(map(operator.itemgetter(1), rows)), dtype=np.float64)  # a NULL value is NaN
        values[where[mine]] = found[mine]
    return values


def distinct(engine: Engine, filters: Filters, column: str) -> set[Any]:
    """The values one point column takes among the filtered points (the data sets a family
    was trained on, its model types): what grouping runs into laws needs, not every row."""
    q = _selected(filters, getattr(Point, column)).distinct()
    return read(engine, lambda conn: {v for (v,) in conn.execute(q).cursor.fetchall()})  # the driver's tuples


def among(engine: Engine, filters: Filters, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` that are among the filtered points."""
    unique = sorted(set(ids))

    def work(conn: sa.Connection) -> set[str]:
        found: set[str] = set()
        for chunk in _slices(unique):
            found.update(conn.execute(_selected(filters).where(Point.id.in_(chunk))).scalars())
        return found

    return read(engine, work)


IN_SLICE = 5000


def _slices(ids: Sequence[str]) -> list[Sequence[str]]:
    """Bound IN lists in slices keep every backend within its parameter limit."""
    return [ids[i : i + IN_SLICE] for i in range(0, len(ids), IN_SLICE)]


def existing(engine: Engine, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` that are points of the store."""
    unique = sorted(set(ids))

    def work(conn: sa.Connection) -> set[str]:
        found: set[str] = set()
        for chunk in _slices(unique):
            found.update(conn.execute(sa.select(Point.id).where(Point.id.in_(chunk))).scalars())
        return found

    return read(engine, work)


def configs(engine: Engine, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The resolved config of each of ``ids`` (a grid point's, or what an import kept)."""
    unique = sorted(set(ids))

    def work(conn: sa.Connection) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in _slices(unique):
            for pid, text in conn.execute(sa.select(Point.id, Point.config).where(Point.id.in_(chunk))):
                try:
                    loaded = json.loads(text or "{}")
                except ValueError:
                    loaded = {}
                out[pid] = loaded if isinstance(loaded, dict) else {}
        return out

    return read(engine, work)


def table(engine: Engine, filters: Filters) -> tuple[list[str], list[dict[str, Any]]]:
    """The metric columns (``dataset/metric``, sorted) and one dict per point (and family)
    with them: what `scaling runs` prints, without pandas (which takes 0.3 s to import)."""
    rows, metrics = fetch(engine, filters)
    values: dict[str, dict[str, Any]] = {}
    for pid, dataset, metric, value in metrics:
        values.setdefault(pid, {}).setdefault(f"{dataset}/{metric}", value)
    columns = sorted({c for v in values.values() for c in v})
    return columns, [{**r, **values.get(r["id"], {})} for r in rows]


def runs(url: str | None = None, *filters: str, engine: Engine | None = None) -> Any:
    """A pandas DataFrame: one row per point (and family), metric columns ``dataset/metric``.

    ``scaling.store.runs(None, "family=paper", "imagenet1k/acc1>0.6")`` reads results.db.
    """
    import pandas as pd

    from scaling.store.db import connect

    parsed = parse_filters(filters)  # a bad filter is named before any store is opened
    engine = engine or connect(url, must_exist=True)
    metrics, rows = table(engine, parsed)
    frame = pd.DataFrame(rows, columns=[*POINT_COLUMNS, *metrics])
    if metrics:  # a metric a point lacks, or stored as NULL, is NaN
        frame[metrics] = frame[metrics].astype(float)
    return frame
