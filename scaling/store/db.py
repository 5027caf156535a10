"""Open the results store: any SQLAlchemy URL, schema migrated to the newest on open.

SQLite (the default, ``sqlite:///results.db``) runs in WAL mode so readers never block
the writer, and every transaction starts with ``BEGIN IMMEDIATE`` so that two writers
queue on the busy timeout instead of failing on a read-to-write lock upgrade; what still
reports "database is locked" is retried. PostgreSQL needs nothing beyond transactions.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from scaling.errors import ClipscaleError, first_line, redact, redact_in

DB_ENV = "CLIPSCALE_DB"
DEFAULT_URL = "sqlite:///results.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 60_000
T = TypeVar("T")


def store_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get(DB_ENV) or DEFAULT_URL


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy's "begin" below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL rewrites the file's header: never on a database that is not a store (upgrade
        # refuses it, and it must be left as it was).
        tables = {row[0] for row in cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables or "alembic_version" in tables:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB: bulk ingests stay in memory
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(conn: Connection) -> None:
        # A writer takes the write lock at once (no deadlock upgrading a read lock later); a
        # reader's deferred BEGIN reads a WAL snapshot and never waits for a writer.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ) else "BEGIN IMMEDIATE")


def connect(url: str | None = None, migrate: bool = True, must_exist: bool = False) -> Engine:
    """An engine on the store at ``url`` with its schema at the newest revision; with
    ``must_exist``, a SQLite file that is not there is an error, not a new empty store
    (for commands that only read)."""
    url = store_url(url)
    try:
        parsed = sa.make_url(url)
    except Exception:
        raise ClipscaleError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser().resolve()
        if not path.parent.is_dir():
            raise ClipscaleError(f"cannot open {redact(url)}: folder {path.parent} does not exist")
        if must_exist and not path.exists():
            raise ClipscaleError(
                f"no results store at {path}: import or ingest runs first (--db to name one)"
            )
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    except Exception as e:  # e.g. a missing driver, or sqlite://file.db (one slash short)
        raise ClipscaleError(f"cannot open {redact(url)}: {redact_in(first_line(e), url)}") from None
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    if migrate:
        upgrade(engine)
    return engine


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; refuse foreign or newer databases."""
    if _current(engine) == _newest():
        return  # the common case, without loading alembic and its scripts
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    known = {s.revision for s in scripts.walk_revisions()}
    with _errors(engine):
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            current = _revision(conn) if "alembic_version" in tables else None
        if current == head:
            return
        if current is None and tables:
            raise ClipscaleError(
                f"{redact(str(engine.url))} holds tables that are not clipscale's "
                f"({', '.join(sorted(tables)[:5])}); point --db at another database"
            )
        if current is not None and current not in known:
            raise ClipscaleError(
                f"{redact(str(engine.url))} was made by a newer clipscale (schema {current}): "
                "upgrade clipscale"
            )
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


def _newest() -> str:
    # Revisions are numbered files (0001_initial.py …) in one line of history.
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _current(engine: Engine) -> str | None:
    """The store's revision; None where it has none or cannot say (the full check then
    explains)."""
    try:
        with engine.connect() as conn:
            return _revision(conn)
    except DatabaseError:
        return None


def _revision(conn: Connection) -> str | None:
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _errors(engine: Engine, retry_locks: bool = False) -> Iterator[None]:
    """Database failures that are the user's to fix, as one line; with ``retry_locks``,
    SQLite's "database is locked" passes through for the caller to retry."""
    try:
        yield
    except ClipscaleError:
        raise
    except OperationalError as e:
        if retry_locks and "locked" in str(e):
            raise
        raise ClipscaleError(f"cannot use {redact(str(engine.url))}: {first_line(e)}") from None
    except IntegrityError as e:  # a write broke a constraint: the database itself is fine
        raise ClipscaleError(f"{redact(str(engine.url))} refused a write: {first_line(e)}") from None
    except DatabaseError as e:
        raise ClipscaleError(
            f"{redact(str(engine.url))} is not a usable clipscale database: {first_line(e)}"
        ) from None


_READ = "clipscale_read_only"


def read(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work``, which only reads, in one transaction that does not queue behind writers."""
    return transaction(engine.execution_options(**{_READ: True}), work)


def transaction(engine: Engine, work: Callable[[Connection], T], attempts: int = 20) -> T:
    """Run ``work`` in one transaction, retrying while SQLite says it is locked."""
    for attempt in range(attempts):
        try:
            with _errors(engine, retry_locks=attempt < attempts - 1), engine.begin() as conn:
                return work(conn)
        except OperationalError:  # locked, and attempts remain
            time.sleep(random.uniform(0.01, 0.1) * (attempt + 1))
    raise AssertionError("unreachable")
