"""The lease of a running step: one keeper thread per process renews it while bodies run.

An execution's lease expires ``stuck_after`` (the step's ``@step(stuck_after=...)``,
else ``GENEVA_STUCK_IN_PROGRESS_AFTER``) past ``coalesce(heartbeat_at, started_at)``;
housekeeping recovers an execution only once its lease has expired (see
:mod:`~flask_geneva.housekeeping`). The claim's ``started_at`` is the first beat, so
a body that ends before its first renewal costs nothing: no statement, no commit.

The executor runs each body inside :func:`beating`, which only adds the execution to
the process's :data:`keeper`. The keeper is one daemon thread however many bodies run:
it sleeps until the earliest renewal is due, then renews every running execution that
is due within half an interval in one ``UPDATE ... WHERE id IN (...) AND state =
'in_progress'`` per database, on a connection of its own (never the body's session).
Each execution renews at least every ``GENEVA_HEARTBEAT_INTERVAL`` and at least three
times per ``stuck_after``. A beat that fails is logged and tried again at the next
tick; it never reaches the body. The thread exits once nothing has run for
:data:`LINGER` seconds and starts again with the next body; a forked worker process
starts with an empty keeper of its own.

A worker that could not renew in time (a long GC pause, a frozen VM, a database it
could not reach) may find its execution recovered when the body returns: the
finalize sees that it is no longer ``in_progress`` and discards the outcome and the
body's writes (see :mod:`~flask_geneva.executor`).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import SingletonThreadPool
from sqlalchemy.pool import StaticPool

from . import clock
from . import store
from .logging import logger
from .states import StepState
from .transaction import run_locked

if TYPE_CHECKING:
    from flask import Flask

    from .config import GenevaConfig
    from .extension import Geneva
    from .steps import StepDefinition

#: Seconds the keeper thread waits with nothing to renew before it exits.
LINGER = 5.0
#: Renewals per lease period, at least.
BEATS_PER_LEASE = 3


def stuck_after(step: StepDefinition | None, config: GenevaConfig) -> timedelta | None:
    """The lease of ``step``: its own ``stuck_after`` or ``GENEVA_STUCK_IN_PROGRESS_AFTER``."""
    if step is not None and step.stuck_after is not None:
        return step.stuck_after
    return config.stuck_in_progress_after


def interval(step: StepDefinition | None, config: GenevaConfig) -> timedelta:
    """How often a running body of ``step`` renews its lease."""
    lease = stuck_after(step, config)
    every = config.heartbeat_interval
    return every if lease is None else min(every, lease / BEATS_PER_LEASE)


def shortest(ext: Geneva, config: GenevaConfig) -> timedelta | None:
    """The shortest lease in use: ``GENEVA_STUCK_IN_PROGRESS_AFTER`` or a step's ``stuck_after``.

    None when there is none (the setting is None and no step sets its own): nothing is
    recovered then.
    """
    leases = [config.stuck_in_progress_after] if config.stuck_in_progress_after else []
    for cls in ext.registry.values():
        for step in cls.__geneva_definition__.graph.steps.values():
            if step.stuck_after is not None:
                leases.append(step.stuck_after)
    return min(leases, default=None)


def expired(ext: Geneva, cutoff: datetime) -> sa.Select[Any]:
    """Executions in progress with no sign of life since ``cutoff``.

    A beat is never older than the start it follows, so "last sign of life before the
    cutoff" implies "started before it": the condition on ``started_at`` lets the index
    on (state, started_at) bound the rows read to the executions that started before
    the cutoff and still run, and only those are checked for a recent beat.
    """
    e = ext.tables.executions
    return sa.select(e.c.id, e.c.workflow_id).where(
        e.c.state == StepState.IN_PROGRESS,
        e.c.started_at < cutoff,
        sa.func.coalesce(e.c.heartbeat_at, e.c.started_at) < cutoff,
    )


@contextmanager
def beating(
    ext: Geneva, workflow_id: int, execution_id: int, step: StepDefinition | None
) -> Iterator[None]:
    """Renew the lease of ``execution_id`` while the ``with`` block runs.

    Call it in the app context the body runs in. Entering and leaving only touch the
    keeper's table in memory; the database sees a beat only once the body has run
    longer than one interval.
    """
    state = ext.get_state()
    engine = ext.engine()
    if isinstance(engine.pool, StaticPool | SingletonThreadPool):
        # An in-memory SQLite database: every thread shares the one connection, so a
        # beat would run inside the body's transaction (and commit it). One process
        # owns such a database; give its long steps a stuck_after to match.
        yield
        return
    seconds = interval(step, state.config).total_seconds()
    entry = _Entry(
        app=state.app,
        engine=engine,
        tables=ext.tables,
        workflow_id=workflow_id,
        execution_id=execution_id,
        interval=seconds,
        next_beat=time.monotonic() + seconds,
    )
    token = keeper.add(entry)
    try:
        yield
    finally:
        keeper.remove(token)


@dataclass(eq=False)
class _Entry:
    """One running body whose lease the keeper renews."""

    app: Flask
    engine: Engine
    tables: store.Tables
    workflow_id: int
    execution_id: int
    #: Seconds between renewals.
    interval: float
    #: ``time.monotonic()`` of the next renewal.
    next_beat: float


class Keeper:
    """The process's renewer of leases: one thread for every body that runs.

    :meth:`paused` stops it for a while, as a process frozen by a long pause would be
    (tests of lost leases use it); entering and leaving :func:`beating` never wait for
    it, nor for the database.
    """

    def __init__(self, *, linger: float = LINGER) -> None:
        self.linger = linger
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._entries: dict[int, _Entry] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        #: When the thread will look again on its own (monotonic); an entry due
        #: earlier wakes it.
        self._wake_at = math.inf
        #: Cleared while paused; the thread parks, and says so with ``_parked``.
        self._resumed = threading.Event()
        self._resumed.set()
        self._parked = threading.Event()
        #: Beats sent (statements that renewed at least one lease), for tests and logs.
        self.beats = 0

    @property
    def thread(self) -> threading.Thread | None:
        """The keeper thread while it runs."""
        return self._thread

    def running(self) -> list[int]:
        """The execution ids whose lease is being renewed."""
        with self._cond:
            return sorted(e.execution_id for e in self._entries.values())

    def add(self, entry: _Entry) -> int:
        with self._cond:
            token = next(self._tokens)
            self._entries[token] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="geneva-lease-keeper", daemon=True
                )
                self._thread.start()
            elif entry.next_beat < self._wake_at:
                self._cond.notify()
            return token

    def remove(self, token: int) -> None:
        with self._cond:
            self._entries.pop(token, None)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop renewing leases inside the block: no beat is sent until it ends.

        Returns once a beat in flight has finished, so no lease is renewed after the
        block has started.
        """
        self._resumed.clear()
        with self._cond:
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread.is_alive():
            self._parked.wait(30)
        try:
            yield
        finally:
            self._resumed.set()

    def _run(self) -> None:
        idle_since: float | None = None
        while True:
            if not self._resumed.is_set():
                self._parked.set()
                self._resumed.wait()
                self._parked.clear()
                continue
            with self._cond:
                if not self._resumed.is_set():
                    continue  # paused meanwhile: park first
                now = time.monotonic()
                if not self._entries:
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= self.linger:
                        self._thread = None
                        return
                    self._wake_at = idle_since + self.linger
                    self._cond.wait(self._wake_at - now)
                    continue
                idle_since = None
                first = min(e.next_beat for e in self._entries.values())
                if first > now:
                    self._wake_at = first
                    self._cond.wait(first - now)
                    continue
                # Renew, with the one that is due, every lease due within half an
                # interval: the bodies running side by side share one statement.
                slack = min(e.interval for e in self._entries.values()) / 2
                due = [e for e in self._entries.values() if e.next_beat <= now + slack]
                for entry in due:
                    entry.next_beat = now + entry.interval
                self._wake_at = math.inf
            self._beat(due)

    def _beat(self, due: list[_Entry]) -> None:
        """Renew the leases of ``due``: one statement per database, outside the lock."""
        groups: dict[tuple[int, int], list[_Entry]] = {}
        for entry in due:
            groups.setdefault((id(entry.engine), id(entry.tables)), []).append(entry)
        for entries in groups.values():
            first = entries[0]
            for ids in _rounds(entries):
                try:
                    renewed = _renew(first, ids)
                except Exception:
                    logger.warning(
                        "could not renew the lease of execution(s) %s; trying again at the "
                        "next beat",
                        ", ".join(map(str, ids)),
                        exc_info=True,
                    )
                    continue
                if renewed:
                    self.beats += 1


def _renew(entry: _Entry, ids: list[int]) -> int:
    # In the body's app context, as every clock.now() of the app is read.
    with entry.app.app_context():
        return run_locked(
            entry.engine, lambda conn: store.beat(conn, entry.tables, ids, clock.now())
        )


def _rounds(entries: list[_Entry]) -> Iterator[list[int]]:
    """Split execution ids into statements holding at most one execution per workflow.

    A finalize (or an operator's command) locks the workflow row and then that
    workflow's executions; a beat locks only executions. Were two of one workflow's
    executions in one beat, the beat could hold one and wait for the other while the
    finalize holds the other and waits for the first: a deadlock. One execution per
    workflow per statement cannot close that cycle. Bodies of one workflow running
    side by side in one process are rare, so this is nearly always one statement.
    """
    rounds: list[list[_Entry]] = []
    for entry in entries:
        free = (r for r in rounds if all(e.workflow_id != entry.workflow_id for e in r))
        target = next(free, None)
        if target is None:
            target = []
            rounds.append(target)
        target.append(entry)
    for members in rounds:
        yield sorted(e.execution_id for e in members)


#: The process's keeper.
keeper = Keeper()

if hasattr(os, "register_at_fork"):
    # A forked worker process has none of its parent's threads: it starts with an empty
    # keeper (and fresh locks) of its own.
    os.register_at_fork(after_in_child=keeper._reset)
