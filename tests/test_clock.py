"""The tool's one clock: every time it stores is UTC, whatever zone it was written in."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from scaling.clock import db_now, db_time, stamp, utc_now


def test_times_are_stored_as_utc_without_their_zone() -> None:
    assert db_time("2026-01-02T03:04:05+02:00") == datetime(2026, 1, 2, 1, 4, 5)
    assert db_time("2026-01-02T03:04:05+00:00") == datetime(2026, 1, 2, 3, 4, 5)
    assert db_time("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5)  # the store's own: UTC
    assert db_time("Unknown") is None and db_time("") is None and db_time(None) is None
    assert stamp().endswith("+00:00") and stamp("milliseconds").count(".") == 1
    assert abs((db_now() - utc_now().replace(tzinfo=None)).total_seconds()) < 5


def test_saccts_local_times_are_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    # sacct prints the cluster's local time without a zone. A POSIX zone two hours east of
    # UTC (no time-zone database needed).
    monkeypatch.setenv("TZ", "XXX-2")
    time.tzset()
    try:
        assert db_time("2026-01-02T03:04:05", naive_is_local=True) == datetime(2026, 1, 2, 1, 4, 5)
        assert db_time("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5)
    finally:
        monkeypatch.undo()
        time.tzset()
