"""Parse what the admin's clients send: the filter (query string or form) and back, ids,
cursors and counts; anything malformed or out of range aborts 400 (or 404 for an id in
the path) before it reaches the database.

The parsers are strict on purpose: a number is ASCII digits only (``int()`` would accept
``'\u0663'`` and ``' 7'``, ``str.isdigit()`` accepts ``'\u00b2'``), an id fits the
tables' BIGINT key, a text filter holds no NUL (PostgreSQL refuses NUL in text), and a
time-zoned date must still be a date once converted to UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

from flask import abort
from werkzeug.datastructures import MultiDict

from ..queries import ALL_STATES
from ..queries import WorkflowFilter

#: The largest id the tables' BIGINT key holds (SQLite's INTEGER holds the same).
MAX_ID = 2**63 - 1

#: Query-string names of the time filters (HTML ``datetime-local`` values, in UTC).
TIME_FIELDS = ("created_after", "created_before", "updated_after", "updated_before")
#: Query-string names of the text filters.
TEXT_FIELDS = ("hero_type", "hero_id", "step", "actor", "attention", "error", "error_class")
#: ``waiting_over``: minutes, at most a year.
MAX_WAITING_MINUTES = 525_600


def parse_filter(args: MultiDict[str, str], workflow_type: str | None = None) -> WorkflowFilter:
    """Return the filter described by ``args`` (``type``, ``state`` (repeatable), ``hero_type``,
    ``hero_id``, ``step``, ``actor``, ``attention`` with ``waiting_over`` (minutes), ``error``,
    ``error_class``, and the time fields); abort 400 on a malformed value.

    :param workflow_type: the class of a per-class list (wins over ``type=``).
    """
    states = tuple(dict.fromkeys(s for s in args.getlist("state") if s))
    unknown = [s for s in states if s not in ALL_STATES]
    if unknown:
        abort(400, description=f"Unknown state {unknown[0]!r}; use one of {', '.join(ALL_STATES)}.")
    values: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = text(name, args.get(name, "").strip())
        values[name] = value or None
    for name in TIME_FIELDS:
        values[name] = _parse_time(name, args.get(name, "").strip())
    minutes = optional_number(
        "waiting_over",
        args.get("waiting_over", "").strip() or None,
        low=1,
        high=MAX_WAITING_MINUTES,
    )
    values["waiting_over"] = timedelta(minutes=minutes) if minutes is not None else None
    given_type = text("type", args.get("type", "").strip())
    chosen = workflow_type or given_type or None
    try:
        return WorkflowFilter(workflow_type=chosen, states=states, **values)
    except ValueError as error:  # an unknown attention filter
        abort(400, description=f"{str(error)[0].upper()}{str(error)[1:]}.")


def text(name: str, value: str) -> str:
    """Return ``value``; abort 400 if no database could compare it (a NUL, a lone surrogate)."""
    if "\x00" in value:
        abort(400, description=f"{name}: the value contains a NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        abort(400, description=f"{name}: the value is not valid text.")
    return value


def _parse_time(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            # Year 1 east of UTC, or 9999 west of it, is no date in UTC: OverflowError.
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        abort(
            400,
            description=(
                f"{name}: {value[:64]!r} is not a date and time between year 1 and 9999 "
                "in UTC (YYYY-MM-DDTHH:MM)."
            ),
        )
    return parsed


def filter_args(f: WorkflowFilter, *, include_type: bool = True) -> list[tuple[str, str]]:
    """Return the query-string pairs that describe ``f`` (inverse of :func:`parse_filter`)."""
    pairs: list[tuple[str, str]] = []
    if include_type and f.workflow_type:
        pairs.append(("type", f.workflow_type))
    pairs.extend(("state", s) for s in f.states)
    for name in TEXT_FIELDS:
        value = getattr(f, name)
        if value:
            pairs.append((name, value))
    for name in TIME_FIELDS:
        value = getattr(f, name)
        if value is not None:
            pairs.append((name, value.isoformat(timespec="minutes")))
    if f.waiting_over is not None:
        pairs.append(("waiting_over", str(int(f.waiting_over.total_seconds() // 60))))
    return pairs


def form_values(f: WorkflowFilter) -> Mapping[str, str]:
    """Return the filter's single-valued fields as strings, to refill the filter form."""
    values = {name: getattr(f, name) or "" for name in TEXT_FIELDS}
    over = f.waiting_over
    values["waiting_over"] = str(int(over.total_seconds() // 60)) if over is not None else ""
    for name in TIME_FIELDS:
        value = getattr(f, name)
        values[name] = value.isoformat(timespec="minutes") if value is not None else ""
    return values


def parse_ids(values: list[str], *, limit: int = 1000) -> list[int]:
    """Return the selected workflow ids, newest first; abort 400 on anything but an id."""
    ids: set[int] = set()
    for value in values:
        ids.add(number("ids", value, low=1, high=MAX_ID))
    if len(ids) > limit:
        abort(400, description=f"Select at most {limit} workflows, or act on the whole filter.")
    return sorted(ids, reverse=True)


def number(name: str, value: str, *, low: int = 0, high: int = MAX_ID, status: int = 400) -> int:
    """Return ``value`` as an int in ``low..high``; abort (400 by default) otherwise.

    Only ASCII digits count: the admin's own pages never send anything else, and a
    number the database cannot hold must not get as far as a query.
    """
    if not (value.isascii() and value.isdigit()):
        abort(status, description=f"{name}: {value[:64]!r} is not a whole number.")
    # The length test first: int() of thousands of digits is slow, then refused.
    if len(value) > len(str(high)) or not low <= int(value) <= high:
        abort(status, description=f"{name}: {value[:64]} is not between {low} and {high}.")
    return int(value)


def optional_number(
    name: str, value: str | None, *, low: int = 0, high: int = MAX_ID
) -> int | None:
    """Like :func:`number`, but an absent or empty value is None."""
    return None if not value else number(name, value, low=low, high=high)


def workflow_id(value: str) -> int:
    """Return a workflow id from the URL path; abort 404 when no workflow can have it."""
    return number("workflow id", value, low=1, high=MAX_ID, status=404)
