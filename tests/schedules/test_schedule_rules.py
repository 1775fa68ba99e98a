"""Schedule rules without a database: definition errors, due ticks, crontabs in words.

The last tests build a one-file app of their own on SQLite to see when the
``geneva.schedules`` periodic task exists.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from huey import crontab

from flask_geneva import DefinitionError
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.crontabs import coerce
from flask_geneva.crontabs import crontab as recorded_crontab
from flask_geneva.schedules import FIRST_LOOKBACK
from flask_geneva.schedules import MAX_LOOKBACK
from flask_geneva.schedules import due_ticks

db = SQLAlchemy()
geneva = Geneva(db)

T = datetime(2031, 3, 4, 12, 0)
EVERY_FIVE = coerce(crontab(minute="*/5"), "test")


def minutes(*values: int) -> list[datetime]:
    return [T + timedelta(minutes=m) for m in values]


# -- due ticks ------------------------------------------------------------------------


def test_only_the_latest_tick_since_the_last_recorded_one_is_due_by_default() -> None:
    assert due_ticks(EVERY_FIVE, last=T, now=T + timedelta(minutes=61, seconds=5)) == minutes(60)


def test_with_catch_up_the_latest_missed_ticks_up_to_the_bound_are_due_oldest_first() -> None:
    now = T + timedelta(minutes=61)
    assert due_ticks(EVERY_FIVE, last=T, now=now, catch_up=3) == minutes(50, 55, 60)
    assert due_ticks(EVERY_FIVE, last=T, now=now, catch_up=100) == minutes(*range(5, 61, 5))


def test_nothing_is_due_in_the_minute_already_recorded_or_between_ticks() -> None:
    assert due_ticks(EVERY_FIVE, last=T, now=T + timedelta(seconds=50)) == []
    assert due_ticks(EVERY_FIVE, last=T, now=T + timedelta(minutes=4, seconds=59)) == []


def test_a_class_that_never_ticked_starts_with_the_ticks_of_the_last_minutes_only() -> None:
    daily = coerce(crontab(minute="0", hour="3"), "test")
    assert due_ticks(daily, last=None, now=T, catch_up=100) == []
    late = T + FIRST_LOOKBACK - timedelta(minutes=1)
    assert due_ticks(EVERY_FIVE, last=None, now=late, catch_up=100) == minutes(0)


def test_ticks_older_than_the_lookback_are_never_started() -> None:
    hourly = coerce(crontab(minute="0"), "test")
    long_ago = T - MAX_LOOKBACK - timedelta(days=3)
    ticks = due_ticks(hourly, last=long_ago, now=T, catch_up=1000)
    assert ticks[0] == T - MAX_LOOKBACK + timedelta(hours=1)
    assert ticks[-1] == T and len(ticks) == 8 * 24


@pytest.mark.parametrize(
    "schedule",
    [
        crontab(minute="0", hour="7", day_of_week="1"),
        crontab(minute="15,45", hour="*/6"),
        crontab(minute="0", hour="0", day="1,15"),
        crontab(minute="30", hour="23", day="31"),
    ],
)
def test_skipping_hours_without_a_tick_finds_the_same_ticks_as_every_minute(schedule) -> None:
    known = coerce(schedule, "test")
    every_minute = coerce(lambda moment: bool(schedule(moment)), "test")
    assert known.hours is not None and every_minute.hours is None
    last, now = T - timedelta(days=40), T + timedelta(hours=5, minutes=17)
    assert due_ticks(known, last=last, now=now, catch_up=1000) == due_ticks(
        every_minute, last=last, now=now, catch_up=1000
    )
    assert known.next_tick(T) == every_minute.next_tick(T) is not None


# -- crontabs in words ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        (crontab(), "every minute (* * * * *)"),
        (crontab(minute="*/15"), "every 15 minutes (*/15 * * * *)"),
        (crontab(minute=30), "every hour at minute 30 (30 * * * *)"),
        (crontab(minute="30", hour="3"), "every day at 03:30 (30 3 * * *)"),
        (crontab(minute="0", hour="9", day_of_week="1"), "every Monday at 09:00 (0 9 * * 1)"),
        (crontab(minute="0", hour="6", day="1"), "on day 1 of every month at 06:00 (0 6 1 * *)"),
        (
            crontab(minute="0", hour="9-17", day_of_week="1-5"),
            "at minute 0, hour 9-17, day of week 1-5 (0 9-17 * * 1-5)",
        ),
        (recorded_crontab(minute="0,30", hour="*/2"), "at minute 0,30, hour */2 (0,30 */2 * * *)"),
    ],
)
def test_a_schedule_is_described_in_words_with_its_cron_fields(schedule, words) -> None:
    assert coerce(schedule, "test").describe() == words


def test_a_custom_test_function_is_accepted_and_named() -> None:
    def on_the_hour(moment: datetime) -> bool:
        return moment.minute == 0

    found = coerce(on_the_hour, "test")
    assert found.describe().startswith("custom schedule ")
    assert "on_the_hour" in found.describe()
    assert found.next_tick(T) == T + timedelta(hours=1)


# -- definition errors ----------------------------------------------------------------


def define(**attributes: object) -> type:
    body = {"only": step(lambda self: None), **attributes}
    return type("Broken", (geneva.Workflow,), body)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"schedule": "*/5 * * * *"}, "schedule must be a crontab such as huey.crontab"),
        ({"schedule": 5}, "schedule must be a crontab"),
        ({"schedule": crontab}, "schedule is the crontab function itself; call it"),
        ({"schedule": lambda: True}, "calling it raised TypeError"),
        ({"schedule": lambda moment: "yes"}, "must return True or False"),
        (
            {"schedule": crontab(minute="0"), "scheduled_heroes": lambda self: []},
            "scheduled_heroes must be a classmethod",
        ),
        (
            {"scheduled_heroes": classmethod(lambda cls: [])},
            "scheduled_heroes is set but the class has no schedule",
        ),
        ({"schedule_catch_up": True}, "schedule_catch_up is set but the class has no schedule"),
        (
            {"schedule": crontab(minute="0"), "schedule_catch_up": -1},
            "schedule_catch_up must be True, False or how many missed ticks",
        ),
        (
            {"schedule": crontab(minute="0"), "schedule_catch_up": "3"},
            "schedule_catch_up must be True, False",
        ),
    ],
)
def test_a_bad_schedule_declaration_fails_when_the_class_is_defined(attributes, message) -> None:
    with pytest.raises(DefinitionError, match="Broken: ") as raised:
        define(**attributes)
    assert message in str(raised.value)
    assert "Broken" not in geneva.registry


def test_a_subclass_inherits_its_parents_schedule_and_an_abstract_class_stores_none() -> None:
    class Nightly(geneva.Workflow):  # type: ignore[name-defined,misc]
        __abstract__ = True
        schedule = crontab(minute="0", hour="2")
        schedule_catch_up = True

        @step
        def only(self) -> None:
            pass

    class NightlyReport(Nightly):
        pass

    assert Nightly.__geneva_definition__.schedule is None
    definition = NightlyReport.__geneva_definition__
    assert definition.schedule is not None and definition.schedule.cron == "0 2 * * *"
    assert definition.schedule_catch_up == 60
    del geneva.registry["NightlyReport"]


def test_a_step_named_schedule_is_a_step_not_a_crontab() -> None:
    class Booking(geneva.Workflow):  # type: ignore[name-defined,misc]
        @step
        def schedule(self) -> None:
            pass

    assert Booking.__geneva_definition__.schedule is None
    assert list(Booking.step_graph().steps) == ["schedule"]
    del geneva.registry["Booking"]


# -- the periodic task exists only when a class has a schedule -------------------------


def test_the_schedules_task_exists_only_once_a_class_has_a_schedule(tmp_path: Path) -> None:
    own_db = SQLAlchemy()
    own = Geneva(own_db)

    class Plain(own.Workflow):  # type: ignore[name-defined,misc]
        @step
        def only(self) -> None:
            pass

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
        GENEVA_HUEY="memory://",
        GENEVA_HOUSEKEEPING_INTERVAL=timedelta(hours=1),
    )
    own_db.init_app(app)
    own.init_app(app)
    state = app.extensions["geneva"]
    huey = state.huey
    assert state.schedules_task is None
    on_the_hour = {t.name for t in huey.read_periodic(datetime(2031, 3, 4, 12, 0))}
    assert on_the_hour == {"geneva.housekeeping"}
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["geneva", "schedules"])
    assert result.output == "no workflow class has a schedule (set schedule = huey.crontab(...))\n"

    # A scheduled class defined after init_app (a one-file app) brings the task along,
    # and it runs every minute although housekeeping runs every hour.
    class Later(own.Workflow):  # type: ignore[name-defined,misc]
        schedule = crontab(minute="*/5")

        @step
        def only(self) -> None:
            pass

    assert state.schedules_task is not None
    for minute in (1, 7, 59):
        due = {t.name for t in huey.read_periodic(datetime(2031, 3, 4, 12, minute))}
        assert "geneva.schedules" in due and "geneva.housekeeping" not in due
    assert Plain and Later
