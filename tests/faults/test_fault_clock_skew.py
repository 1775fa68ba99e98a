"""Machines whose clocks are wrong: every threshold and due time is the database's.

Each test plays a machine whose own clock is off, by shifting ``clock.machine_now``
(the one place flask-geneva reads the local clock) and forgetting what was measured,
as a process on that machine starts. The correction under test is the real one: the
offset is measured against the real database's clock (SQLite's is the real machine
clock, so the shifted source is what gets corrected there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import Rows
from helpers import queue_url

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.executor import execute
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)
rows = Rows(db, geneva)
committed = Committed(geneva)

#: What a body that must be held in progress waits for.
release = threading.Event()
runs: list[str] = []


class Held(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def hold(self) -> None:
        runs.append("hold")
        assert release.wait(30), "the test never released the body"

    @step
    def after_hold(self) -> None:
        runs.append("after_hold")


class Chain(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def one(self) -> None:
        runs.append("one")

    @step
    def two(self) -> None:
        runs.append("two")

    @step
    def three(self) -> None:
        runs.append("three")

    @step
    def four(self) -> None:
        runs.append("four")


def _noop(self: Any) -> None:
    pass


#: A long chain: one step after another.
Long: Any = type(
    "Long",
    (geneva.Workflow,),
    {"__module__": __name__, **{f"s{index:02d}": step(_noop) for index in range(24)}},
)


class Waits(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait=timedelta(minutes=10))
    def later(self) -> None:
        runs.append("later")


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    release.clear()
    runs.clear()
    yield
    release.set()


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[[timedelta], None]:
    """Play a process on a machine whose clock is off by ``skew`` (it measures afresh)."""
    real = clock.machine_now

    def skewed(skew: timedelta) -> None:
        monkeypatch.setattr(clock, "machine_now", lambda: real() + skew)
        clock.reset()  # a new process: nothing measured yet

    return skewed


def database_now() -> datetime:
    """The database's clock, read directly (what every machine must agree with)."""
    queries = {
        "postgresql": "SELECT clock_timestamp() AT TIME ZONE 'UTC'",
        "mysql": "SELECT UTC_TIMESTAMP(6)",
        "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
    }
    with geneva.engine().connect() as conn:
        value = conn.exec_driver_sql(queries[conn.dialect.name]).scalar_one()
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def is_measurement(statement: str) -> bool:
    return any(
        marker in statement for marker in ("clock_timestamp()", "UTC_TIMESTAMP(6)", "'now')")
    )


# -- the offset -------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [timedelta(hours=2), timedelta(seconds=-5)])
def test_the_clock_reads_the_databases_time_on_a_machine_whose_clock_is_off(
    app: Flask, machine: Callable[[timedelta], None], skew: timedelta
) -> None:
    machine(skew)
    assert abs(clock.machine_now() - database_now() - skew) < timedelta(seconds=1)
    assert abs(clock.offset() + skew) < timedelta(milliseconds=200)
    assert abs(clock.now() - database_now()) < timedelta(milliseconds=200)
    # A test's travel composes with the correction.
    with travel(timedelta(hours=1)):
        assert abs(clock.now() - database_now() - timedelta(hours=1)) < timedelta(seconds=1)


def test_a_machine_whose_clock_agrees_with_the_database_is_not_corrected(app: Flask) -> None:
    clock.reset()
    assert clock.offset() == timedelta(0)


# -- (a) a housekeeper 2 h ahead --------------------------------------------------------------


def test_a_housekeeper_two_hours_ahead_neither_recovers_a_healthy_step_nor_resends_a_due_one(
    app: Flask, machine: Callable[[timedelta], None]
) -> None:
    held = Held.create()
    waiting = Chain.create()
    db.session.commit()
    geneva.huey.flush()  # the chain's trigger is lost: only housekeeping would re-send it
    (hold_id,) = committed.scheduled(held).values()
    reports: list[Any] = []

    def worker() -> None:
        with app.app_context():
            reports.append(execute(geneva, app.extensions["geneva"], hold_id))

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while runs != ["hold"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runs == ["hold"], "the body never started"

        machine(timedelta(hours=2))
        with travel(timedelta(minutes=1)):  # a minute later, by the database's clock
            summary = housekeeping.run(geneva)
        assert summary.stuck_reattempted == 0 and summary.stuck_canceled == 0
        assert summary.retriggered == 0
        assert committed.history(held) == [("hold", "in_progress", None)]
        assert geneva.huey.pending_count() == 0
    finally:
        release.set()
        thread.join(30)
    assert reports[0].status == "ran"
    assert committed.history(held)[0] == ("hold", "completed", "success")
    assert runs == ["hold"]  # once: never recovered and run again
    assert committed.history(waiting) == [("one", "scheduled", None)]  # not re-sent

    # Overdue by the database's clock, the same housekeeper does re-send it.
    with travel(timedelta(minutes=16)):
        assert housekeeping.run(geneva).retriggered == 2  # the chain's step, after_hold


# -- (b) a worker 5 s behind ------------------------------------------------------------------


def test_a_worker_five_seconds_behind_runs_due_steps_at_once_at_every_hop(
    app: Flask, machine: Callable[[timedelta], None]
) -> None:
    chain = Chain.create()
    db.session.commit()
    # Hops alternate between a machine 5 s behind and one 5 s ahead: each scheduled the
    # next step by its clock, and each runs a step the other one scheduled.
    for hop, skew in enumerate([-5, 5, -5, 5]):
        machine(timedelta(seconds=skew))
        (execution_id,) = committed.scheduled(chain).values()
        report = rows.execute(app, execution_id)
        assert report.status == "ran", f"hop {hop} on a machine {skew:+} s off: {report}"
    assert runs == ["one", "two", "three", "four"]
    assert committed.state(chain) == "finished"


# -- (c) Huey's eta is on the sending machine's clock -----------------------------------------


@pytest.fixture
def huey_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return queue_url(getattr(request, "param", "memory"), tmp_path)


@pytest.mark.parametrize(
    ("db_url", "huey_url"),
    [("sqlite", "sqlite"), ("postgresql", "redis"), ("mariadb", "redis"), ("mariadb", "sqlite")],
    indirect=True,
)
@pytest.mark.parametrize("skew", [timedelta(hours=2), timedelta(seconds=-5)])
def test_a_wait_is_sent_to_huey_with_its_eta_on_the_local_clock(
    app: Flask, huey: Any, machine: Callable[[timedelta], None], skew: timedelta
) -> None:
    machine(skew)
    workflow = Waits.create()
    db.session.commit()
    (execution,) = rows.executions(workflow)
    # Due ten minutes from now by the database's clock.
    assert abs(execution.scheduled_for - database_now() - timedelta(minutes=10)) < timedelta(
        seconds=2
    )
    (task,) = huey.pending()  # the message, carrying its eta to the consumer
    assert task.args == (execution.id,)
    eta = task.eta  # naive UTC (Huey's utc=True)
    # The consumer on this machine compares the eta with its own clock: ten minutes on.
    assert abs(eta - clock.machine_now() - timedelta(minutes=10)) < timedelta(seconds=2)
    assert abs(eta - execution.scheduled_for - skew) < timedelta(seconds=1)


# -- (d) measured again when stale, not per step ----------------------------------------------


def test_the_offset_is_measured_again_when_stale_and_not_on_every_step(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    measurements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if is_measurement(statement):
            measurements.append(statement)

    engine = geneva.engine()
    workflow = Long.create()
    db.session.commit()
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        steps = 0
        while scheduled := committed.scheduled(workflow):
            (execution_id,) = scheduled.values()
            assert rows.execute(app, execution_id).status == "ran"
            steps += 1
            if steps == 12:
                assert measurements == []  # twelve steps, within the minute: none
                # Stale: the next step measures once, the ones after it not again.
                monkeypatch.setattr(clock, "REMEASURE_AFTER", 2.0)
                time.sleep(2.1)
                started = time.monotonic()
        elapsed = time.monotonic() - started
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert steps == 24
    assert committed.state(workflow) == "finished"
    assert 1 <= len(measurements) <= 1 + int(elapsed / 2.0)


# -- a database that cannot be read -----------------------------------------------------------


def test_an_unreachable_database_leaves_the_machine_clock_and_is_not_asked_on_every_call(
    tmp_path: Path, machine: Callable[[timedelta], None], caplog: pytest.LogCaptureFixture
) -> None:
    machine(timedelta(seconds=-5))
    down = Flask(__name__, instance_path=str(tmp_path / "instance"))
    down.config.update(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://postgres@127.0.0.1:1/nothing",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 2}},
        GENEVA_HUEY="memory://",
    )
    db.init_app(down)
    geneva.init_app(down)
    attempts: list[object] = []
    with down.app_context():
        sa.event.listen(geneva.engine(), "do_connect", lambda *args: attempts.append(args))
        try:
            for _ in range(5):
                assert abs(clock.now() - clock.machine_now()) < timedelta(seconds=1)
        finally:
            geneva.engine().dispose()
    assert len(attempts) == 1  # tried once, then not again for a few seconds
    assert "could not read the database's clock" in caplog.text
