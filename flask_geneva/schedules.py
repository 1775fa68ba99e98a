"""Scheduled workflows: which ticks of a class's ``schedule`` are due, and starting each once.

A class declares ``schedule = huey.crontab(...)`` (and, to start one workflow per
hero, a classmethod ``scheduled_heroes()``). Every minute the ``geneva.schedules``
periodic task calls :func:`run`, which:

1. reads, in one statement, the last tick recorded for every scheduled class
   (``geneva_schedule_ticks``);
2. works out, without the database, which ticks are due since then
   (:func:`due_ticks`): only the latest one, or with ``schedule_catch_up`` up to that
   many of them, oldest first;
3. for each due (class, hero, tick), in a transaction of its own, inserts the tick's
   row and creates the workflow through :meth:`Workflow.create` (the one write path);
   the unique key on (type, hero_type, hero_id, tick) refuses a second consumer
   running the same tick, so each starts once. A hero with an ongoing workflow of the
   class is recorded as ``skipped`` for that tick.

When nothing is due, step 1 is the whole cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import clock
from .errors import DefinitionError
from .errors import WorkflowExistsError
from .hero import reference
from .unit import connection

if TYPE_CHECKING:
    from .extension import Geneva

logger = logging.getLogger("flask_geneva")

#: The hero columns of a tick that has no hero (and of a class's own mark).
NO_HERO = ""
#: Outcomes recorded per (class, hero, tick).
STARTED = "started"
SKIPPED = "skipped"
#: The class's own row for a tick whose heroes were all handled.
TICKED = "ticked"

#: A class that has never recorded a tick starts with its ticks of the last minutes
#: only: deploying a daily 03:00 schedule at noon starts it at 03:00 tomorrow.
FIRST_LOOKBACK = timedelta(minutes=5)
#: Ticks older than this are never started, however long the task did not run.
MAX_LOOKBACK = timedelta(days=8)
#: What ``schedule_catch_up = True`` means: at most this many missed ticks.
DEFAULT_CATCH_UP = 60
#: The largest ``schedule_catch_up`` a class may give.
MAX_CATCH_UP = 1000

_MINUTE = timedelta(minutes=1)
#: Cron field names, in crontab order, and the values each ranges over.
_FIELDS = (
    ("minute", range(60)),
    ("hour", range(24)),
    ("day", range(1, 32)),
    ("month", range(1, 13)),
    ("day_of_week", range(7)),
)
_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True)
class Schedule:
    """A class's ``schedule``: the test Huey's crontab built, and its cron fields if known."""

    test: Callable[[datetime], bool] = field(compare=False)
    #: ``minute hour day month day_of_week`` in cron syntax, or None for a custom test.
    cron: str | None = None
    #: A crontab's hours, days, months and days of the week (Sunday 0), when known: an
    #: hour outside them holds no tick, so a scan skips it whole.
    hours: tuple[frozenset[int], ...] | None = field(default=None, compare=False)

    def matches(self, moment: datetime) -> bool:
        """Return whether ``moment``'s minute is a tick."""
        return bool(self.test(moment))

    def may_tick_in_hour(self, moment: datetime) -> bool:
        """False when no minute of ``moment``'s hour can be a tick."""
        if self.hours is None:
            return True
        hour, day, month, weekday = self.hours
        return (
            moment.hour in hour
            and moment.day in day
            and moment.month in month
            and (moment.weekday() + 1) % 7 in weekday
        )

    def describe(self) -> str:
        """The schedule in words, e.g. ``every 5 minutes (*/5 * * * *)``."""
        if self.cron is None:
            name = getattr(self.test, "__qualname__", None) or repr(self.test)
            return f"custom schedule {name}"
        return f"{_in_words(self.cron.split())} ({self.cron})"

    def next_tick(
        self, after: datetime, *, within: timedelta = timedelta(days=366)
    ) -> datetime | None:
        """The first tick later than ``after`` (None if none within ``within``)."""
        moment = _floor(after) + _MINUTE
        end = after + within
        while moment <= end:
            if not self.may_tick_in_hour(moment):
                moment = moment.replace(minute=0) + timedelta(hours=1)
                continue
            if self.matches(moment):
                return moment
            moment += _MINUTE
        return None


def crontab(
    minute: str | int = "*",
    hour: str | int = "*",
    day: str | int = "*",
    month: str | int = "*",
    day_of_week: str | int = "*",
) -> Schedule:
    """Huey's :func:`huey.crontab`, remembering its arguments (for ``flask geneva schedules``).

    ``huey.crontab(...)`` works as well: its fields are read back from it.
    """
    from huey import crontab as huey_crontab

    test = huey_crontab(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week)
    cron = " ".join(str(v) for v in (minute, hour, day, month, day_of_week))
    return Schedule(test, cron, _hours(_huey_settings(test)))


def coerce(value: Any, where: str) -> Schedule:
    """Turn a class's ``schedule`` into a :class:`Schedule`, or raise :class:`DefinitionError`."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, type) or not callable(value):
        raise DefinitionError(
            f"{where}: schedule must be a crontab such as huey.crontab(minute='*/5'), got {value!r}"
        )
    if getattr(value, "__name__", None) == "crontab":
        raise DefinitionError(
            f"{where}: schedule is the crontab function itself; call it, e.g. "
            "schedule = huey.crontab(minute='*/5')"
        )
    settings = _huey_settings(value)
    if settings is None:
        try:
            result = value(datetime(2000, 1, 1))
        except Exception as error:
            raise DefinitionError(
                f"{where}: schedule must be a crontab such as huey.crontab(minute='*/5') "
                f"(a function of a datetime returning True at each tick); calling it "
                f"raised {type(error).__name__}: {error}"
            ) from None
        if not isinstance(result, bool):
            raise DefinitionError(
                f"{where}: schedule must return True or False for a datetime (like "
                f"huey.crontab(...)), got {result!r}"
            )
        return Schedule(value)
    return Schedule(value, _cron(settings), _hours(settings))


def coerce_catch_up(value: Any, where: str) -> int:
    """``schedule_catch_up``: False/0 (default), True (:data:`DEFAULT_CATCH_UP`) or a count."""
    if value is None or value is False:
        return 0
    if value is True:
        return DEFAULT_CATCH_UP
    if isinstance(value, int) and 0 <= value <= MAX_CATCH_UP:
        return value
    raise DefinitionError(
        f"{where}: schedule_catch_up must be True, False or how many missed ticks to start "
        f"(0 to {MAX_CATCH_UP}), got {value!r}"
    )


def due_ticks(
    schedule: Schedule, *, last: datetime | None, now: datetime, catch_up: int = 0
) -> list[datetime]:
    """The ticks to start now, oldest first: pure, no database.

    They are the ticks later than ``last`` (the class's last recorded tick; with
    none, those of the last :data:`FIRST_LOOKBACK`) and not later than ``now``,
    never older than :data:`MAX_LOOKBACK`: only the latest of them, or with
    ``catch_up`` the latest ``catch_up`` of them. The ones left out are missed.
    """
    current = _floor(now)
    earliest = current - (FIRST_LOOKBACK if last is None else MAX_LOOKBACK) + _MINUTE
    if last is not None and last >= earliest:
        earliest = _floor(last) + _MINUTE
    wanted = max(catch_up, 1)
    found: list[datetime] = []
    moment = current
    while moment >= earliest and len(found) < wanted:
        if not schedule.may_tick_in_hour(moment):
            moment = moment.replace(minute=0) - _MINUTE  # the previous hour's last minute
            continue
        if schedule.matches(moment):
            found.append(moment)
        moment -= _MINUTE
    return found[::-1]


# -- the run ------------------------------------------------------------------------------


@dataclass
class ScheduleSummary:
    """What one run of the schedules did."""

    #: Workflows started.
    started: int = 0
    #: (class, hero, tick) skipped: an ongoing workflow of the class had the hero.
    skipped: int = 0
    #: (class, hero, tick) another run had already taken.
    taken: int = 0


def scheduled_classes(ext: Geneva) -> list[type[Any]]:
    """The registered classes that have a ``schedule``, by stored identity."""
    found = [
        cls
        for _, cls in sorted(ext.registry.items())
        if cls.__geneva_definition__.schedule is not None
    ]
    return found


def overview(ext: Geneva, now: datetime) -> list[str]:
    """One line per scheduled class: its schedule in words and its next tick after ``now``.

    What ``flask geneva schedules`` prints; pure (reads no table).
    """
    lines = []
    for cls in scheduled_classes(ext):
        definition = cls.__geneva_definition__
        upcoming = definition.schedule.next_tick(now)
        line = f"{cls.__name__}: {definition.schedule.describe()}"
        if definition.scheduled_heroes:
            line += ", one workflow per hero of scheduled_heroes()"
        if definition.schedule_catch_up:
            line += f", catches up to {definition.schedule_catch_up} missed ticks"
        shown = upcoming.strftime("%Y-%m-%d %H:%M UTC") if upcoming else "none within a year"
        lines.append(f"{line}; next tick {shown}")
    return lines


def run(ext: Geneva) -> ScheduleSummary:
    """Start every due (class, hero, tick) once; the job of the ``geneva.schedules`` task."""
    summary = ScheduleSummary()
    classes = scheduled_classes(ext)
    if not classes:
        return summary
    table = ext.schedule_ticks
    session = ext.db.session
    identities = [cls.__geneva_identity__ for cls in classes]
    # The one statement when nothing is due: each class's latest tick, from its own row
    # ('' heroes), which the unique key's index answers.
    rows = session.execute(
        sa.select(table.c.type, sa.func.max(table.c.tick))
        .where(
            table.c.type.in_(identities),
            table.c.hero_type == NO_HERO,
            table.c.hero_id == NO_HERO,
        )
        .group_by(table.c.type)
    ).all()
    session.rollback()
    last = {identity: tick for identity, tick in rows}
    now = clock.now()
    for cls in classes:
        definition = cls.__geneva_definition__
        ticks = due_ticks(
            definition.schedule,
            last=last.get(cls.__geneva_identity__),
            now=now,
            catch_up=definition.schedule_catch_up,
        )
        if not ticks:
            continue
        try:
            for tick in ticks:
                _start_tick(ext, cls, tick, summary)
            _prune(ext, cls, now)
        except Exception:
            # One class's failure (its scheduled_heroes() raised, the database went
            # away mid-start) does not keep the others from starting. Its tick was not
            # marked, so the next run tries it again.
            ext.db.session.rollback()
            logger.exception(
                "[%s] could not start its schedule tick %s; the next run tries again",
                cls.__name__,
                ticks[-1].isoformat(sep=" "),
            )
    if summary.started or summary.skipped:
        logger.info(
            "schedules: %d workflow(s) started, %d skipped (hero busy), %d taken by another run",
            summary.started,
            summary.skipped,
            summary.taken,
        )
    return summary


def _prune(ext: Geneva, cls: type[Any], now: datetime) -> None:
    """Delete the class's ticks too old ever to start again (after a run that ticked)."""
    table = ext.schedule_ticks
    session = ext.db.session
    cutoff = _floor(now) - MAX_LOOKBACK - _MINUTE
    session.execute(
        table.delete().where(table.c.type == cls.__geneva_identity__, table.c.tick < cutoff)
    )
    session.commit()


def _start_tick(ext: Geneva, cls: type[Any], tick: datetime, summary: ScheduleSummary) -> None:
    if not cls.__geneva_definition__.scheduled_heroes:
        # The workflow's row is the class's own mark for the tick.
        _start_one(ext, cls, None, tick, summary)
        return
    # Read them all first: each start below commits, which would end a lazy result.
    heroes: list[Any] = list(cls.scheduled_heroes())
    for hero in heroes:
        _start_one(ext, cls, hero, tick, summary)
    # Every hero is handled: mark the tick done for the class. Until then (a crash
    # midway) the tick stays due and the next run starts the heroes left.
    _record(ext, cls, None, tick, TICKED, summary)


def _start_one(
    ext: Geneva, cls: type[Any], hero: Any, tick: datetime, summary: ScheduleSummary
) -> None:
    """Start ``cls`` for ``hero`` at ``tick`` in a transaction of its own, unless another did."""
    session = ext.db.session
    hero_type, hero_id = _hero_key(hero)
    table = ext.schedule_ticks
    try:
        # The tick's row first: it is the claim. A second consumer's INSERT waits for
        # the first one's commit and then fails on the unique key, before it creates
        # anything; the IntegrityError ends only this row's transaction.
        conn = connection(ext, session)
        inserted = conn.execute(
            table.insert().values(
                type=cls.__geneva_identity__,
                hero_type=hero_type,
                hero_id=hero_id,
                tick=tick,
                outcome=STARTED,
                created_at=clock.now(),
            )
        ).inserted_primary_key
    except sa.exc.IntegrityError:
        session.rollback()
        summary.taken += 1
        return
    try:
        workflow = cls.create(hero, commit=False)
    except WorkflowExistsError as error:
        session.rollback()
        # Logged by the run whose row records the skip: once, however many consumers.
        if _record(ext, cls, hero, tick, SKIPPED, summary):
            logger.info(
                "[%s hero=%s:%s] schedule tick %s skipped: %s",
                cls.__name__,
                hero_type,
                hero_id,
                tick.isoformat(sep=" "),
                error,
            )
        return
    except BaseException:
        session.rollback()
        raise
    assert inserted is not None  # an INSERT of one row always has its key
    tick_row = table.c.id == inserted[0]
    session.execute(table.update().where(tick_row).values(workflow_id=workflow.id))
    session.commit()
    summary.started += 1


def _record(
    ext: Geneva, cls: type[Any], hero: Any, tick: datetime, outcome: str, summary: ScheduleSummary
) -> bool:
    """Insert a row with no workflow; return False when another run had recorded it."""
    session = ext.db.session
    hero_type, hero_id = _hero_key(hero)
    try:
        connection(ext, session).execute(
            ext.schedule_ticks.insert().values(
                type=cls.__geneva_identity__,
                hero_type=hero_type,
                hero_id=hero_id,
                tick=tick,
                outcome=outcome,
                created_at=clock.now(),
            )
        )
        session.commit()
    except sa.exc.IntegrityError:
        session.rollback()
        if outcome == SKIPPED:
            summary.taken += 1
        return False
    if outcome == SKIPPED:
        summary.skipped += 1
    return True


def _hero_key(hero: Any) -> tuple[str, str]:
    hero_type, hero_id = reference(hero)
    return hero_type or NO_HERO, hero_id or NO_HERO


def _floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


# -- describing a crontab -------------------------------------------------------------------


def _huey_settings(test: Any) -> tuple[list[int], ...] | None:
    """Read the fields back from a function ``huey.crontab`` returned (None for another).

    Returns the values of minute, hour, day, month and day of week (Sunday 0).
    """
    code = getattr(test, "__code__", None)
    if (
        code is None
        or getattr(test, "__module__", None) != "huey.api"
        or "cron_settings" not in code.co_freevars
    ):
        return None
    cell = test.__closure__[code.co_freevars.index("cron_settings")]
    # Huey keeps them as month, day, day of week, hour, minute.
    month, day, weekday, hour, minute = cell.cell_contents
    # '*' gives day of week 0-7 there (7 is Sunday too).
    return (minute, hour, day, month, sorted({w % 7 for w in weekday}))


def _hours(settings: tuple[list[int], ...] | None) -> tuple[frozenset[int], ...] | None:
    return None if settings is None else tuple(frozenset(v) for v in settings[1:])


def _cron(settings: tuple[list[int], ...]) -> str:
    return " ".join(
        _field(values, span) for values, (_, span) in zip(settings, _FIELDS, strict=True)
    )


def _field(values: Sequence[int], span: range) -> str:
    chosen = sorted(set(values))
    if chosen == list(span):
        return "*"
    if len(chosen) > 2:
        step = chosen[1] - chosen[0]
        if chosen[0] == span[0] and chosen == list(span)[::step]:
            return f"*/{step}"
        if step == 1 and chosen == list(range(chosen[0], chosen[-1] + 1)):
            return f"{chosen[0]}-{chosen[-1]}"
    return ",".join(str(v) for v in chosen)


def _in_words(fields: list[str]) -> str:
    minute, hour, day, month, weekday = fields
    if hour == "*" and day == month == weekday == "*":
        if minute == "*":
            return "every minute"
        if minute.startswith("*/"):
            return f"every {minute[2:]} minutes"
        if minute.isdigit():
            return f"every hour at minute {minute}"
    if minute.isdigit() and hour.isdigit():
        when = f"at {int(hour):02d}:{int(minute):02d}"
        if day == month == "*":
            if weekday == "*":
                return f"every day {when}"
            if weekday.isdigit():
                return f"every {_WEEKDAYS[int(weekday)]} {when}"
        if day.isdigit() and month == weekday == "*":
            return f"on day {day} of every month {when}"
    parts = [
        f"{name.replace('_', ' ')} {value}"
        for (name, _), value in zip(_FIELDS, fields, strict=True)
        if value != "*"
    ]
    return "at " + ", ".join(parts)
