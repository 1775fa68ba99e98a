"""Words and numbers for operators: durations, times, why a workflow waits, the timeline.

Pure functions over rows (mappings) and ``now``; the views pass ``clock.now()`` so tests
that move the clock see the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any
from urllib.parse import quote

#: A due step not yet picked up after this long is called overdue.
OVERDUE_AFTER = timedelta(seconds=30)


def duration(delta: timedelta | None) -> str:
    """Return a short human duration: ``850 ms``, ``12 s``, ``3 min``, ``2 h 5 min``, ``3 d``."""
    if delta is None:
        return ""
    seconds = abs(delta.total_seconds())
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d"


def clock_time(moment: datetime | None, now: datetime) -> str:
    """Return ``14:05:09`` for today (UTC), ``2026-11-20 14:05:09`` otherwise; ``""`` for None.

    Always to the second: at 3 a.m. the order of two events a few seconds apart matters,
    and a moment's text never changes as time passes (a polled fragment stays the same).
    """
    if moment is None:
        return ""
    if moment.date() == now.date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def relative(moment: datetime | None, now: datetime) -> str:
    """Return ``in 3 min`` or ``3 min ago`` (``under a minute`` below 60 s, so a page
    polled every few seconds does not change just because time passed)."""
    if moment is None:
        return ""
    if abs(moment - now) < timedelta(minutes=1):
        return "in under a minute" if moment > now else "under a minute ago"
    if moment > now:
        return f"in {duration(moment - now)}"
    return f"{duration(now - moment)} ago"


def waiting_reasons(state: str, latest: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    """Say plainly why an ongoing workflow is where it is, one sentence per step.

    :param state: the workflow's state.
    :param latest: the latest execution of each step (rows).
    """
    reasons: list[str] = []
    failed = [x for x in latest if x["state"] == "failed"]
    running = [x for x in latest if x["state"] == "in_progress"]
    scheduled = sorted(
        (x for x in latest if x["state"] == "scheduled"), key=lambda x: x["scheduled_for"]
    )
    waiting = [x for x in latest if x["state"] == "waiting"]
    if state == "paused":
        for x in failed:
            reasons.append(
                f"step `{x['step_name']}` failed with {x['error_class'] or 'an error'}; "
                "the workflow is paused: fix the cause, then resume (or reattempt / skip it)"
            )
        if not failed:
            reasons.append("paused (by an operator or by a step); resume to continue")
        for x in scheduled:
            reasons.append(f"step `{x['step_name']}` waits for resume")
        for x in waiting:
            reasons.append(
                f"step `{x['step_name']}` is {waiting_for(x, now)}; a signal that arrives "
                "while paused is stored and wakes it on resume"
            )
        return reasons
    if state not in ("ready", "performing"):
        return reasons
    for x in running:
        reasons.append(
            f"step `{x['step_name']}` is running (started {relative(x['started_at'], now)})"
        )
    for x in waiting:
        reasons.append(f"step `{x['step_name']}` is {waiting_for(x, now)}")
    for x in scheduled:
        due = x["scheduled_for"]
        name = x["step_name"]
        if due > now and x.get("consecutive_reattempts"):
            # A reattempt's backoff: say when, and how many tries in a row came before.
            tries = x["consecutive_reattempts"]
            reasons.append(
                f"step `{name}` failed {tries} time{'s' if tries != 1 else ''} in a row; "
                f"next attempt {relative(due, now)} (at {clock_time(due, now)} UTC)"
            )
        elif due > now:
            reasons.append(
                f"step `{name}` is scheduled for {clock_time(due, now)} UTC ({relative(due, now)})"
            )
        elif now - due < OVERDUE_AFTER:
            reasons.append(f"step `{name}` is due now, waiting for a worker")
        else:
            reasons.append(
                f"step `{name}` was due at {clock_time(due, now)} UTC: overdue by "
                f"{duration(now - due)} — no worker has picked it up"
            )
    return reasons


def waiting_for(execution: Mapping[str, Any], now: datetime) -> str:
    """Return ``waiting for signal `settled` since 14:05 UTC (3 min ago) (times out in 2 d)``.

    From the keys the detail page adds to a waiting execution: ``wait_for`` (None when
    the class no longer declares the step), ``waiting_since`` and ``times_out_at``
    (None: it waits forever).
    """
    signal = execution.get("wait_for")
    text = f"waiting for signal `{signal}`" if signal else "waiting for a signal"
    since = execution.get("waiting_since")
    if since is not None:
        text += f" since {clock_time(since, now)} UTC ({relative(since, now)})"
    timeout = execution.get("times_out_at")
    if timeout is not None:
        if timeout > now:
            text += f" (times out {relative(timeout, now)})"
        else:
            text += f" (timed out {relative(timeout, now)}; the timeout is being applied)"
    return text


@dataclass(frozen=True)
class TimelineRow:
    """One execution on the timeline; offsets and widths are percentages of the span."""

    execution: Mapping[str, Any]
    #: scheduled_for → started_at (or now, while it waits).
    wait: timedelta | None
    #: started_at → finished_at (or now, while it runs).
    run: timedelta | None
    reattempt: bool
    planned_left: float
    planned_width: float
    wait_width: float
    run_width: float


def timeline(
    executions: Sequence[Mapping[str, Any]],
    start: datetime,
    now: datetime,
    also: Sequence[datetime] = (),
) -> list[TimelineRow]:
    """Return the timeline rows of executions (oldest first) over ``start..latest moment``.

    :param also: other moments drawn on the same scale (operator actions): the span
        reaches them too (see :func:`timeline_span`).
    """
    if not executions:
        return []
    span = timeline_span(executions, start, now, also)

    def pct(a: datetime, b: datetime) -> float:
        return round(max((b - a).total_seconds(), 0) / span * 100, 3)

    rows = []
    for x in executions:
        created = x["created_at"]
        due = _planned(x)
        started = x["started_at"]
        finished = x["finished_at"]
        # A step still waiting shows its planned wait only: its lateness is in the
        # "why is it waiting" sentence, and a bar growing with every poll would make
        # the fragment change (and be swapped) every few seconds for nothing.
        waiting_until = started
        run_until = finished or (now if x["state"] == "in_progress" else None)
        wait = (waiting_until - due) if waiting_until is not None else None
        run = (run_until - started) if started is not None and run_until is not None else None
        rows.append(
            TimelineRow(
                execution=x,
                wait=wait if wait is None or wait >= timedelta(0) else timedelta(0),
                run=run,
                reattempt=x["attempt"] > 1,
                planned_left=pct(start, created),
                planned_width=pct(created, due),
                wait_width=pct(due, waiting_until) if waiting_until else 0.0,
                run_width=pct(started, run_until) if started and run_until else 0.0,
            )
        )
    return rows


def timeline_span(
    executions: Sequence[Mapping[str, Any]],
    start: datetime,
    now: datetime,
    also: Sequence[datetime] = (),
) -> float:
    """The timeline's length in seconds, from ``start`` to its latest moment."""
    moments = [start, *also]
    for x in executions:
        moments.extend(m for m in (_planned(x), x["started_at"], x["finished_at"]) if m)
        if x["state"] == "in_progress":
            moments.append(max(now, x["scheduled_for"]))
    return max((max(moments) - start).total_seconds(), 0.001)


def offset(moment: datetime, start: datetime, span: float) -> float:
    """Where ``moment`` is on a timeline of ``span`` seconds from ``start``, in percent."""
    return round(min(max((moment - start).total_seconds(), 0) / span * 100, 100.0), 3)


def _planned(execution: Mapping[str, Any]) -> datetime:
    # A waiting execution's scheduled_for is its timeout (year 9999 without one): not a
    # plan to draw, it would squash every other bar to nothing.
    if execution["state"] == "waiting":
        return execution["created_at"]  # type: ignore[no-any-return]
    return execution["scheduled_for"]  # type: ignore[no-any-return]


class _Quoted(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def hero_url(setting: Any, values: Mapping[str, Any]) -> str | None:
    """Fill ``GENEVA_ADMIN_HERO_URL`` for a workflow: a template (as :func:`logs_url`), or a
    callable ``(hero_type, hero_id) -> URL or None``; None without a hero or a setting.

    A callable's answer is shown only when it is a web link (http, https or a path).
    """
    if not values.get("hero_type") or not setting:
        return None
    if not callable(setting):
        return logs_url(setting, values)
    url = setting(values["hero_type"], values["hero_id"])
    return _web_link(url) if isinstance(url, str) else None


def logs_url(template: str | None, values: Mapping[str, Any]) -> str | None:
    """Fill ``GENEVA_ADMIN_LOGS_URL`` (``{workflow_id}``, ``{execution_id}``, ``{step}``,
    ``{type}``, ``{hero_type}``, ``{hero_id}``, ``{started_at}``, ``{finished_at}``),
    URL-quoting each value; None when no template is configured.
    """
    if not template:
        return None
    quoted = _Quoted({k: quote("" if v is None else str(v), safe="") for k, v in values.items()})
    return _web_link(template.format_map(quoted))


def _web_link(url: str) -> str | None:
    # Only web links: a setting is config, but a value must never turn it into script.
    return url if url.startswith(("http://", "https://", "/")) else None
