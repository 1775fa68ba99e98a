"""The one clock flask-geneva reads: the database's time, as naive UTC, movable in tests.

Every timestamp flask-geneva writes or compares (due times, claims, thresholds) comes
from :func:`now`. Machines disagree about the time; a worker whose clock runs behind
would defer every step as "early", and a housekeeper whose clock runs ahead would
recover healthy steps as "stuck". So :func:`now` is this machine's clock plus its
offset to the database's clock, measured with one statement and the midpoint of its
round trip, and measured again when it is older than :data:`REMEASURE_AFTER`. Every
machine then compares against one clock: the database's.

Where it is measured: when the write path opens its transaction and the offset is
stale (:func:`sync`, at most one statement per :data:`REMEASURE_AFTER` and process),
before each Huey step and housekeeping run, and the first time :func:`now` is called
in an app context whose database has not been measured yet.

:func:`move` (what :func:`flask_geneva.testing.travel` uses) shifts the clock on top
of that, so a test can travel on a machine whose own clock is wrong.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from flask import current_app
from flask import has_app_context
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine

logger = logging.getLogger("flask_geneva")

#: Seconds after which the offset to the database's clock is measured again. Clocks
#: drift by milliseconds a day, but an NTP step can move a machine's clock at once;
#: a minute bounds how long such a jump goes unnoticed, for one statement a minute.
REMEASURE_AFTER = 60.0

#: After a measurement failed (the database was unreachable), seconds before
#: :func:`now` tries again; meanwhile it keeps the last offset (or none).
_RETRY_AFTER = 5.0

#: The database's current time as naive UTC, per dialect. PostgreSQL's ``now()`` is the
#: start of the transaction, so ``clock_timestamp()``; MariaDB's ``UTC_TIMESTAMP`` is
#: the statement's start.
_QUERIES = {
    "postgresql": "SELECT clock_timestamp() AT TIME ZONE 'UTC'",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "mariadb": "SELECT UTC_TIMESTAMP(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}

#: The resolution of each database's clock as read above (SQLite: milliseconds).
_RESOLUTION = {"sqlite": timedelta(milliseconds=1)}
_MICROSECOND = timedelta(microseconds=1)

_travel = timedelta(0)


def machine_now() -> datetime:
    """Return this machine's own clock as a naive UTC datetime.

    The one place flask-geneva reads the local clock; :func:`now` corrects it. Tests
    replace it to play a machine whose clock is wrong.
    """
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class _Offset:
    #: The database's clock minus this machine's.
    value: timedelta
    #: ``time.monotonic()`` when measured; None while never measured successfully.
    measured_at: float | None
    #: ``time.monotonic()`` of the last attempt (successful or not).
    tried_at: float


_offsets: WeakKeyDictionary[Engine, _Offset] = WeakKeyDictionary()
#: The offset :func:`now` uses outside an app context: the last one measured.
_last: _Offset | None = None
_lock = threading.Lock()
#: Engines whose offset a thread is measuring now (the others keep the stale value).
_measuring: set[int] = set()


def now() -> datetime:
    """Return the database's current time as a naive UTC datetime (how every timestamp is stored).

    Naive UTC is used because MariaDB's ``DATETIME`` and SQLite keep no time zone;
    storing one convention everywhere keeps comparisons honest across databases.
    """
    return machine_now() + offset() + _travel


def offset() -> timedelta:
    """Return the database's clock minus this machine's, as last measured.

    In an app context, the app's database is measured here the first time (one
    statement on a connection of its own); outside one, the last measured offset
    applies (none before any measurement).
    """
    engine = _current_engine()
    if engine is None:
        return _last.value if _last is not None else timedelta(0)
    found = _offsets.get(engine)
    if found is None or (
        found.measured_at is None and time.monotonic() - found.tried_at >= _RETRY_AFTER
    ):
        found = _measure_on_engine(engine)
    return found.value


def sync(bind: Engine | Connection) -> None:
    """Measure the offset to ``bind``'s database again if it is older than :data:`REMEASURE_AFTER`.

    Cheap when fresh (no statement). Given a connection, the statement runs on it,
    inside its transaction if one is open; given an engine, on a connection of its own,
    and a database that cannot be reached keeps the last offset (the caller's own
    statements will report the outage).
    """
    engine = bind.engine if isinstance(bind, Connection) else bind
    found = _offsets.get(engine)
    if found is not None and not _stale(found):
        return
    key = id(engine)
    with _lock:
        if key in _measuring:
            return  # another thread is at it; until then the stale offset serves
        _measuring.add(key)
    try:
        if isinstance(bind, Connection):
            _store(engine, _measure(bind, bind.dialect.name))
        else:
            _measure_on_engine(engine)
    finally:
        with _lock:
            _measuring.discard(key)


def move(delta: timedelta) -> None:
    """Move flask-geneva's clock by ``delta`` (used by :func:`flask_geneva.testing.travel`).

    The move is added to the database's time: it composes with the measured offset.
    """
    global _travel
    _travel += delta


def reset() -> None:
    """Put flask-geneva's clock back to real time and forget every measured offset."""
    global _travel, _last
    _travel = timedelta(0)
    _last = None
    _offsets.clear()


def to_timedelta(value: timedelta | int | float | None) -> timedelta:
    """Turn a wait given as a timedelta or a number of seconds into a timedelta."""
    if value is None:
        return timedelta(0)
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a timedelta or a number of seconds, got {value!r}")
    return timedelta(seconds=value)


def to_machine(moment: datetime) -> datetime:
    """Turn ``moment`` (flask-geneva's clock) into the same instant on this machine's clock.

    For Huey, whose consumer compares a task's ``eta`` with its own machine's clock.
    """
    return moment - offset() - _travel


# -- measuring ------------------------------------------------------------------------------


def _stale(found: _Offset) -> bool:
    if found.measured_at is None:
        return time.monotonic() - found.tried_at >= _RETRY_AFTER
    return time.monotonic() - found.measured_at >= REMEASURE_AFTER


def _current_engine() -> Engine | None:
    if not has_app_context():
        return None
    state = current_app.extensions.get("geneva")
    if state is None:
        return None
    engine: Engine = state.ext.engine()
    return engine


def _measure_on_engine(engine: Engine) -> _Offset:
    if engine.dialect.name == "sqlite":
        # SQLite reads this machine's clock whatever the file: a throwaway in-memory
        # database reads the same one, and a StaticPool's single connection (an
        # in-memory app database) is not touched while its transaction may be open.
        with closing(sqlite3.connect(":memory:")) as private:
            return _store(engine, _measure(private, "sqlite"))
    try:
        with engine.connect() as conn:
            value = _measure(conn, conn.dialect.name)
            conn.rollback()
    except sa.exc.SQLAlchemyError as error:
        logger.warning(
            "could not read the database's clock (%s); using this machine's clock "
            "corrected by the last offset measured, if any",
            error,
        )
        previous = _offsets.get(engine)
        failed = _Offset(
            previous.value if previous is not None else timedelta(0),
            previous.measured_at if previous is not None else None,
            time.monotonic(),
        )
        _offsets[engine] = failed
        return failed
    return _store(engine, value)


def _store(engine: Engine, value: timedelta) -> _Offset:
    global _last
    moment = time.monotonic()
    found = _offsets[engine] = _Offset(value, moment, moment)
    _last = found
    return found


def _measure(conn: Connection | sqlite3.Connection, dialect: str) -> timedelta:
    """Return the database's clock minus this machine's, from one statement on ``conn``.

    The database read its clock somewhere within the round trip; the midpoint is the
    best guess, and an offset within the guess's uncertainty (half the round trip plus
    the database clock's resolution) cannot be told from zero, so it counts as zero:
    a database on this machine, or on one whose clock agrees, changes nothing.
    """
    query = _QUERIES.get(dialect)
    if query is None:
        return timedelta(0)  # an unknown database: this machine's clock, uncorrected
    before = machine_now()
    if isinstance(conn, sqlite3.Connection):
        value: Any = conn.execute(query).fetchone()[0]
    else:
        value = conn.exec_driver_sql(query).scalar_one()
    after = machine_now()
    database = datetime.fromisoformat(value) if isinstance(value, str) else value
    if database.tzinfo is not None:
        database = database.astimezone(UTC).replace(tzinfo=None)
    half_trip = (after - before) / 2
    measured: timedelta = database - (before + half_trip)
    if abs(measured) <= half_trip + _RESOLUTION.get(dialect, _MICROSECOND):
        return timedelta(0)
    return measured
