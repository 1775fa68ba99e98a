"""A class's ``schedule``: Huey's crontab read back into its fields, described, scanned.

Huey's :func:`huey.crontab` returns a function of a datetime; the fields it was given
are read back from it, so ``flask geneva schedules`` can say "every 5 minutes" and a
scan can skip the hours a crontab cannot tick in. Pure: no app, no database.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any

from .errors import DefinitionError

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
        moment = floor(after) + _MINUTE
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


def floor(moment: datetime) -> datetime:
    """The minute ``moment`` falls in (ticks are whole minutes)."""
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
