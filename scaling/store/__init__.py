"""The results store: every point, attempt and metric, in SQLite or PostgreSQL.

The public surface: ``connect`` (an engine, schema migrated), ``runs`` (a pandas
DataFrame), ``ingest_run``, ``record_points`` and ``import_table``.
"""

from scaling.store.db import connect, store_url
from scaling.store.ingest import (
    Ended,
    PointRow,
    import_table,
    ingest_metrics,
    ingest_run,
    ingest_runs,
    record_points,
)
from scaling.store.query import parse_filters, runs

__all__ = [
    "Ended",
    "PointRow",
    "connect",
    "import_table",
    "ingest_metrics",
    "ingest_run",
    "ingest_runs",
    "parse_filters",
    "record_points",
    "runs",
    "store_url",
]
