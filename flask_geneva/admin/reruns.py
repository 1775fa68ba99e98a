"""The admin's "Re-run from here": the plan of a rerun, shown before it is confirmed.

``GET /workflows/<id>/rerun?step=S`` answers the preview, read under the workflow's
lock and changing nothing (:func:`flask_geneva.operations.plan_rerun`): which steps
run again, which are kept with their outputs, what would be canceled, or why the rerun
would be refused. Its confirm form posts ``rerun_from`` to the ordinary action route,
with the reason typed beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from flask import Blueprint
from flask import abort
from flask import render_template
from flask import request

from ..errors import GenevaError
from ..errors import WorkflowNotFoundError
from ..operations import plan_rerun
from . import forms
from .htmx import is_htmx

if TYPE_CHECKING:
    from ..extension import Geneva


def register(bp: Blueprint, ext: Geneva) -> None:
    """Add the rerun preview route to the blueprint."""

    @bp.get("/workflows/<workflow_id>/rerun")
    def rerun_preview(workflow_id: str) -> Any:
        ident = forms.workflow_id(workflow_id)
        step = forms.text("step", request.args.get("step", "").strip())
        if not step:
            abort(400, description="Name the step to re-run from (step=...).")
        try:
            plan = plan_rerun(ext, ident, step)
        except WorkflowNotFoundError:
            abort(404, description=f"No workflow with id {ident}.")
        except GenevaError as error:  # no such step, or no class for the type
            abort(400, description=str(error))
        template = "geneva/_partials/rerun_plan.html" if is_htmx() else "geneva/rerun_page.html"
        return render_template(template, plan=plan, workflow_id=ident)
