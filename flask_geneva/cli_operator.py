"""The operator commands of ``flask geneva``: pause, resume, cancel, skip, reattempt,
rerun and resume-at, on workflow ids or on every workflow a filter matches; and
signal, on one workflow.

Each command is recorded in the workflow's operator actions with ``--actor`` (by
default the operating-system user running the command) and ``--reason``. The work is
:func:`~flask_geneva.operations.perform`'s, one short transaction per workflow, so a
command by filter over many workflows holds no long lock.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from typing import Any

import click
import sqlalchemy as sa

from . import display
from . import queries
from .cli import WORKFLOW_ID
from .cli import _ext
from .cli import _no_nul
from .cli import build_filter
from .cli import filter_options
from .cli import geneva_cli
from .operations import ALLOWED
from .operations import check_audit
from .operations import perform
from .signal_delivery import deliver

_PAST = {
    "pause": "paused",
    "resume": "resumed",
    "cancel": "canceled",
    "skip": "skipped",
    "reattempt": "reattempted",
    "rerun_from": "rerun",
    "resume_at": "resumed",
}


def os_user() -> str | None:
    """The operating-system user running the command: the default ``--actor``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment nor the password file
        return None


def audit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--actor`` and ``--reason`` (recorded with the action)."""
    func = click.option(
        "--reason", default=None, help="Why; recorded with the action and shown in the admin."
    )(func)
    return click.option(
        "--actor",
        default=None,
        help="Who acts, e.g. an e-mail address (default: the operating-system user).",
    )(func)


def _audit(actor: str | None, reason: str | None) -> tuple[str | None, str | None]:
    """``--actor`` (the operating-system user by default) and ``--reason``, checked."""
    _no_nul("--actor", actor)
    _no_nul("--reason", reason)
    try:
        return check_audit(actor if actor is not None else os_user(), reason)
    except ValueError as error:  # too long, control characters
        raise click.BadParameter(str(error).replace("=", "", 1)) from None


def _run(
    operation: str,
    workflow_ids: tuple[int, ...],
    selection: queries.WorkflowFilter | None,
    *,
    step: str | None,
    actor: str | None,
    reason: str | None,
    yes: bool,
) -> None:
    """Apply ``operation`` to the ids, or to what ``selection`` matches; report and exit."""
    ext = _ext()
    actor, reason = _audit(actor, reason)
    if workflow_ids:
        batches: Any = [list(dict.fromkeys(workflow_ids))]
    else:
        assert selection is not None
        # No --state: the states the operation applies to. States given are taken as
        # given, so a mistaken one is reported per workflow, not silently matched away.
        target = selection if selection.states else queries.narrowed(selection, ALLOWED[operation])
        total = 0 if target is None else queries.count_matching(ext, target)
        if target is None or total == 0:
            click.echo("no workflows match")
            return
        if not yes:
            what = operation.replace("_from", "").replace("_", " ")
            click.confirm(f"{what.capitalize()} {total} workflow(s)?", abort=True)
        batches = queries.iter_ids(ext, target, batch_size=200)
    done, errors = 0, 0
    for ids in batches:
        result = perform(
            ext, operation, ids, step=step, actor=actor, reason=reason, raise_errors=False
        )
        done += len(result.done)
        for workflow_id, message in result.errors.items():
            errors += 1
            click.echo(f"workflow {workflow_id}: {message}", err=True)
    where = {"rerun_from": f" from {step}", "resume_at": f" at {step}"}.get(operation, "")
    click.echo(f"{_PAST[operation]} {done} workflow(s){where}")
    if errors:
        raise click.ClickException(f"{errors} workflow(s) not {_PAST[operation]}")


def _operation_command(operation: str, help_text: str) -> None:
    @geneva_cli.command(operation, help=help_text)
    @click.argument("workflow_ids", nargs=-1, type=WORKFLOW_ID)
    @filter_options
    @audit_options
    @click.option("-y", "--yes", is_flag=True, help="Act on a filter without asking.")
    def command(
        workflow_ids: tuple[int, ...],
        class_name: str | None,
        states: tuple[str, ...],
        hero: str | None,
        step: str | None,
        attention: str | None,
        error: str | None,
        error_class: str | None,
        actor: str | None,
        reason: str | None,
        yes: bool,
    ) -> None:
        by_filter = any((class_name, states, hero, attention, error, error_class))
        step_name = step if operation in ("skip", "reattempt") else None
        if workflow_ids and (by_filter or (step and step_name is None)):
            raise click.ClickException("give workflow ids or filter options, not both")
        if not workflow_ids and not (by_filter or step):
            raise click.ClickException(
                "give workflow ids, or filter options (--class, --state, --hero, --step, "
                f"--attention, --error, --error-class) to {operation} every matching workflow"
            )
        selection = (
            None
            if workflow_ids
            else build_filter(
                class_name, states, hero, step, attention, error=error, error_class=error_class
            )
        )
        _run(
            operation,
            workflow_ids,
            selection,
            step=step_name,
            actor=actor,
            reason=reason,
            yes=yes,
        )


_operation_command("pause", "Pause workflows; running steps finish, nothing new starts.")
_operation_command("resume", "Resume paused workflows: re-run failed steps, re-send due ones.")
_operation_command("cancel", "Cancel workflows and their scheduled steps.")
_operation_command("skip", "Skip the due or failed step (--step names it when several are).")
_operation_command("reattempt", "Run the due or failed step again now (--step: which one).")


@geneva_cli.command("rerun")
@click.argument("workflow_ids", nargs=-1, type=WORKFLOW_ID)
@click.option(
    "--from", "from_step", required=True, help="The step to run again, with its descendants."
)
@click.option("-c", "--class", "class_name", help="Workflow class (name or stored type).")
@click.option("-s", "--state", "states", multiple=True, help="paused, finished or canceled.")
@click.option("--hero", help="Hero as Type or Type:id, e.g. Payment:7.")
@audit_options
@click.option("-y", "--yes", is_flag=True, help="Act on a filter without asking.")
def rerun_command(
    workflow_ids: tuple[int, ...],
    from_step: str,
    class_name: str | None,
    states: tuple[str, ...],
    hero: str | None,
    actor: str | None,
    reason: str | None,
    yes: bool,
) -> None:
    """Run a step again, and every step after it, in paused, finished or canceled workflows.

    The old executions stay as history; the steps before it keep theirs and their
    outputs; each workflow is ready again. Give workflow ids, or a filter (--class is
    required then) to rerun every workflow it matches.
    """
    _no_nul("--from", from_step)
    if workflow_ids and any((class_name, states, hero)):
        raise click.ClickException("give workflow ids or filter options, not both")
    if not workflow_ids and class_name is None:
        raise click.ClickException(
            "give workflow ids, or --class (with --state, --hero) to rerun every matching "
            "workflow of one class"
        )
    selection = None if workflow_ids else build_filter(class_name, states, hero, None)
    _run(
        "rerun_from",
        workflow_ids,
        selection,
        step=from_step,
        actor=actor,
        reason=reason,
        yes=yes,
    )


@geneva_cli.command("resume-at")
@click.argument("workflow_id", type=WORKFLOW_ID)
@click.argument("step")
@audit_options
def resume_at_command(workflow_id: int, step: str, actor: str | None, reason: str | None) -> None:
    """Go on from STEP in paused workflow WORKFLOW_ID, for instance one a deploy stranded.

    What is due or waiting ends; the steps not done that do not come after STEP are
    recorded as skipped; STEP is scheduled now.
    """
    _no_nul("STEP", step)
    _run("resume_at", (workflow_id,), None, step=step, actor=actor, reason=reason, yes=True)


@geneva_cli.command("signal")
@click.argument("workflow_id", type=WORKFLOW_ID)
@click.argument("name")
@click.option("-p", "--payload", default=None, help="The payload, as JSON (default: none).")
@click.option(
    "-k", "--idempotency-key", default=None, help="Deliver once per key; a repeat is a duplicate."
)
@audit_options
def signal_command(
    workflow_id: int,
    name: str,
    payload: str | None,
    idempotency_key: str | None,
    actor: str | None,
    reason: str | None,
) -> None:
    """Deliver signal NAME to workflow ID, as a webhook would (wf.signal).

    Recorded in the workflow's operator actions with --actor and --reason (a
    duplicate, stored before, records nothing new).
    """
    for option, value in (("NAME", name), ("--idempotency-key", idempotency_key)):
        _no_nul(option, value)
    actor, reason = _audit(actor, reason)
    try:
        data = None if payload is None else json.loads(payload)
    except ValueError as error:
        raise click.ClickException(f"--payload is not JSON: {error}") from None
    ext = _ext()
    workflow = load_workflow(ext, workflow_id)
    result = deliver(
        ext,
        type(workflow),
        workflow_id,
        name,
        data,
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        operator=True,
    )
    click.echo(display.signal_result(result, workflow.state))


def load_workflow(ext: Any, workflow_id: int) -> Any:
    """Return the workflow with ``workflow_id`` as an instance of its class."""
    w = ext.tables.workflows
    stored_type = ext.db.session.execute(
        sa.select(w.c.type).where(w.c.id == workflow_id)
    ).scalar_one_or_none()
    if stored_type is None:
        raise click.ClickException(f"no workflow with id {workflow_id}")
    cls = ext.registry.get(stored_type)
    if cls is None:
        raise click.ClickException(
            f"workflow {workflow_id} has type {stored_type!r}, which names no workflow class "
            "in this process"
        )
    return ext.db.session.get(cls, workflow_id)
