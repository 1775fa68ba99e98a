"""The admin's state-changing routes (POST only): one workflow, or many in batches.

Each calls :func:`flask_geneva.operations.perform` (the send-signal form:
:func:`flask_geneva.signal_delivery.deliver`, what ``wf.signal`` calls), recorded with
the actor the authorization hook named and the form's reason, and answers htmx with the
updated fragment, or a plain form post with a redirect (post/redirect/get).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING
from typing import Any

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for

from .. import clock
from .. import display
from .. import queries
from ..commands import ALLOWED
from ..errors import GenevaError
from ..operations import perform
from ..signal_delivery import deliver
from . import forms
from . import security
from .detail import load_detail
from .detail import load_workflow
from .htmx import is_htmx
from .views import poll_interval

if TYPE_CHECKING:
    from ..extension import Geneva

#: Operations offered on a single workflow and in bulk.
SINGLE_OPERATIONS = ("pause", "resume", "cancel", "skip", "reattempt", "rerun_from")
BULK_OPERATIONS = ("pause", "resume", "cancel", "rerun_from")
#: Bulk work per request: stop after this many seconds, then let the page continue.
BULK_SECONDS = 2.0
BULK_BATCH = 100
#: The preview counts at most this many workflows ("100,000+").
PREVIEW_CAP = 100_000


def register(bp: Blueprint, ext: Geneva) -> None:
    """Add the action routes to the blueprint."""

    # The id is parsed by forms.workflow_id (see views.workflow_detail for why).
    @bp.post("/workflows/<workflow_id>/<operation>")
    def workflow_action(workflow_id: str, operation: str) -> Any:
        return _act(ext, forms.workflow_id(workflow_id), operation)

    @bp.post("/workflows/bulk")
    def bulk_action() -> Any:
        operation = request.form.get("op", "")
        if operation not in BULK_OPERATIONS:
            abort(400, description=f"Bulk operation must be one of {', '.join(BULK_OPERATIONS)}.")
        scope = request.form.get("scope", "selected")
        if scope not in ("selected", "filter"):
            abort(400, description="scope must be 'selected' or 'filter'.")
        f = forms.parse_filter(request.form)
        ids = forms.parse_ids(request.form.getlist("ids")) if scope == "selected" else []
        target = _narrow(f, operation)
        step = forms.text("rerun_step", request.form.get("rerun_step", "").strip()) or None
        if operation == "rerun_from" and step is None:
            abort(400, description="A bulk rerun needs the step to re-run from (rerun_step).")
        reason = forms.text("reason", request.form.get("reason", "").strip()) or None
        context: dict[str, Any] = dict(
            op=operation,
            scope=scope,
            ids=ids,
            filter=f,
            filter_args=forms.filter_args(f),
            past=_past(operation),
            step=step if operation == "rerun_from" else None,
            reason=reason,
        )
        if scope == "selected" and not ids:
            context.update(mode="empty")
        elif request.form.get("confirm") != "1":
            context.update(mode="preview", **_preview(ext, target, ids, scope))
        else:
            context.update(_run(ext, target, ids, scope, operation, context))
        template = "geneva/_partials/bulk.html" if is_htmx() else "geneva/bulk_page.html"
        return render_template(template, **context)


def _act(ext: Geneva, workflow_id: int, operation: str) -> Any:
    if operation == "signal":
        return _signal(ext, workflow_id)
    if operation not in SINGLE_OPERATIONS:
        abort(404, description=f"No operation {operation!r}.")
    if load_workflow(ext, workflow_id) is None:
        abort(404, description=f"No workflow with id {workflow_id}.")
    step = forms.text("step", request.form.get("step", "")) or None
    reason = forms.text("reason", request.form.get("reason", "")) or None
    try:
        result = perform(
            ext,
            operation,
            [workflow_id],
            step=step,
            actor=security.actor(),
            reason=reason,
            raise_errors=False,
        )
    except ValueError as error:  # the reason is too long or holds control characters
        return _answer(ext, workflow_id, f"{str(error)[0].upper()}{str(error)[1:]}.", "error")
    detail = result.details.get(workflow_id) or {}
    if workflow_id in result.errors:
        message = result.errors[workflow_id]
    elif operation == "rerun_from":
        message = f"Workflow {workflow_id} runs again: {', '.join(detail.get('rerun', []))}."
    else:
        message = f"{_past(operation)} workflow {workflow_id}."
    category = "error" if result.errors else "success"
    return _answer(ext, workflow_id, message, category)


def _signal(ext: Geneva, workflow_id: int) -> Any:
    """Deliver the form's signal as an operator action; say what happened, or why not."""
    row = load_workflow(ext, workflow_id)
    if row is None:
        abort(404, description=f"No workflow with id {workflow_id}.")
    name = forms.text("name", request.form.get("name", "").strip())
    key = forms.text("idempotency_key", request.form.get("idempotency_key", "").strip()) or None
    payload_text = forms.text("payload", request.form.get("payload", "").strip())
    reason = forms.text("reason", request.form.get("reason", "")) or None
    cls = ext.registry.get(row["type"])
    try:
        payload = json.loads(payload_text) if payload_text else None
    except (ValueError, RecursionError) as error:
        return _answer(ext, workflow_id, f"The payload is not JSON: {error}.", "error")
    if cls is None:
        message = f"Type {row['type']!r} names no workflow class in this process."
        return _answer(ext, workflow_id, message, "error")
    workflow = ext.db.session.get(cls, workflow_id)
    try:
        signal = deliver(
            ext,
            cls,
            workflow_id,
            name,
            payload,
            idempotency_key=key,
            actor=security.actor(),
            reason=reason,
            operator=True,
        )
    except GenevaError as error:  # SignalError, InvalidStateError
        ext.db.session.rollback()
        return _answer(ext, workflow_id, str(error), "error")
    except ValueError as error:  # the reason is too long or holds control characters
        ext.db.session.rollback()
        return _answer(ext, workflow_id, f"{str(error)[0].upper()}{str(error)[1:]}.", "error")
    said = display.signal_result(signal, workflow.state)
    return _answer(ext, workflow_id, f"{said[0].upper()}{said[1:]}.", "success")


def _answer(ext: Geneva, workflow_id: int, message: str, category: str) -> Any:
    """Flash and redirect a plain form post; answer htmx with the refreshed fragments."""
    if not is_htmx():
        flash(message, category)
        return redirect(url_for(".workflow_detail", workflow_id=workflow_id))
    workflow = load_workflow(ext, workflow_id)
    assert workflow is not None  # operations never delete
    detail = load_detail(ext, workflow, current_app.config.get("GENEVA_ADMIN_LOGS_URL"))
    return render_template(
        "geneva/_partials/action_result.html",
        d=detail,
        oob=True,
        digests={},
        poll_interval=poll_interval(),
        message=message,
        category=category,
    )


def _past(operation: str) -> str:
    return {
        "pause": "Paused",
        "resume": "Resumed",
        "cancel": "Canceled",
        "skip": "Skipped a step of",
        "reattempt": "Reattempted a step of",
        "rerun_from": "Rerun",
    }[operation]


def _narrow(f: queries.WorkflowFilter, operation: str) -> queries.WorkflowFilter | None:
    """Return the filter restricted to states the operation applies to (None: none do)."""
    return queries.narrowed(f, ALLOWED[operation])


def _preview(
    ext: Geneva, target: queries.WorkflowFilter | None, ids: list[int], scope: str
) -> dict[str, Any]:
    if target is None:
        return {"count": 0, "capped": False}
    if scope == "filter":
        count = queries.count_matching(ext, target, cap=PREVIEW_CAP)
        return {"count": count, "capped": count >= PREVIEW_CAP}
    return {"count": len(_selected_batch(ext, target, ids, None, len(ids))), "capped": False}


def _selected_batch(
    ext: Geneva, target: queries.WorkflowFilter, ids: list[int], before: int | None, limit: int
) -> list[int]:
    w = ext.tables.workflows
    query = queries.filtered_select(ext, target).where(w.c.id.in_(ids))
    if before is not None:
        query = query.where(w.c.id < before)
    with ext.engine().connect() as conn:
        return [int(r[0]) for r in conn.execute(query.limit(limit))] if ids else []


def _filter_batch(
    ext: Geneva, target: queries.WorkflowFilter, before: int | None, limit: int
) -> list[int]:
    w = ext.tables.workflows
    query = queries.filtered_select(ext, target)
    if before is not None:
        query = query.where(w.c.id < before)
    with ext.engine().connect() as conn:
        return [int(r[0]) for r in conn.execute(query.limit(limit))]


def _run(
    ext: Geneva,
    target: queries.WorkflowFilter | None,
    ids: list[int],
    scope: str,
    operation: str,
    context: dict[str, Any],
) -> dict[str, Any]:
    """Apply the operation batch by batch until done or out of time for this request.

    ``context`` gives the rerun's ``step`` and the ``reason`` every action records.
    """
    done = forms.optional_number("done", request.form.get("done")) or 0
    failed = forms.optional_number("failed", request.form.get("failed")) or 0
    before = forms.optional_number("before", request.form.get("before"), low=1)
    errors: dict[int, str] = {}
    deadline = time.monotonic() + BULK_SECONDS
    finished = target is None
    # At least one batch per request, then more while time is left; the page posts
    # again with the cursor (``before``) until everything matching was handled.
    while not finished:
        assert target is not None
        if scope == "filter":
            batch = _filter_batch(ext, target, before, BULK_BATCH)
        else:
            batch = _selected_batch(ext, target, ids, before, BULK_BATCH)
        if batch:
            try:
                result = perform(
                    ext,
                    operation,
                    batch,
                    step=context["step"],
                    actor=security.actor(),
                    reason=context["reason"],
                    raise_errors=False,
                )
            except ValueError as error:  # the reason: too long, control characters
                abort(400, description=str(error))
            done += len(result.done)
            failed += len(result.errors)
            for workflow_id, message in result.errors.items():
                if len(errors) < 10:
                    errors[workflow_id] = message
            before = batch[-1]
        finished = len(batch) < BULK_BATCH
        if time.monotonic() >= deadline:
            break
    return {
        "mode": "done" if finished else "progress",
        "done": done,
        "failed": failed,
        "errors": errors,
        "before": before,
        "now": clock.now(),
    }
