"""Turn the list page's query string into a :class:`~flask_geneva.queries.WorkflowFilter`
and back (for links, "load more" and the bulk form's hidden fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from typing import Any

from flask import abort
from werkzeug.datastructures import MultiDict

from ..queries import ALL_STATES
from ..queries import WorkflowFilter

#: Query-string names of the time filters (HTML ``datetime-local`` values, in UTC).
TIME_FIELDS = ("created_after", "created_before", "updated_after", "updated_before")
#: Query-string names of the text filters.
TEXT_FIELDS = ("hero_type", "hero_id", "step")


def parse_filter(args: MultiDict[str, str], workflow_type: str | None = None) -> WorkflowFilter:
    """Return the filter described by ``args`` (``type``, ``state`` (repeatable), ``hero_type``,
    ``hero_id``, ``step``, and the time fields); abort 400 on a malformed value.

    :param workflow_type: the class of a per-class list (wins over ``type=``).
    """
    states = tuple(dict.fromkeys(s for s in args.getlist("state") if s))
    unknown = [s for s in states if s not in ALL_STATES]
    if unknown:
        abort(400, description=f"Unknown state {unknown[0]!r}; use one of {', '.join(ALL_STATES)}.")
    values: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = args.get(name, "").strip()
        values[name] = value or None
    for name in TIME_FIELDS:
        values[name] = _parse_time(name, args.get(name, "").strip())
    chosen = workflow_type or args.get("type", "").strip() or None
    return WorkflowFilter(workflow_type=chosen, states=states, **values)


def _parse_time(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        abort(400, description=f"{name}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM).")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
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
    return pairs


def form_values(f: WorkflowFilter) -> Mapping[str, str]:
    """Return the filter's single-valued fields as strings, to refill the filter form."""
    values = {name: getattr(f, name) or "" for name in TEXT_FIELDS}
    for name in TIME_FIELDS:
        value = getattr(f, name)
        values[name] = value.isoformat(timespec="minutes") if value is not None else ""
    return values


def parse_ids(values: list[str], *, limit: int = 1000) -> list[int]:
    """Return the selected workflow ids, newest first; abort 400 on a non-number."""
    ids: set[int] = set()
    for value in values:
        if not value.strip().isdigit():
            abort(400, description=f"{value!r} is not a workflow id.")
        ids.add(int(value))
    if len(ids) > limit:
        abort(400, description=f"Select at most {limit} workflows, or act on the whole filter.")
    return sorted(ids, reverse=True)
