"""Everything the workflow detail page shows, read from the database in a few statements.

One workflow row, its executions (newest :data:`MAX_EXECUTIONS`), the hero when it still
exists, the graph layout, the failure with its source excerpt, and which operator
buttons apply (decided by the same rules, :func:`flask_geneva.commands.available`, over
the same snapshot the operations lock).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from flask import current_app

from .. import clock
from .. import commands
from .. import display
from .. import store
from ..signal_rules import NO_TIMEOUT
from ..states import StepState
from ..states import is_ongoing
from ..transitions import Transition
from . import audit
from . import dag
from . import items
from . import present
from . import source
from .audit import Action
from .audit import Pause

if TYPE_CHECKING:
    from ..extension import Geneva

#: The operations drawn as buttons above the graph (the others act on one step of it).
BUTTONS = ("pause", "resume", "cancel", "skip", "reattempt")
#: The detail page shows at most this many executions (the newest).
MAX_EXECUTIONS = 200
#: ... and at most this many signals (the newest).
MAX_SIGNALS = 50
#: A signal's payload shows as JSON cut to this many characters, and whole (up to
#: :data:`MAX_PAYLOAD_SHOWN`) when expanded.
PAYLOAD_PREVIEW = 80
MAX_PAYLOAD_SHOWN = 8_000
#: The detail page lists this many items of each map step (the items page has the rest).
ITEMS_SHOWN = 20
#: ... and shows at most this many failed items of each map step as failures.
FAILED_ITEMS_SHOWN = 3


@dataclass
class MapView:
    """A map step on the detail page: its progress, and its first items."""

    progress: items.MapProgress
    #: ``37/40 done · 2 running · 1 failed``.
    text: str
    #: The first :data:`ITEMS_SHOWN` items (each its latest execution), by item index.
    first: list[dict[str, Any]]
    #: The item index to continue after on the items page (None: all are shown).
    more: int | None


@dataclass(frozen=True)
class SignalRow:
    """A stored signal, ready to render."""

    id: int
    name: str
    idempotency_key: str | None
    received_at: datetime
    consumed_step: str | None
    consumed_by_execution_id: int | None
    consumed_at: datetime | None
    #: The payload as JSON ("" for none), cut to :data:`PAYLOAD_PREVIEW` characters.
    preview: str
    #: The payload as indented JSON, when the preview does not show all of it.
    full: str | None


@dataclass
class Failure:
    """A failed execution, ready to render."""

    execution: Mapping[str, Any]
    excerpt: source.SourceExcerpt | None
    traceback: Any
    logs_url: str | None


@dataclass
class Detail:
    """The detail page's context."""

    workflow: Mapping[str, Any]
    cls: type[Any] | None
    #: The executions of the workflow's steps, not of map items (the newest, oldest first).
    executions: list[dict[str, Any]]
    truncated: bool
    #: Each map step that has started, with its progress and its first items.
    maps: dict[str, MapView]
    #: The executions table, newest first: ("execution", row) and ("map", MapView),
    #: a map step where its newest item is.
    table: list[tuple[str, Any]]
    latest: dict[str, dict[str, Any]]
    hero_text: str | None
    hero_problem: str | None
    #: ``GENEVA_ADMIN_HERO_URL`` filled for this workflow's hero (None: not set, no hero).
    hero_url: str | None
    layout: dag.Layout
    timeline: list[present.TimelineRow]
    reasons: list[str]
    failures: list[Failure]
    #: The newest signals, newest first; ``more_signals``: older ones are not shown.
    signals: list[SignalRow]
    more_signals: bool
    #: operation → steps it can target (empty list: no step needed); only applicable ones.
    actions: dict[str, list[str]]
    #: The steps "Re-run from here" applies to now (a rerun's rules accept them).
    reruns: list[str]
    #: The newest operator actions, oldest first, placed on the timeline;
    #: ``more_actions``: older ones are not shown.
    audit: list[Action]
    more_actions: bool
    #: The stretches the workflow spent paused, drawn on the timeline.
    pauses: list[Pause]
    logs_url: str | None
    now: datetime

    @property
    def ongoing(self) -> bool:
        return is_ongoing(self.workflow["state"])


def load_workflow(ext: Geneva, workflow_id: int) -> Mapping[str, Any] | None:
    """Return the workflow row, or None."""
    w = ext.tables.workflows
    with ext.engine().connect() as conn:
        row = conn.execute(sa.select(w).where(w.c.id == workflow_id)).first()
    return None if row is None else dict(row._mapping)


def load_detail(ext: Geneva, workflow: Mapping[str, Any], logs_template: str | None) -> Detail:
    """Build the detail context for a workflow row."""
    now = clock.now()
    e = ext.tables.executions
    # Not the JSON metadata column: the page does not show it, and a row whose metadata is
    # not valid JSON (a hand edit on SQLite) must not make the page fail to render. The
    # output is read cut (items.output_columns): a table never carries a 256 KiB value.
    # Map items are not rows of this table: a map step shows as one row (see maps).
    columns = [c for c in e.c if c.name not in ("metadata", "output")]
    query = (
        sa.select(*columns, *items.output_columns(e))
        .where(e.c.workflow_id == workflow["id"], e.c.item_index.is_(None))
        .order_by(e.c.id.desc())
        .limit(MAX_EXECUTIONS + 1)
    )
    cls = ext.registry.get(workflow["type"])
    graph = cls.__geneva_definition__.graph if cls is not None else None
    with ext.engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        maps = _maps(conn, ext, workflow["id"], graph.maps if graph is not None else {})
    truncated = len(rows) > MAX_EXECUTIONS
    executions = list(reversed(rows[:MAX_EXECUTIONS]))
    for x in executions:
        present_row(x)
    since = _waiting_since(ext, [x["id"] for x in executions if x["state"] == StepState.WAITING])
    latest: dict[str, dict[str, Any]] = {}
    attempts: dict[str, int] = {}
    for x in executions:
        attempts[x["step_name"]] = attempts.get(x["step_name"], 0) + 1
        if x["superseded_at"] is None:  # a rerun's history is not the step's state
            latest[x["step_name"]] = x
    states = {k: v["state"] for k, v in latest.items()}
    for name, m in maps.items():
        if m.progress.items:
            states[name] = m.progress.state
    for x in executions:
        if x["state"] == StepState.WAITING:
            definition = graph.steps.get(x["step_name"]) if graph is not None else None
            x.update(
                waiting_since=since.get(x["id"]),
                wait_for=definition.wait_for if definition is not None else None,
                times_out_at=x["scheduled_for"] if x["scheduled_for"] < NO_TIMEOUT else None,
            )
    signal_rows, more_signals = _signals(ext, workflow["id"])
    predecessors: dict[str, tuple[str, ...]] = dict(graph.predecessors) if graph is not None else {}
    for name in latest:  # steps no longer in the class still show, unconnected
        predecessors.setdefault(name, ())
    if not is_ongoing(workflow["state"]):  # it ended: a step never created will not run
        for name in predecessors:
            states.setdefault(name, "not_run")
    layout = dag.layout(predecessors, states, attempts, {k: m.text for k, m in maps.items()})

    hero_text, hero_problem = _hero(ext, workflow)
    values = {
        "workflow_id": workflow["id"],
        "type": workflow["type"],
        "hero_type": workflow["hero_type"],
        "hero_id": workflow["hero_id"],
    }
    failures = []
    failed = [x for x in latest.values() if x["state"] == "failed"]
    for m in maps.values():
        if m.progress.counts.get("failed"):
            with ext.engine().connect() as conn:
                found, _ = items.item_page(
                    conn,
                    ext.tables,
                    workflow["id"],
                    m.progress.step,
                    state="failed",
                    limit=FAILED_ITEMS_SHOWN,
                )
            failed.extend(present_row(x) for x in found)
    for x in failed:
        definition = graph.steps.get(x["step_name"]) if graph is not None else None
        excerpt = source.step_excerpt(definition, x["error_traceback"]) if definition else None
        failures.append(
            Failure(
                execution=x,
                excerpt=excerpt,
                traceback=source.traceback_html(x["error_traceback"])
                if x["error_traceback"]
                else None,
                logs_url=present.logs_url(
                    logs_template,
                    dict(
                        values,
                        execution_id=x["id"],
                        step=x["step_name"],
                        started_at=x["started_at"],
                        finished_at=x["finished_at"],
                    ),
                ),
            )
        )
    applicable = _actions(ext, workflow["id"], graph, now)
    actions, more_actions = audit.load(ext, workflow["id"])
    spans = _spans(executions, maps)[-50:]
    moments = [a.created_at for a in actions]
    span = present.timeline_span(spans, workflow["created_at"], now, moments)
    return Detail(
        workflow=workflow,
        cls=cls,
        executions=executions,
        truncated=truncated,
        maps=maps,
        table=_table(executions, maps),
        latest=latest,
        hero_text=hero_text,
        hero_problem=hero_problem,
        hero_url=present.hero_url(current_app.config.get("GENEVA_ADMIN_HERO_URL"), values),
        layout=layout,
        timeline=present.timeline(spans, workflow["created_at"], now, moments),
        reasons=_ended_by(workflow, actions, executions, now)
        + present.waiting_reasons(workflow["state"], list(latest.values()), now)
        + [f"map step `{k}`: {m.text}" for k, m in maps.items() if m.progress.state != "completed"],
        failures=failures,
        signals=signal_rows,
        more_signals=more_signals,
        actions={op: steps for op, steps in applicable.items() if op in BUTTONS},
        reruns=applicable.get("rerun_from", []),
        audit=audit.placed(actions, workflow["created_at"], span),
        more_actions=more_actions,
        pauses=audit.pauses(
            actions, executions, workflow["state"], now, workflow["created_at"], span
        ),
        logs_url=present.logs_url(logs_template, values),
        now=now,
    )


def present_row(x: dict[str, Any]) -> dict[str, Any]:
    """Add what a row shows beyond its columns: its output, its cursor and iterations."""
    x["output"] = items.output_text(x.pop("output_text", None))
    x["resumable"] = display.resumable(x)
    return x


def _maps(conn: Any, ext: Geneva, workflow_id: int, maps: Mapping[str, str]) -> dict[str, MapView]:
    """The map steps that have started (any item, or a row of their own)."""
    found = {}
    for name, progress in items.map_progress(conn, ext.tables, workflow_id, maps).items():
        if not progress.items:
            continue
        first, more = items.item_page(conn, ext.tables, workflow_id, name, limit=ITEMS_SHOWN)
        text = display.map_progress(progress.total, progress.counts)
        found[name] = MapView(progress, text, [present_row(x) for x in first], more)
    return found


def _table(executions: list[dict[str, Any]], maps: dict[str, MapView]) -> list[tuple[str, Any]]:
    """The executions table's rows, newest first, each map step where its newest item is."""
    entries: list[tuple[int, str, Any]] = [(x["id"], "execution", x) for x in executions]
    entries.extend((m.progress.newest_id, "map", m) for m in maps.values())
    entries.sort(key=lambda entry: entry[0], reverse=True)
    return [(kind, value) for _, kind, value in entries]


def _spans(executions: list[dict[str, Any]], maps: dict[str, MapView]) -> list[dict[str, Any]]:
    """The timeline's rows, oldest first: a map step is one bar over all of its items."""
    rows = list(executions)
    for name, m in maps.items():
        p = m.progress
        done = p.state in ("completed", "failed", "canceled")
        rows.append(
            {
                "id": p.newest_id,
                "step_name": name,
                "state": p.state if done or p.started_at is None else "in_progress",
                "outcome": m.text,
                "attempt": 1,
                "created_at": p.created_at,
                "scheduled_for": p.scheduled_for,
                "started_at": p.started_at,
                "finished_at": p.finished_at if done else None,
                "map_items": p.items,
                "resumable": "",
            }
        )
    rows.sort(key=lambda x: (x["created_at"], x["id"]))
    return rows


def _waiting_since(ext: Geneva, ids: list[int]) -> dict[int, datetime]:
    """When each waiting execution started waiting (its ``metadata.waiting_since``).

    Read as text and parsed here, so metadata that is not valid JSON (a hand edit on
    SQLite) leaves the sentence without its "since", never the page unrendered.
    """
    if not ids:
        return {}
    e = ext.tables.executions
    query = sa.select(e.c.id, sa.cast(e.c.metadata, sa.Text)).where(e.c.id.in_(ids))
    found: dict[int, datetime] = {}
    with ext.engine().connect() as conn:
        for execution_id, text in conn.execute(query):
            try:
                value = json.loads(text)["waiting_since"]
                found[int(execution_id)] = datetime.fromisoformat(value).replace(tzinfo=None)
            except (TypeError, ValueError, KeyError):
                continue
    return found


def _signals(ext: Geneva, workflow_id: int) -> tuple[list[SignalRow], bool]:
    s = ext.tables.signals
    columns = [c for c in s.c if c.name != "payload"]
    query = (
        sa.select(*columns, sa.cast(s.c.payload, sa.Text).label("payload_text"))
        .where(s.c.workflow_id == workflow_id)
        .order_by(s.c.id.desc())
        .limit(MAX_SIGNALS + 1)
    )
    with ext.engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    found = []
    for row in rows[:MAX_SIGNALS]:
        preview, full = _payload_text(row.pop("payload_text"))
        row.pop("workflow_id")
        found.append(SignalRow(preview=preview, full=full, **row))
    return found, len(rows) > MAX_SIGNALS


def _payload_text(text: str | None) -> tuple[str, str | None]:
    """The payload as one short line, and whole when the line cuts it (both plain text)."""
    if text is None:
        return "", None
    try:
        payload = json.loads(text)
    except ValueError:
        compact = pretty = text
    else:
        if payload is None:
            return "", None
        compact = json.dumps(payload, ensure_ascii=False, separators=(", ", ": "))
        pretty = json.dumps(payload, ensure_ascii=False, indent=2)
    if len(compact) <= PAYLOAD_PREVIEW:
        return compact, None
    if len(pretty) > MAX_PAYLOAD_SHOWN:
        pretty = pretty[:MAX_PAYLOAD_SHOWN] + "\n…"
    return compact[: PAYLOAD_PREVIEW - 1] + "…", pretty


def _hero(ext: Geneva, workflow: Mapping[str, Any]) -> tuple[str | None, str | None]:
    if workflow["hero_type"] is None:
        return None, None
    try:
        hero = ext.heroes.load(ext.db.session, workflow["hero_type"], workflow["hero_id"])
    except (LookupError, ValueError) as error:
        return None, str(error)
    if hero is None:
        return None, "the hero record no longer exists"
    return str(hero), None


def _ended_by(
    workflow: Mapping[str, Any],
    actions: list[Action],
    executions: list[dict[str, Any]],
    now: datetime,
) -> list[str]:
    """Who or what canceled a canceled workflow, and why, in one sentence."""
    if workflow["state"] != "canceled":
        return []
    by_operator = [a for a in actions if a.action == "cancel"]
    if by_operator:
        a = by_operator[-1]
        said = f": {a.reason}" if a.reason else ""
        return [f"canceled by {a.by} at {present.clock_time(a.created_at, now)} UTC{said}"]
    ran = [x for x in executions if x["outcome"] == "canceled" and x["started_at"] is not None]
    if ran:
        return [f"canceled by step `{ran[-1]['step_name']}` (self.cancel() or a cancel_if)"]
    return ["canceled (no operator action is recorded)"]


def _actions(ext: Geneva, workflow_id: int, graph: Any, now: datetime) -> dict[str, list[str]]:
    """The operator buttons, from the same rules and the same snapshot the commands use.

    Read from each step's latest execution (not the page's newest rows), so a button
    never vanishes on a long history.
    """
    with ext.engine().connect() as conn:
        found = store.snapshot(conn, ext.tables, workflow_id, lock=False)
    if found is None:
        return {}
    row, records = found
    return commands.available(Transition(graph, row["state"], records, now))
