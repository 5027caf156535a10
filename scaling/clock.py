"""The tool's one clock: UTC everywhere, so times from the launcher, the compute nodes and
the store compare without a time zone in sight."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """Now, as an aware UTC time."""
    return datetime.now(timezone.utc)


def db_now() -> datetime:
    """Now for a store column: UTC without its zone (SQLite keeps none; every column is UTC)."""
    return utc_now().replace(tzinfo=None)


def stamp(timespec: str = "seconds") -> str:
    """Now in ISO 8601 with its +00:00 offset, for files a run writes (outcome.json, ranks/)."""
    return utc_now().isoformat(timespec=timespec)


def db_time(text: str | None, naive_is_local: bool = False) -> datetime | None:
    """An ISO 8601 time as a store column: converted to UTC, its zone dropped; None if
    unreadable. A time without a zone is UTC (the store's and the local launcher's own), or
    with ``naive_is_local`` this machine's local time (sacct's)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:  # sacct's "Unknown", "None"
        return None
    if when.tzinfo is None and not naive_is_local:
        return when
    return when.astimezone(timezone.utc).replace(tzinfo=None)
