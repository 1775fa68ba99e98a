"""The admin's pages (GET only, never changing state): overview, lists, detail, polls.

Each view renders the full page, or only its fragment when htmx asks (``HX-Request``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from flask import Blueprint
from flask import Response
from flask import abort
from flask import current_app
from flask import render_template
from flask import request

from .. import clock
from .. import display
from .. import failures as recent
from .. import queries
from .. import reads
from .. import schedules
from ..states import is_ongoing
from . import definitions
from . import forms
from . import items
from .detail import MapView
from .detail import load_detail
from .detail import load_workflow
from .detail import present_row
from .htmx import client_digests
from .htmx import is_htmx
from .htmx import poll_response

if TYPE_CHECKING:
    from ..extension import Geneva

#: Counts above this show as "1,000+": each is a capped index count (see queries), so the
#: overview costs the same however many workflows pile up in one state.
COUNT_CAP = 1_000
#: The overview groups the failures of the newest this many paused workflows...
FAILURES_SCAN = 200
#: ... and shows this many groups.
FAILURE_GROUPS = 20
PAGE_SIZE = 50
#: A list's total counts at most this many ("1,000+"), like the overview.
LIST_TOTAL_CAP = 1_000
MAX_PAGE_SIZE = 200
#: How many rows one list poll may refresh.
MAX_POLLED_ROWS = 400


def register(bp: Blueprint, ext: Geneva) -> None:
    """Add the page routes to the blueprint."""

    @bp.get("/")
    def overview() -> str:
        types = sorted(set(reads.workflow_types(ext)) | set(ext.registry))
        counts = queries.counts_by_type_and_state(ext, types, cap=COUNT_CAP)
        # The newest paused workflows' failures, grouped: one line per (class, step, error).
        failures = recent.group_failures(recent.recent_failures(ext, limit=FAILURES_SCAN))
        now = clock.now()
        template = "geneva/_partials/overview_body.html" if is_htmx() else "geneva/overview.html"
        return render_template(
            template,
            # The census on a full load only: the overview's polls leave the warning be.
            stranded=0 if is_htmx() else definitions.stranded(ext),
            types=types,
            counts=counts,
            failures=failures[:FAILURE_GROUPS],
            failures_scan=FAILURES_SCAN,
            poll_interval=poll_interval(),
            states=queries.ALL_STATES,
            cap=COUNT_CAP,
            registry=ext.registry,
            schedules=_schedules(ext, now),
            now=now,
        )

    @bp.get("/workflows")
    def workflow_list() -> str:
        return _list(ext, None)

    @bp.get("/classes/<path:workflow_type>")
    def class_list(workflow_type: str) -> str:
        forms.text("class", workflow_type)
        if workflow_type not in ext.registry and not queries.count_matching(
            ext, queries.WorkflowFilter(workflow_type=workflow_type), cap=1
        ):
            abort(404, description=f"No workflow class {workflow_type!r}.")
        return _list(ext, workflow_type)

    @bp.get("/workflows/poll")
    def rows_poll() -> Response:
        digests = {
            forms.number("row id", key[4:], low=1): value
            for key, value in client_digests().items()
            if key.startswith("row_")
        }
        ids = sorted(digests, reverse=True)[:MAX_POLLED_ROWS]
        rows = _rows_by_id(ext, ids)
        current, errors = queries.current_and_errors(ext, [r["id"] for r in rows])
        html = render_template(
            "geneva/_partials/workflow_rows.html",
            rows=rows,
            current=current,
            errors=errors,
            oob=True,
            digests={f"row_{k}": v for k, v in digests.items()},
            more=None,
            now=clock.now(),
        )
        return poll_response(html, ongoing=any(is_ongoing(r["state"]) for r in rows))

    # Ids in the path are parsed by forms.workflow_id, not the int converter: it would
    # accept any length (and non-ASCII digits), and the database refuses beyond BIGINT.
    @bp.get("/workflows/<workflow_id>")
    def workflow_detail(workflow_id: str) -> Any:
        return _detail(ext, forms.workflow_id(workflow_id))

    @bp.get("/workflows/<workflow_id>/steps/<step>/items")
    def map_items(workflow_id: str, step: str) -> str:
        return _items(ext, forms.workflow_id(workflow_id), step)

    @bp.get("/workflows/<workflow_id>/executions/<execution_id>/output")
    def execution_output(workflow_id: str, execution_id: str) -> Response:
        wid = forms.workflow_id(workflow_id)
        eid = forms.number("execution id", execution_id, low=1, status=404)
        with ext.engine().connect() as conn:
            try:
                text = items.whole_output(conn, ext.tables, wid, eid)
            except LookupError as error:
                abort(404, description=str(error))
        # Plain text (and nosniff, from security): the browser shows it, never runs it.
        return Response(text, mimetype="text/plain")


def _detail(ext: Geneva, workflow_id: int) -> Any:
    workflow = load_workflow(ext, workflow_id)
    if workflow is None:
        abort(404, description=f"No workflow with id {workflow_id}.")
    detail = load_detail(ext, workflow, current_app.config.get("GENEVA_ADMIN_LOGS_URL"))
    context = dict(d=detail, poll_interval=poll_interval())
    if is_htmx():
        html = render_template(
            "geneva/_partials/workflow_live.html", oob=True, digests=client_digests(), **context
        )
        return poll_response(html, ongoing=detail.ongoing)
    return render_template("geneva/workflow_detail.html", oob=False, digests={}, **context)


def _items(ext: Geneva, workflow_id: int, step: str) -> str:
    """A map step's items, filtered by state, a page at a time (keyset on the item index)."""
    forms.text("step", step)
    workflow = load_workflow(ext, workflow_id)
    if workflow is None:
        abort(404, description=f"No workflow with id {workflow_id}.")
    cls = ext.registry.get(workflow["type"])
    maps = cls.__geneva_definition__.graph.maps if cls is not None else {}
    if step not in maps:
        abort(404, description=f"Workflow {workflow_id} has no map step {step!r}.")
    state = request.args.get("state") or None
    if state is not None and state not in items.ITEM_FILTERS:
        abort(
            400,
            description=f"state: {state[:64]!r} is not one of {', '.join(items.ITEM_FILTERS)}.",
        )
    after = forms.optional_number("after", request.args.get("after"), low=0)
    with ext.engine().connect() as conn:
        progress = items.map_progress(conn, ext.tables, workflow_id, {step: maps[step]})[step]
        rows, more = items.item_page(
            conn, ext.tables, workflow_id, step, state=state, after=after, limit=PAGE_SIZE
        )
    view = MapView(progress, display.map_progress(progress.total, progress.counts), [], more)
    view.first.extend(present_row(x) for x in rows)
    return render_template(
        "geneva/items_page.html",
        x=view,
        d=dict(workflow=workflow, now=clock.now()),
        item_state=state,
        filters=items.ITEM_FILTERS,
        first_page=after is None,
    )


@dataclass(frozen=True)
class ScheduleRow:
    """A scheduled class on the overview: what ``flask geneva schedules`` prints."""

    identity: str
    name: str
    #: The crontab in words, e.g. "every day at 06:00 UTC".
    schedule: str
    #: The next tick after now (None: none within a year).
    next_tick: datetime | None
    per_hero: bool
    catch_up: int


def _schedules(ext: Geneva, now: datetime) -> list[ScheduleRow]:
    rows = []
    for cls in schedules.scheduled_classes(ext):
        definition = cls.__geneva_definition__
        rows.append(
            ScheduleRow(
                identity=cls.__geneva_identity__,
                name=cls.__name__,
                schedule=definition.schedule.describe(),
                next_tick=definition.schedule.next_tick(now),
                per_hero=definition.scheduled_heroes,
                catch_up=definition.schedule_catch_up,
            )
        )
    return rows


def poll_interval() -> float:
    """Seconds between two polls of an ongoing page (``GENEVA_ADMIN_POLL_INTERVAL``)."""
    value = current_app.config.get("GENEVA_ADMIN_POLL_INTERVAL", 3)
    return float(value.total_seconds() if hasattr(value, "total_seconds") else value)


def _rows_by_id(ext: Geneva, ids: list[int]) -> list[Any]:
    if not ids:
        return []
    w = ext.tables.workflows
    with ext.engine().connect() as conn:
        query = sa.select(w).where(w.c.id.in_(ids)).order_by(w.c.id.desc())
        return [dict(r._mapping) for r in conn.execute(query)]


def _list(ext: Geneva, workflow_type: str | None) -> str:
    f = forms.parse_filter(request.args, workflow_type)
    # A larger limit than a page is cut to a page; a cursor is a row's id.
    limit = forms.optional_number("limit", request.args.get("limit"), low=1)
    limit = PAGE_SIZE if limit is None else min(limit, MAX_PAGE_SIZE)
    before_id = forms.optional_number("before", request.args.get("before"), low=1)
    rows = queries.list_workflows(ext, f, limit=limit + 1, before_id=before_id)
    more = rows[limit - 1]["id"] if len(rows) > limit else None
    rows = rows[:limit]
    current, errors = queries.current_and_errors(ext, [r["id"] for r in rows])
    # The total on a full page load: capped, so a filter over millions costs a bounded count.
    total = None if is_htmx() else queries.count_matching(ext, f, cap=LIST_TOTAL_CAP)
    context: dict[str, Any] = dict(
        rows=rows,
        current=current,
        errors=errors,
        total=total,
        total_cap=LIST_TOTAL_CAP,
        more=more,
        limit=limit,
        filter=f,
        filter_args=forms.filter_args(f, include_type=workflow_type is None),
        form=forms.form_values(f),
        workflow_type=workflow_type,
        cls=ext.registry.get(workflow_type) if workflow_type else None,
        types=sorted(ext.registry),
        states=queries.ALL_STATES,
        oob=False,
        digests={},
        now=clock.now(),
        poll_interval=poll_interval(),
        any_ongoing=any(is_ongoing(r["state"]) for r in rows),
        first_page=before_id is None,
    )
    if is_htmx():
        return render_template("geneva/_partials/workflow_rows.html", **context)
    return render_template("geneva/workflow_list.html", **context)
