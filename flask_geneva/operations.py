"""Operator commands on workflows by id: pause, resume, cancel, skip, reattempt.

The one service layer that ``Workflow.pause()`` & co., the CLI and the admin share:
each command is one short locked transaction per workflow (see
:mod:`~flask_geneva.transaction`), its rules decided by
:class:`~flask_geneva.transitions.Transition`, its triggers sent after commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from sqlalchemy.engine import Connection

from . import clock
from . import store
from .errors import GenevaError
from .errors import InvalidStateError
from .scheduling import Trigger
from .states import StepState
from .states import WorkflowState
from .transaction import run_locked
from .transitions import Transition

if TYPE_CHECKING:
    from .extension import Geneva

#: The commands and the states each is allowed from.
ALLOWED: dict[str, frozenset[str]] = {
    "pause": frozenset({WorkflowState.READY, WorkflowState.PERFORMING}),
    "resume": frozenset({WorkflowState.PAUSED}),
    "cancel": frozenset({WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED}),
    "skip": frozenset({WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED}),
    "reattempt": frozenset({WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED}),
}

_MESSAGES = {
    "pause": "Cannot pause a {state} workflow",
    "resume": "Cannot resume a {state} workflow",
    "cancel": "Cannot cancel a {state} workflow",
    "skip": "Cannot skip on a {state} workflow",
    "reattempt": "Cannot reattempt on a {state} workflow",
}


@dataclass
class OperationResult:
    """What a command did to a set of workflows."""

    operation: str
    #: Ids the command applied to.
    done: list[int] = field(default_factory=list)
    #: Ids it could not apply to, with the reason.
    errors: dict[int, str] = field(default_factory=dict)


def perform(
    ext: Geneva,
    operation: str,
    workflow_ids: Iterable[int],
    *,
    step: str | None = None,
    raise_errors: bool = True,
) -> OperationResult:
    """Apply ``operation`` to each workflow, one short transaction each.

    :param operation: ``pause``, ``resume``, ``cancel``, ``skip`` or ``reattempt``.
    :param step: for ``skip`` / ``reattempt``: the step; needed when several are due.
    :param raise_errors: raise the first :class:`GenevaError` instead of collecting it
        in :attr:`OperationResult.errors`.
    :raises InvalidStateError: the command is not allowed in the workflow's state.
    """
    if operation not in ALLOWED:
        raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(ALLOWED)}")
    state = ext.get_state()
    result = OperationResult(operation)
    for workflow_id in workflow_ids:
        try:
            triggers = run_locked(
                ext.engine(),
                lambda conn, wid=workflow_id: _apply(ext, conn, operation, wid, step),  # type: ignore[misc]
            )
        except GenevaError as error:
            if raise_errors:
                raise
            result.errors[workflow_id] = str(error)
            continue
        state.send(triggers)
        result.done.append(workflow_id)
        ext.log.info("[workflow id=%s] %s by operator", workflow_id, operation)
    return result


def _apply(
    ext: Geneva, conn: Connection, operation: str, workflow_id: int, step: str | None
) -> list[Trigger]:
    tables = ext.tables
    row = store.lock_workflow(conn, tables, workflow_id)
    if row is None:
        raise GenevaError(f"workflow {workflow_id} does not exist")
    if row["state"] not in ALLOWED[operation]:
        raise InvalidStateError(_MESSAGES[operation].format(state=row["state"]))
    cls = ext.registry.get(row["type"])
    graph = cls.__geneva_definition__.graph if cls is not None else None
    if graph is None and operation in ("resume", "skip", "reattempt"):
        raise GenevaError(
            f"workflow {workflow_id} has type {row['type']!r}, which names no workflow class "
            f"in this process; cannot {operation} it (cancel is still possible)"
        )
    priority = cls.__geneva_definition__.job_options.get("priority") if cls is not None else None
    transition = Transition(
        graph,
        row["state"],
        store.load_records(conn, tables, workflow_id),
        clock.now(),
        priority=priority,
    )
    if operation == "pause":
        transition.set_state(WorkflowState.PAUSED)
    elif operation == "resume":
        transition.resume()
    elif operation == "cancel":
        transition.cancel_scheduled()
        transition.set_state(WorkflowState.CANCELED)
    else:
        _skip_or_reattempt(transition, operation, _target(transition, operation, step))
    return store.persist(conn, tables, workflow_id, transition)


def _target(transition: Transition, operation: str, step: str | None) -> str:
    candidates = transition.due_or_failed()
    if step is None:
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise InvalidStateError(f"Cannot {operation}: no step is due or failed")
        raise InvalidStateError(
            f"Cannot {operation}: several steps are due or failed "
            f"({', '.join(candidates)}); name the step"
        )
    assert transition.graph is not None
    if step not in transition.graph:
        raise InvalidStateError(f"Cannot {operation}: the workflow has no step {step!r}")
    if step not in candidates:
        raise InvalidStateError(f"Cannot {operation} step {step!r}: it is not due or failed")
    return step


def _skip_or_reattempt(transition: Transition, operation: str, step: str) -> None:
    latest: Any = transition.latest(step)
    scheduled = latest is not None and latest.state == StepState.SCHEDULED
    if operation == "skip":
        if scheduled:
            transition.end(latest, StepState.SKIPPED, "skipped")
        else:
            transition.add(step, due=transition.now, state=StepState.SKIPPED)
    elif scheduled:
        latest.scheduled_for = transition.now
        latest.changes["scheduled_for"] = transition.now
        transition.retrigger(latest)
    else:
        transition.add(step, due=transition.now)
    if transition.state == WorkflowState.PAUSED:
        transition.resume()
    else:
        transition.advance()
        transition.settle_state()
