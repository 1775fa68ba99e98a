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

When nothing is due, step 1 is the whole cost. Reading and describing the crontab
itself is :mod:`~flask_geneva.crontabs`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import clock
from .crontabs import Schedule
from .crontabs import floor
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
    current = floor(now)
    earliest = current - (FIRST_LOOKBACK if last is None else MAX_LOOKBACK) + _MINUTE
    if last is not None and last >= earliest:
        earliest = floor(last) + _MINUTE
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
    cutoff = floor(now) - MAX_LOOKBACK - _MINUTE
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
