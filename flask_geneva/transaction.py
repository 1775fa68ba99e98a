"""Short locked transactions for state changes, with the per-dialect traps handled.

Every change to a workflow's state or its executions goes through :func:`run_locked`:
one short transaction on its own connection, in which the caller locks the workflow
row first and only then touches executions. Holding the workflow row lock is what
serialises two finalizers of a join, a finalizer and an operator's pause, and so on.

* SQLite ignores ``SELECT ... FOR UPDATE``, and a deferred transaction that reads and
  then writes fails at once with "database is locked" when another connection wrote in
  between. So the transaction starts with ``BEGIN IMMEDIATE`` (taking the write lock up
  front and waiting up to the busy timeout for it), on a connection switched to driver
  autocommit so that pysqlite does not issue its own ``BEGIN``.
* MySQL/MariaDB report deadlocks under contention as a normal event, and PostgreSQL can
  too; those transactions are retried a few times, as is SQLite's busy error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine

T = TypeVar("T")

logger = logging.getLogger("flask_geneva")

#: How many times a transaction is tried when the database reports a deadlock.
ATTEMPTS = 6

_RETRY_CODES = {
    1213,  # MySQL/MariaDB: deadlock found when trying to get lock
    1205,  # MySQL/MariaDB: lock wait timeout exceeded
    "40P01",  # PostgreSQL: deadlock_detected
    "40001",  # PostgreSQL: serialization_failure
}


def is_retryable(error: sa.exc.DBAPIError) -> bool:
    """Return whether ``error`` is a deadlock, lock timeout, busy database or dead connection.

    A dead connection (the server restarted, a backend was terminated) has already
    been invalidated by SQLAlchemy, so the next attempt gets a fresh one; without the
    retry the outcome of a finished step would wait for housekeeping's recovery.
    """
    if error.connection_invalidated:
        return True
    orig = error.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in _RETRY_CODES:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in _RETRY_CODES:
        return True
    return "database is locked" in str(orig) or "database table is locked" in str(orig)


def run_locked(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work(conn)`` in one short transaction and commit it; retry on deadlock.

    ``work`` may run more than once, so it must not have effects outside the
    transaction (collect Huey triggers and send them after this returns).
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if engine.dialect.name == "sqlite":
                return _run_sqlite(engine, work)
            with engine.begin() as conn:
                return work(conn)
        except sa.exc.DBAPIError as error:
            if attempt == ATTEMPTS or not is_retryable(error):
                raise
            delay = 0.005 * 2**attempt * random.uniform(0.5, 1.5)
            logger.debug("transaction retried after %s (attempt %d)", error.orig, attempt)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _run_sqlite(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as raw:
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")
        return result


def configure_sqlite(engine: Engine) -> None:
    """Put a file-backed SQLite engine in WAL mode with a busy timeout and foreign keys.

    WAL lets readers (the admin, step bodies) proceed while a worker writes; the busy
    timeout makes writers queue for the lock instead of failing; foreign keys make
    ``ON DELETE CASCADE`` remove executions with their workflow.
    """
    if engine.dialect.name != "sqlite" or getattr(engine, "_geneva_configured", False):
        return

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.execute("PRAGMA foreign_keys = ON")
            if engine.url.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    engine._geneva_configured = True  # type: ignore[attr-defined]
    # Connections opened before this hook was installed lack the pragmas.
    engine.dispose()


def begin_sqlite_write(conn: Connection) -> None:
    """On SQLite, open the connection's transaction with ``BEGIN IMMEDIATE`` if none is open.

    pysqlite starts a transaction only before its first INSERT/UPDATE/DELETE, so a
    session that only read has none; the reads of a state change must not run outside
    the write lock. A session that already wrote holds the lock and is left alone.
    """
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.dbapi_connection
    if raw is not None and not raw.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# -- did the step body write? -------------------------------------------------------------

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE")

#: While a step body runs: a one-element list set to True by its first write.
_body_writes: ContextVar[list[bool] | None] = ContextVar("geneva_body_writes", default=None)


@contextmanager
def watching_writes() -> Iterator[list[bool]]:
    """Note whether the code run inside the block sends a write statement (any engine).

    The executor asks this to know whether a failed finalize lost a body's writes
    (then the body must run again) or only its own statements (then it can retry).
    """
    flag = [False]
    token = _body_writes.set(flag)
    try:
        yield flag
    finally:
        _body_writes.reset(token)


def track_writes(engine: Engine) -> None:
    """Install the statement listener :func:`watching_writes` relies on (once per engine)."""
    if getattr(engine, "_geneva_tracks_writes", False):
        return

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        flag = _body_writes.get()
        if flag is not None and not flag[0] and statement.lstrip()[:7].upper().startswith(_WRITES):
            flag[0] = True

    engine._geneva_tracks_writes = True  # type: ignore[attr-defined]
