"""The one clock flask-geneva reads: naive UTC datetimes, with an offset tests can move."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

_offset = timedelta(0)


def now() -> datetime:
    """Return the current time as a naive UTC datetime (how every timestamp is stored).

    Naive UTC is used because MariaDB's ``DATETIME`` and SQLite keep no time zone;
    storing one convention everywhere keeps comparisons honest across databases.
    """
    return datetime.now(UTC).replace(tzinfo=None) + _offset


def move(delta: timedelta) -> None:
    """Move flask-geneva's clock by ``delta`` (used by :func:`flask_geneva.testing.travel`)."""
    global _offset
    _offset += delta


def reset() -> None:
    """Put flask-geneva's clock back to real time."""
    global _offset
    _offset = timedelta(0)


def to_timedelta(value: timedelta | int | float | None) -> timedelta:
    """Turn a wait given as a timedelta or a number of seconds into a timedelta."""
    if value is None:
        return timedelta(0)
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a timedelta or a number of seconds, got {value!r}")
    return timedelta(seconds=value)
