"""Scheduled workflows on every database: each (class, hero, tick) starts once, whoever runs it.

The tick clock is flask-geneva's (``clock.now()``), moved with ``testing.travel`` to
fixed moments; every count is read from what is committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from huey import crontab

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import schedules
from flask_geneva import step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

TIMEOUT = 30
NOON = datetime(2031, 3, 4, 12, 0, 10)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "sched_accounts"
    id = sa.Column(sa.Integer, primary_key=True)
    active = sa.Column(sa.Boolean, nullable=False, default=True)


class EveryFive(geneva.Workflow):  # type: ignore[name-defined,misc]
    schedule = crontab(minute="*/5")

    @step
    def only(self) -> None:
        pass


class CatchingUp(geneva.Workflow):  # type: ignore[name-defined,misc]
    schedule = crontab(minute="*/5")
    schedule_catch_up = 3

    @step
    def only(self) -> None:
        pass


class Statement(geneva.Workflow):  # type: ignore[name-defined,misc]
    schedule = crontab(minute="*/10")

    @classmethod
    def scheduled_heroes(cls) -> list[Account]:
        return list(
            db.session.scalars(sa.select(Account).where(Account.active).order_by(Account.id))
        )

    @step
    def only(self) -> None:
        pass


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    """flask-geneva's clock at ``moment`` inside the block."""
    with travel(moment - clock.now()):
        yield


def committed(workflow_type: str) -> list[tuple[Any, ...]]:
    """(hero_id, tick, outcome, workflow_id) of the committed ticks of a class, by tick."""
    t = geneva.schedule_ticks
    query = (
        sa.select(t.c.hero_id, t.c.tick, t.c.outcome, t.c.workflow_id)
        .where(t.c.type == workflow_type)
        .order_by(t.c.tick, t.c.hero_type, t.c.hero_id)
    )
    with geneva.engine().connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def workflows(workflow_type: str) -> list[tuple[Any, ...]]:
    """(id, hero_id, state) of the committed workflows of a class."""
    w = geneva.tables.workflows
    query = sa.select(w.c.id, w.c.hero_id, w.c.state).where(w.c.type == workflow_type)
    with geneva.engine().connect() as conn:
        return [tuple(row) for row in conn.execute(query.order_by(w.c.id))]


def finish_all() -> None:
    """Mark every workflow finished, as if its steps had run."""
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(geneva.tables.workflows).values(state="finished"))


def test_a_five_minute_schedule_starts_one_workflow_per_tick_recorded_with_it(app: Flask) -> None:
    with at(NOON):
        summary = schedules.run(geneva)
        schedules.run(geneva)  # the same minute again: nothing new
    assert summary.started >= 1
    with at(NOON.replace(minute=3)):
        schedules.run(geneva)  # not a tick
    with at(NOON.replace(minute=5)):
        schedules.run(geneva)

    started = workflows("EveryFive")
    assert len(started) == 2
    assert all(hero is None and state == "ready" for _, hero, state in started)
    ticks = committed("EveryFive")
    assert [(tick, outcome) for _, tick, outcome, _ in ticks] == [
        (datetime(2031, 3, 4, 12, 0), "started"),
        (datetime(2031, 3, 4, 12, 5), "started"),
    ]
    # Each tick names the workflow it started, and each workflow has its first step.
    assert [wf_id for *_, wf_id in ticks] == [wf_id for wf_id, _, _ in started]
    for wf_id, _, _ in started:
        assert [e.step_name for e in db.session.get(EveryFive, wf_id).executions] == ["only"]


def test_a_tick_whose_workflow_fails_to_start_is_not_recorded_and_starts_at_the_next_run(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    failures = []

    def refuse_first_step(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            statement.lstrip().upper().startswith("INSERT INTO GENEVA_STEP_EXECUTIONS")
            and not failures
        ):
            failures.append(statement)
            raise RuntimeError("the database went away mid-start")

    engine = geneva.engine()
    sa.event.listen(engine, "before_cursor_execute", refuse_first_step)
    try:
        with at(NOON):
            schedules.run(geneva)
    finally:
        sa.event.remove(engine, "before_cursor_execute", refuse_first_step)
    # The tick's row and the workflow row were one transaction: neither is kept.
    assert failures
    first_class = sorted(geneva.registry)[0]  # the first class a run starts
    assert committed(first_class) == [] and workflows(first_class) == []
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.getMessage() == (
        f"[{first_class}] could not start its schedule tick 2031-03-04 12:00:00; "
        "the next run tries again"
    )
    # The failure of one class kept no other from starting.
    assert len(workflows("EveryFive")) == 1

    with at(NOON.replace(second=40)):
        schedules.run(geneva)
    assert len(workflows(first_class)) == 1
    assert [outcome for _, _, outcome, _ in committed(first_class)] == ["started"]
    assert len(workflows("EveryFive")) == 1


def test_scheduled_heroes_get_one_workflow_each_and_a_busy_hero_is_skipped_once(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    busy, free, _inactive = Account(), Account(), Account(active=False)
    db.session.add_all([busy, free, _inactive])
    db.session.commit()
    busy_id, free_id = str(busy.id), str(free.id)
    ongoing = Statement.create(busy)

    caplog.set_level(logging.INFO, logger="flask_geneva")
    with at(NOON):
        summary = schedules.run(geneva)
        again = schedules.run(geneva)
    assert summary.skipped == 1 and again.skipped == 0 and again.started == 0

    heroes = {hero for _, hero, _ in workflows("Statement")}
    assert heroes == {busy_id, free_id}
    assert len(workflows("Statement")) == 2  # the busy hero keeps its one ongoing workflow
    tick = datetime(2031, 3, 4, 12, 0)
    assert committed("Statement") == [
        ("", tick, "ticked", None),
        (busy_id, tick, "skipped", None),
        (free_id, tick, "started", workflows("Statement")[1][0]),
    ]
    skips = [r for r in caplog.records if "schedule tick" in r.getMessage()]
    assert len(skips) == 1
    assert f":{busy_id}" in skips[0].getMessage()
    assert f"id={ongoing.id}" in skips[0].getMessage()

    # Next tick the busy hero's workflow has finished: it starts again, and now the
    # other hero (its 12:00 workflow still ongoing) is the one skipped.
    db.session.execute(
        sa.update(geneva.tables.workflows)
        .where(geneva.tables.workflows.c.id == ongoing.id)
        .values(state="finished")
    )
    db.session.commit()
    with at(NOON.replace(minute=10)):
        schedules.run(geneva)
    at_ten = {hero: outcome for hero, tick, outcome, _ in committed("Statement") if tick.minute}
    assert at_ten == {"": "ticked", busy_id: "started", free_id: "skipped"}


def test_two_consumers_running_the_task_at_once_start_each_class_hero_and_tick_once(
    app: Flask,
) -> None:
    accounts = [Account() for _ in range(3)]
    db.session.add_all(accounts)
    db.session.commit()
    db.session.remove()
    rounds = [NOON, NOON.replace(minute=10), NOON.replace(minute=20)]
    summaries: list[schedules.ScheduleSummary] = []
    errors: list[BaseException] = []

    for moment in rounds:
        barrier = threading.Barrier(2, timeout=TIMEOUT)

        def consumer(barrier: threading.Barrier = barrier) -> None:
            try:
                with app.app_context():
                    barrier.wait()
                    summaries.append(schedules.run(geneva))
                    db.session.remove()
            except BaseException as error:  # reported below
                errors.append(error)

        with at(moment):
            threads = [threading.Thread(target=consumer, daemon=True) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT)
        finish_all()  # so the next round's heroes are free again
    assert errors == []
    assert len(summaries) == 6

    # Per round: EveryFive, CatchingUp (the first round: 12:00 only; later ones up to
    # three ticks) and three Statements, each started by exactly one of the two.
    assert len(workflows("Statement")) == 3 * len(rounds)
    assert len(workflows("EveryFive")) == len(rounds)
    statement_ticks = [row for row in committed("Statement") if row[2] == "started"]
    assert len({(hero, tick) for hero, tick, _, _ in statement_ticks}) == 3 * len(rounds)
    started = sum(s.started for s in summaries)
    total = sum(len(workflows(t)) for t in ("EveryFive", "CatchingUp", "Statement"))
    assert started == total
    assert sum(s.taken for s in summaries) > 0  # the two really raced for the same rows


def test_a_missed_tick_is_not_back_filled_unless_the_class_catches_up(app: Flask) -> None:
    with at(NOON):
        schedules.run(geneva)
    with at(NOON.replace(hour=13)):  # the task did not run for an hour
        schedules.run(geneva)

    # Only the latest due tick of the hour.
    assert [tick.strftime("%H:%M") for _, tick, _, _ in committed("EveryFive")] == [
        "12:00",
        "13:00",
    ]
    # schedule_catch_up = 3: the three latest missed ticks, oldest first.
    assert [tick.strftime("%H:%M") for _, tick, _, _ in committed("CatchingUp")] == [
        "12:00",
        "12:50",
        "12:55",
        "13:00",
    ]
    assert len(workflows("CatchingUp")) == 4


def test_a_run_when_nothing_is_due_is_one_small_query(app: Flask) -> None:
    with at(NOON):
        schedules.run(geneva)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = geneva.engine()
    with at(NOON.replace(minute=2)):
        clock.now()  # the clock's own measurement is not the run's
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            summary = schedules.run(geneva)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    assert summary == schedules.ScheduleSummary()
    assert len(statements) == 1, statements
    assert "geneva_schedule_ticks" in statements[0]


def test_the_periodic_task_runs_every_minute_and_starts_the_due_ticks(app: Flask) -> None:
    state = app.extensions["geneva"]
    huey = state.huey
    task_names = {t.name for t in huey.read_periodic(datetime(2031, 3, 4, 12, 7))}
    assert "geneva.schedules" in task_names
    assert "geneva.housekeeping" not in task_names  # housekeeping runs every 5 minutes
    with at(NOON):
        state.schedules_task.call_local()
    assert len(workflows("EveryFive")) == 1


def test_flask_geneva_schedules_lists_each_class_its_crontab_in_words_and_next_tick(
    app: Flask,
) -> None:
    with at(NOON.replace(minute=7)):
        result = app.test_cli_runner().invoke(args=["geneva", "schedules"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "CatchingUp: every 5 minutes (*/5 * * * *), catches up to 3 missed ticks; "
        "next tick 2031-03-04 12:10 UTC",
        "EveryFive: every 5 minutes (*/5 * * * *); next tick 2031-03-04 12:10 UTC",
        "Statement: every 10 minutes (*/10 * * * *), one workflow per hero of "
        "scheduled_heroes(); next tick 2031-03-04 12:10 UTC",
    ]


def test_ticks_too_old_to_start_again_are_deleted_by_a_run_that_ticks(app: Flask) -> None:
    with at(NOON):
        schedules.run(geneva)
    later = NOON + schedules.MAX_LOOKBACK + timedelta(minutes=5)
    with at(later):
        schedules.run(geneva)
    ticks = [tick for _, tick, _, _ in committed("EveryFive")]
    assert ticks == [later.replace(second=0)]
    assert len(workflows("EveryFive")) == 2  # the workflows themselves are not touched


def test_a_run_that_fails_midway_through_the_heroes_starts_the_rest_at_the_next_run(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = Account(), Account()
    db.session.add_all([first, second])
    db.session.commit()
    first_id, second_id = str(first.id), str(second.id)
    inserts: list[str] = []

    def refuse_second_statement_start(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO GENEVA_WORKFLOWS"):
            inserts.append(statement)
            if len(inserts) == 2:
                raise RuntimeError("the worker's connection broke")

    engine = geneva.engine()
    with at(NOON):
        sa.event.listen(engine, "before_cursor_execute", refuse_second_statement_start)
        try:
            # Only Statement is due (the other classes' 12:00 tick is marked done here):
            # its first hero starts, the second one's start breaks.
            for name in ("CatchingUp", "EveryFive"):
                with geneva.engine().begin() as conn:
                    conn.execute(
                        sa.insert(geneva.schedule_ticks).values(
                            type=name,
                            hero_type="",
                            hero_id="",
                            tick=NOON.replace(minute=0, second=0),
                            outcome="started",
                            created_at=NOON,
                        )
                    )
            schedules.run(geneva)
        finally:
            sa.event.remove(engine, "before_cursor_execute", refuse_second_statement_start)
    assert [hero for _, hero, _ in workflows("Statement")] == [first_id]
    assert "ticked" not in [outcome for _, _, outcome, _ in committed("Statement")]
    assert any("could not start its schedule tick" in r.getMessage() for r in caplog.records)

    with at(NOON.replace(second=40)):  # the same tick, still unmarked
        schedules.run(geneva)
    assert sorted(hero for _, hero, _ in workflows("Statement")) == [first_id, second_id]
    outcomes = {hero: outcome for hero, _, outcome, _ in committed("Statement")}
    assert outcomes == {"": "ticked", first_id: "started", second_id: "started"}
