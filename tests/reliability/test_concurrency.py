"""Many writers at once, on SQLite and a real PostgreSQL: 200 processes ingesting lose no
row, and a reader never waits for a writer (it reads the snapshot before the write)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import sqlalchemy as sa
from conftest import reliability_count
from test_store import counts, make_run

from scaling.store import connect, ingest_run, runs
from scaling.store.models import Point


def _writer(url: str, run: str, barrier: object, errors: object) -> None:
    try:
        engine = connect(url, migrate=False)
        barrier.wait()  # type: ignore[attr-defined]
        for _ in range(2):  # and again: concurrent re-ingest must stay idempotent
            ingest_run(engine, Path(run), "toy", gmacs_per_sample=0.01)
    except BaseException as e:
        errors.put(f"{type(e).__name__}: {e}")  # type: ignore[attr-defined]
        raise


def test_200_concurrent_writers_lose_nothing(url: str, tmp_path: Path) -> None:
    connect(url)  # migrate once, as the controller does before launching anything
    runs_ = [make_run(tmp_path / "runs", i + 1) for i in range(200)]
    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(200), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, str(r), barrier, errors)) for r in runs_]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == [] and all(p.exitcode == 0 for p in procs)
    stored = counts(url)
    assert stored == {"points": 200, "family_points": 200, "attempts": 200, "metrics": 400}
    reliability_count("concurrent writers", 200)
    reliability_count("rows lost by concurrent writers", 1000 - sum(stored.values()))


def test_a_reader_does_not_wait_for_a_writer(url: str, tmp_path: Path) -> None:
    """A query reads while a writer holds its transaction open: the reader sees the store as
    it was before the write and finishes first (it would otherwise wait for the lock)."""
    import threading

    from scaling.store.db import transaction

    engine = connect(url)
    ingest_run(engine, make_run(tmp_path / "runs", 1), "toy")
    holding, reader_done = threading.Event(), threading.Event()
    finished_while_held: list[bool] = []

    def writer() -> None:
        def work(conn: sa.Connection) -> None:
            conn.execute(sa.update(Point).values(status="failed"))
            holding.set()
            finished_while_held.append(reader_done.wait(timeout=30))

        transaction(engine, work)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(timeout=30)
    frame = runs(url, "sweep=toy", engine=engine)
    reader_done.set()
    thread.join()
    assert finished_while_held == [True]
    assert list(frame["status"]) == ["succeeded"]  # the snapshot from before the write
    assert list(runs(url, "sweep=toy", engine=engine)["status"]) == ["failed"]
    reliability_count("reads while a writer held its lock (none waited)", 1)
