"""Leases: a healthy long step is never run twice at once, a silent one is recovered.

A real consumer runs the steps on its worker threads while housekeeping runs beside
it, on every database. A body that runs longer than its ``stuck_after`` keeps its
lease through the keeper's beats and is never recovered. When the beats stop (the
keeper is really paused, as a process frozen by a long GC pause would be), the
execution is recovered once its own ``stuck_after`` has passed, not the default;
the reattempt runs to the end; and when the old body finally returns, its outcome
and its writes are discarded: exactly one effect row. Rows a 0.1 worker left (no
heartbeat) are judged by their start.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import TIMEOUT
from helpers import Committed
from helpers import Rows
from helpers import mark_model
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import ConfigurationError
from flask_geneva import DefinitionError
from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import housekeeping
from flask_geneva import lease
from flask_geneva import step
from flask_geneva import store
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)

LeaseMark = mark_model(db, "fault_lease_marks")
rows = Rows(db, geneva, LeaseMark)
committed = Committed(geneva, LeaseMark)

#: How long the slow step's body really runs: several of its leases.
SLOW_SECONDS = 4.0

#: Set by a test: while ``hold`` is set, a GatedStep body says it entered and waits.
_gate: dict[str, Any] = {}


def gate() -> None:
    if _gate.get("hold"):
        _gate["entered"].release()
        assert _gate["release"].wait(TIMEOUT), "the test never released the body"


class SlowStep(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(stuck_after=1.5)
    def slow(self) -> None:
        time.sleep(SLOW_SECONDS)  # real work, longer than its lease
        rows.mark(self, "slow")

    @step
    def after(self) -> None:
        rows.mark(self, "after")


class ShortLease(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(stuck_after=1)
    def only(self) -> None:
        gate()
        rows.mark(self, "only")


class DefaultLease(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        gate()
        rows.mark(self, "only")


@pytest.fixture
def leases(app: Flask) -> Iterator[None]:
    """Beats every 0.2 s; a default lease of 30 s, far beyond any test's wait."""
    state = app.extensions["geneva"]
    state.config = dataclasses.replace(
        state.config,
        heartbeat_interval=timedelta(seconds=0.2),
        stuck_in_progress_after=timedelta(seconds=30),
    )
    _gate.update(hold=False, entered=threading.Semaphore(0), release=threading.Event())
    try:
        yield
    finally:
        _gate["release"].set()
        _gate.clear()


def housekeeping_beside(app: Flask) -> tuple[threading.Event, threading.Thread, list[Any]]:
    """Run housekeeping again and again on a thread of its own until the event is set."""
    stop = threading.Event()
    summaries: list[Any] = []

    def loop() -> None:
        with app.app_context():
            while not stop.is_set():
                summaries.append(housekeeping.run(geneva))
                time.sleep(0.1)

    thread = threading.Thread(target=loop, name="housekeeping-beside")
    thread.start()
    return stop, thread, summaries


def recovered(summaries: list[Any]) -> int:
    return sum(s.stuck_reattempted + s.stuck_canceled + s.stuck_paused for s in summaries)


def executions(workflow_id: int) -> list[Any]:
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        return list(
            conn.execute(sa.select(e).where(e.c.workflow_id == workflow_id).order_by(e.c.id))
        )


def wait_entered(count: int) -> None:
    for _ in range(count):
        assert _gate["entered"].acquire(timeout=TIMEOUT), "a body never started"


# -- (a) a healthy long step keeps its lease ----------------------------------------------


@pytest.mark.slow
def test_a_step_running_longer_than_its_lease_is_never_recovered_while_it_beats(app, huey, leases):
    workflow = SlowStep.create()
    workflow_id = workflow.id
    stop, thread, summaries = housekeeping_beside(app)
    try:
        with running_consumer(huey, workers=2, periodic=False):
            wait_until(
                lambda: committed.state(workflow_id) == "finished",
                timeout=TIMEOUT + SLOW_SECONDS,
                message=lambda: f"not finished: {committed.history(workflow_id)}",
            )
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert len(summaries) > 10  # housekeeping ran all along the slow body
    assert recovered(summaries) == 0
    assert committed.marks(workflow_id) == ["slow", "after"]
    slow, after = executions(workflow_id)
    assert [(x.step_name, x.state, x.outcome) for x in (slow, after)] == [
        ("slow", "completed", "success"),
        ("after", "completed", "success"),
    ]
    # The body outlived its lease of 1.5 s several times over, and it kept beating.
    assert slow.heartbeat_at is not None
    assert (slow.heartbeat_at - slow.started_at).total_seconds() > 1.5


# -- (b) a step that stopped beating: its own stuck_after -----------------------------------


@pytest.mark.slow
def test_a_step_that_stopped_beating_is_recovered_after_its_own_stuck_after(app, huey, leases):
    _gate["hold"] = True
    short, default = ShortLease.create(), DefaultLease.create()
    short_id, default_id = short.id, default.id
    with running_consumer(huey, workers=3, periodic=False):
        wait_entered(2)
        with lease.keeper.paused():  # the worker froze: no beat from now on
            frozen_at = clock.now()
            wait_until(
                lambda: housekeeping.run(geneva).stuck_reattempted,
                message="the short lease was never recovered",
            )
            lost, _fresh = executions(short_id)
            (still_running,) = executions(default_id)
            _gate["hold"] = False
            _gate["release"].set()
            wait_until(lambda: not lease.keeper.running())
        wait_until(lambda: committed.state(short_id) == committed.state(default_id) == "finished")

    assert (lost.state, lost.outcome) == ("failed", "recovered")
    assert "more than 0:00:01 without a heartbeat" in lost.error_message
    last_sign = lost.heartbeat_at or lost.started_at
    silence = (lost.failed_at - last_sign).total_seconds()
    assert 1 <= silence < 30, silence  # its own stuck_after (1 s), not the default (30 s)
    assert lost.failed_at >= frozen_at
    # Silent as long, the step without a stuck_after of its own kept its 30 s lease.
    assert (still_running.state, still_running.failed_at) == ("in_progress", None)
    assert committed.history(default_id) == [("only", "completed", "success")]
    assert committed.history(short_id) == [
        ("only", "failed", "recovered"),
        ("only", "completed", "success"),
    ]
    assert committed.marks(short_id) == committed.marks(default_id) == ["only"]


# -- (c) a lost lease: the old body's outcome and writes are discarded ---------------------


@pytest.mark.slow
def test_a_worker_that_lost_its_lease_does_not_finalize_over_the_recovery(
    app, huey, leases, caplog
):
    caplog.set_level(logging.WARNING, logger="flask_geneva")
    _gate["hold"] = True
    workflow_id = ShortLease.create().id
    with running_consumer(huey, workers=2, periodic=False):
        wait_entered(1)
        with lease.keeper.paused():  # a long GC pause: the keeper cannot beat
            wait_until(
                lambda: housekeeping.run(geneva).stuck_reattempted,
                message="the lost lease was never recovered",
            )
            # The reattempt runs to the end on the other worker while the old body
            # is still blocked.
            _gate["hold"] = False
            wait_until(lambda: committed.state(workflow_id) == "finished")
            assert committed.marks(workflow_id) == ["only"]
            # Now the old body returns: it writes its effect row and finalizes.
            _gate["release"].set()
            wait_until(lambda: not lease.keeper.running())
    assert committed.marks(workflow_id) == ["only"]  # exactly one effect row
    assert committed.history(workflow_id) == [
        ("only", "failed", "recovered"),
        ("only", "completed", "success"),
    ]
    assert committed.state(workflow_id) == "finished"
    discarded = [r for r in caplog.records if "outcome and writes are discarded" in r.getMessage()]
    assert len(discarded) == 1


# -- (d) a row 0.1 left, and the check under the lock --------------------------------------


def set_in_progress(workflow_id: int, **values: Any) -> None:
    """Make the workflow's one execution in progress, as a (perhaps 0.1) worker left it."""
    w, e = geneva.tables.workflows, geneva.tables.executions
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == workflow_id).values(state="performing"))
        conn.execute(
            sa.update(e).where(e.c.workflow_id == workflow_id).values(state="in_progress", **values)
        )


def test_a_row_without_a_heartbeat_is_judged_by_its_start(app):
    now = clock.now()
    started_long_ago = DefaultLease.create(allow_multiple=True).id
    beat_recently = DefaultLease.create(allow_multiple=True).id
    started_recently = DefaultLease.create(allow_multiple=True).id
    set_in_progress(started_long_ago, started_at=now - timedelta(hours=2), heartbeat_at=None)
    set_in_progress(
        beat_recently,
        started_at=now - timedelta(hours=2),
        heartbeat_at=now - timedelta(minutes=1),
    )
    set_in_progress(started_recently, started_at=now - timedelta(minutes=30), heartbeat_at=None)

    summary = housekeeping.run(geneva)

    assert summary.stuck_reattempted == 1  # the default lease: one hour
    assert committed.history(started_long_ago) == [
        ("only", "failed", "recovered"),
        ("only", "scheduled", None),
    ]
    assert committed.history(beat_recently) == [("only", "in_progress", None)]
    assert committed.history(started_recently) == [("only", "in_progress", None)]


def test_a_beat_landing_between_the_candidate_query_and_the_lock_wins(app, monkeypatch):
    workflow_id = DefaultLease.create().id
    set_in_progress(workflow_id, started_at=clock.now() - timedelta(hours=2))
    ((execution_id, *_),) = executions(workflow_id)
    look = store.recovery_streak

    def beat_then_look(conn: Any, *args: Any) -> int:
        # Housekeeping has read its candidates and not yet locked the workflow: the
        # worker's keeper renews the lease now, on a connection of its own.
        with geneva.engine().begin() as other:
            assert store.beat(other, geneva.tables, [execution_id], clock.now()) == 1
        return look(conn, *args)

    monkeypatch.setattr(store, "recovery_streak", beat_then_look)
    assert housekeeping.run(geneva).stuck_reattempted == 0
    assert committed.history(workflow_id) == [("only", "in_progress", None)]


def test_a_step_of_a_class_this_process_does_not_know_gets_the_default_lease(app):
    now = clock.now()
    gone = DefaultLease.create(allow_multiple=True).id
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == gone).values(type="RemovedWorkflow"))
    set_in_progress(gone, started_at=now - timedelta(minutes=59))
    assert housekeeping.run(geneva).stuck_reattempted == 0
    set_in_progress(gone, started_at=now - timedelta(minutes=61))
    assert housekeeping.run(geneva).stuck_reattempted == 1


# -- the keeper: one thread, one statement per tick, nothing for short bodies --------------


@pytest.fixture
def quick_keeper(monkeypatch: pytest.MonkeyPatch) -> lease.Keeper:
    """The process's keeper, lingering 0.3 s instead of 5 once idle."""
    keeper = lease.Keeper(linger=0.3)
    monkeypatch.setattr(lease, "keeper", keeper)
    return keeper


def test_one_keeper_thread_beats_for_every_running_body_then_exits(app, quick_keeper):
    state = app.extensions["geneva"]
    state.config = dataclasses.replace(state.config, heartbeat_interval=timedelta(seconds=0.1))
    ids = [DefaultLease.create(allow_multiple=True).id for _ in range(5)]
    started = clock.now() - timedelta(seconds=1)
    for workflow_id in ids:
        set_in_progress(workflow_id, started_at=started)
    executions_ids = [executions(w)[0].id for w in ids]
    threads = set()
    with ExitStack() as running:
        for workflow_id, execution_id in zip(ids, executions_ids, strict=True):
            running.enter_context(lease.beating(geneva, workflow_id, execution_id, None))
            threads.add(quick_keeper.thread)
        (thread,) = threads  # one thread for the five bodies
        assert thread is not None and thread.is_alive()
        wait_until(lambda: all(executions(w)[0].heartbeat_at for w in ids))
        # Five bodies of five workflows: one statement per tick for all of them.
        beats = quick_keeper.beats
        time.sleep(1.0)
        # About ten ticks, not fifty statements (and at least a couple on a busy box).
        assert 2 <= quick_keeper.beats - beats <= 12
    wait_until(lambda: quick_keeper.thread is None, timeout=5)  # idle: it exits
    thread.join(5)
    assert not thread.is_alive()


def test_bodies_shorter_than_a_beat_send_no_beat_at_all(app):
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "SET heartbeat_at" in statement:
            statements.append(statement)

    engine = geneva.engine()
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            speedrun(DefaultLease.create(allow_multiple=True))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert statements == []


def test_a_beat_that_fails_is_logged_and_never_stops_the_others(
    app, quick_keeper, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="flask_geneva")
    workflow_id = DefaultLease.create().id
    set_in_progress(workflow_id, started_at=clock.now())
    (execution,) = executions(workflow_id)
    unreachable = sa.create_engine(f"sqlite:///{tmp_path}/no/such/dir/app.db")
    now = time.monotonic()
    broken = lease._Entry(app, unreachable, geneva.tables, 999, 999, 0.1, now)
    healthy = lease._Entry(app, geneva.engine(), geneva.tables, workflow_id, execution.id, 0.1, now)
    tokens = [quick_keeper.add(broken), quick_keeper.add(healthy)]
    try:
        wait_until(lambda: executions(workflow_id)[0].heartbeat_at is not None)
        wait_until(lambda: "could not renew the lease of execution(s) 999" in caplog.text)
        assert quick_keeper.thread is not None and quick_keeper.thread.is_alive()
    finally:
        for token in tokens:
            quick_keeper.remove(token)
        unreachable.dispose()


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 0.5, "1h", float("nan"), timedelta(days=400)])
def test_a_stuck_after_out_of_range_is_a_definition_error(value):
    with pytest.raises(DefinitionError, match=r"BadLease\.only: invalid stuck_after"):

        class BadLease(geneva.Workflow):  # type: ignore[name-defined,misc]
            __geneva_type__ = f"BadLease{id(value)}"

            @step(stuck_after=value)
            def only(self) -> None:
                pass


def test_stuck_after_takes_seconds_or_a_timedelta():
    assert ShortLease.__geneva_definition__.graph.steps["only"].stuck_after == timedelta(seconds=1)
    assert DefaultLease.__geneva_definition__.graph.steps["only"].stuck_after is None


@pytest.mark.parametrize("value", [0, -1, 0.01, "30s", None])
def test_a_heartbeat_interval_out_of_range_fails_at_init_app(tmp_path, value):
    other = SQLAlchemy()
    app = Flask("heartbeat", instance_path=str(tmp_path))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/other.db",
        GENEVA_HUEY="memory://",
        GENEVA_HEARTBEAT_INTERVAL=value,
    )
    other.init_app(app)
    with pytest.raises(ConfigurationError, match="GENEVA_HEARTBEAT_INTERVAL"):
        Geneva(other).init_app(app)


def test_the_beat_interval_is_at_most_a_third_of_the_lease(app):
    config = app.extensions["geneva"].config
    short = ShortLease.__geneva_definition__.graph.steps["only"]
    default = DefaultLease.__geneva_definition__.graph.steps["only"]
    assert lease.interval(short, config) == timedelta(seconds=1) / 3
    assert lease.interval(default, config) == timedelta(seconds=30)  # GENEVA_HEARTBEAT_INTERVAL
