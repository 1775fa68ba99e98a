"""Helpers for testing workflows: run real executions synchronously, ignoring waits.

They use the real executor and database, so what passes here behaves the same in a
worker. Huey messages sent meanwhile are left in the queue; the executor ignores the
ones for executions already run, so a worker started later does no harm.

::

    from flask_geneva.testing import speedrun, assert_workflow_state

    def test_payment(app):
        wf = PaymentWorkflow.create(hero=payment)
        speedrun(wf)
        assert_workflow_state(wf, "finished")

A resumable step (``@step(resumable=True)``): :func:`perform_next_step` runs one
execution up to its end or up to the checkpoint where it continues (outcome
``continued``; the continuation is the next scheduled execution), and
:func:`assert_cursor` checks the cursor it last stored::

    perform_next_step(wf)
    assert_cursor(wf, "backfill", 100)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

import sqlalchemy as sa

from . import clock
from . import executor
from . import unit
from .errors import InvalidStateError
from .mapping import StepExecutionBase
from .states import RUNNABLE_WORKFLOW_STATES
from .states import StepState
from .workflow import WorkflowBase

if TYPE_CHECKING:
    from .extension import Geneva
    from .records import Signal

#: A workflow instance, returned as the type it was given.
W = TypeVar("W", bound=WorkflowBase)

__all__ = [
    "abandon_next_step",
    "assert_cursor",
    "assert_step_executed",
    "assert_waiting_for",
    "assert_workflow_state",
    "deliver_signal",
    "perform_next_step",
    "perform_step_inline",
    "speedrun",
    "travel",
]


def _ext(workflow: WorkflowBase) -> Geneva:
    return type(workflow)._geneva


def _sync(workflow: WorkflowBase) -> None:
    """Commit the test's session and re-read the workflow row.

    A worker sees only committed rows, and on SQLite an open write transaction in the
    test's session would block the executor; so setup is committed first. The row is
    re-read on a fresh connection, because the session's snapshot may predate the step
    (MySQL/MariaDB's REPEATABLE READ).
    """
    session = sa.inspect(workflow).session
    if session is not None:
        session.commit()
    workflow._reload_committed()


def _next_scheduled(workflow: WorkflowBase) -> int | None:
    ext = _ext(workflow)
    e = ext.tables.executions
    query = (
        sa.select(e.c.id)
        .where(e.c.workflow_id == workflow.id, e.c.state == StepState.SCHEDULED)
        .order_by(e.c.scheduled_for, e.c.id)
        .limit(1)
    )
    with ext.engine().connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else row[0]


def perform_next_step(workflow: WorkflowBase) -> StepExecutionBase | None:
    """Run the workflow's earliest scheduled execution now, even if its wait has not passed.

    Commits ``db.session`` first (see the module docstring). Exceptions raised by the
    step propagate after their outcome is recorded. A resumable step runs up to the end
    of this execution: its end, or the checkpoint where it continues (``continued``);
    the continuation is the next scheduled execution. A paused, finished or canceled
    workflow runs nothing: a paused workflow's scheduled executions wait for resume.

    :return: the execution that ran (a ``StepExecution``), or None if nothing ran.
    """
    ext = _ext(workflow)
    _sync(workflow)
    if workflow.state not in RUNNABLE_WORKFLOW_STATES:
        return None
    execution_id = _next_scheduled(workflow)
    if execution_id is None:
        return None
    try:
        executor.execute(
            ext, ext.get_state(), execution_id, ignore_schedule=True, raise_errors=True
        )
    finally:
        _sync(workflow)
    found: StepExecutionBase | None = ext.db.session.get(
        ext.StepExecution, execution_id, populate_existing=True
    )
    return found


def abandon_next_step(workflow: WorkflowBase) -> StepExecutionBase:
    """Leave the workflow's next step as a worker killed in its body leaves it.

    A worker claims an execution in a short transaction of its own, then runs the body;
    killed there (kill -9, out of memory), it leaves the claim and nothing else: the
    execution stays ``in_progress``, and the body's uncommitted writes are gone with its
    connection. This does exactly the claim, for testing what a lost worker costs:
    travel past the step's ``stuck_after`` and run housekeeping to recover it.
    (Anything a body raises is recorded as its outcome, so raising cannot stand in for
    a kill.)

    :raises InvalidStateError: the workflow is paused, finished or canceled, or has no
        scheduled step.
    :return: the execution left in progress.
    """
    ext = _ext(workflow)
    _sync(workflow)
    execution_id = _next_scheduled(workflow) if workflow.state in RUNNABLE_WORKFLOW_STATES else None
    if execution_id is None:
        raise InvalidStateError(
            f"{type(workflow).__name__} id={workflow.id} ({workflow.state}) has no scheduled "
            "step to abandon"
        )
    claimed = unit.claim(ext, execution_id, now=clock.now(), due_by=executor.ANY_TIME)
    if not isinstance(claimed, tuple):
        raise InvalidStateError(f"execution {execution_id} could not be claimed ({claimed})")
    _sync(workflow)
    found: StepExecutionBase = ext.db.session.get(
        ext.StepExecution, execution_id, populate_existing=True
    )
    return found


def speedrun(workflow: W, *, max_steps: int = 100) -> W:
    """Run the workflow until it is finished, canceled or paused, or nothing is scheduled.

    A step that waits for a signal stops it there (it invents no signals): deliver one
    with :func:`deliver_signal` and speedrun again.

    :raises RuntimeError: after ``max_steps`` executions (a workflow that never ends).
    :return: the workflow, reloaded.
    """
    for _ in range(max_steps):
        if perform_next_step(workflow) is None:
            return workflow
    raise RuntimeError(
        f"speedrun ran max_steps={max_steps} executions and {type(workflow).__name__} "
        f"id={workflow.id} is still {workflow.state!r}; does a step reattempt forever? "
        "Pass a larger max_steps if the workflow is meant to be that long"
    )


def perform_step_inline(
    workflow: WorkflowBase, step_name: str | None = None
) -> StepExecutionBase | None:
    """Run the named step now (or, without a name, the next scheduled one).

    Other scheduled executions are left alone. A step with a scheduled execution runs
    that execution; otherwise a fresh execution is created for it, so the same step can
    run several times. Its successors are scheduled as usual afterwards.

    :raises ValueError: the workflow class has no such step.
    :raises InvalidStateError: the workflow is paused, finished or canceled.
    """
    if step_name is None:
        return perform_next_step(workflow)
    ext = _ext(workflow)
    graph = type(workflow).step_graph()
    if step_name not in graph:
        raise ValueError(
            f"Step '{step_name}' is not defined in {type(workflow).__name__}. "
            f"Available steps: {', '.join(graph.steps)}"
        )
    _sync(workflow)
    if workflow.state not in RUNNABLE_WORKFLOW_STATES:
        raise InvalidStateError(
            f"Cannot perform step {step_name!r} inline on a {workflow.state} workflow"
            + ("; resume it first" if workflow.state == "paused" else "")
        )
    # Through the write path like any change: its scheduled execution is made due now,
    # or a fresh one is created (no trigger: it runs right here).
    record = unit.change(ext, workflow.id, lambda snap: snap.transition.run_now(step_name))
    execution_id = record.id
    assert execution_id is not None
    try:
        executor.execute(
            ext, ext.get_state(), execution_id, ignore_schedule=True, raise_errors=True
        )
    finally:
        _sync(workflow)
    found: StepExecutionBase | None = ext.db.session.get(
        ext.StepExecution, execution_id, populate_existing=True
    )
    return found


def assert_step_executed(
    workflow: WorkflowBase, step_name: str, *, state: str = "completed"
) -> None:
    """Assert that some execution of ``step_name`` ended in ``state`` (default ``completed``)."""
    ext = _ext(workflow)
    graph = type(workflow).step_graph()
    if step_name not in graph:
        raise AssertionError(
            f"Step '{step_name}' is not defined in {type(workflow).__name__}. "
            f"Available steps: {', '.join(graph.steps)}"
        )
    e = ext.tables.executions
    with ext.engine().connect() as conn:
        states = [
            r[0]
            for r in conn.execute(
                sa.select(e.c.state).where(
                    e.c.workflow_id == workflow.id, e.c.step_name == step_name
                )
            )
        ]
    if str(state) not in states:
        raise AssertionError(
            f"expected step {step_name!r} of {type(workflow).__name__} id={workflow.id} to "
            f"have an execution in state {str(state)!r}; found {states or 'no executions'}"
        )


def assert_cursor(
    workflow: WorkflowBase, step_name: str, value: Any, *, item_index: int | None = None
) -> None:
    """Assert that resumable step ``step_name`` last checkpointed ``value``.

    The cursor its next execution starts from: the latest one stored on any of its
    executions (of map item ``item_index``, for a map step). ``None`` asserts that it
    has not checkpointed yet.
    """
    ext = _ext(workflow)
    graph = type(workflow).step_graph()
    name = type(workflow).__name__
    if step_name not in graph:
        raise AssertionError(
            f"Step '{step_name}' is not defined in {name}. Available steps: "
            f"{', '.join(graph.steps)}"
        )
    if not graph.steps[step_name].resumable:
        raise AssertionError(
            f"step {step_name!r} of {name} is not resumable (@step(resumable=True)): "
            "it has no cursor"
        )
    e = ext.tables.executions
    item = e.c.item_index.is_(None) if item_index is None else e.c.item_index == item_index
    query = (
        sa.select(e.c.cursor)
        .where(
            e.c.workflow_id == workflow.id,
            e.c.step_name == step_name,
            item,
            e.c.cursor.is_not(None),
        )
        .order_by(e.c.id.desc())
        .limit(1)
    )
    with ext.engine().connect() as conn:
        found = conn.execute(query).scalar()
    if found != value:
        of = f"step {step_name!r}" + (f" item {item_index}" if item_index is not None else "")
        raise AssertionError(
            f"expected the cursor of {of} of {name} id={workflow.id} to be {value!r}, but it "
            f"is {found!r}" + (" (no checkpoint yet)" if found is None else "")
        )


def assert_workflow_state(workflow: WorkflowBase, state: str) -> None:
    """Reload the workflow and assert its state."""
    _sync(workflow)
    if workflow.state != str(state):
        raise AssertionError(
            f"expected {type(workflow).__name__} id={workflow.id} to be {str(state)!r}, "
            f"but it is {workflow.state!r}"
        )


@contextmanager
def travel(delta: timedelta) -> Iterator[None]:
    """Move flask-geneva's clock forward by ``delta`` inside the block.

    Affects only the times flask-geneva reads and writes (scheduling, housekeeping).
    """
    clock.move(delta)
    try:
        yield
    finally:
        clock.move(-delta)


def deliver_signal(
    workflow: WorkflowBase,
    name: str,
    payload: Any = None,
    idempotency_key: str | None = None,
) -> Signal:
    """Deliver signal ``name`` to ``workflow`` as a webhook would, and reload it.

    Commits ``db.session`` first (see the module docstring). The step it wakes is
    scheduled due now: run it with :func:`perform_next_step` or :func:`speedrun`.

    :return: the stored signal (``duplicate`` tells whether it was stored before).
    """
    _sync(workflow)
    try:
        return workflow.signal(name, payload, idempotency_key=idempotency_key)
    finally:
        _sync(workflow)


def assert_waiting_for(workflow: WorkflowBase, name: str) -> None:
    """Assert that a step of ``workflow`` is waiting for signal ``name``."""
    ext = _ext(workflow)
    _sync(workflow)
    e = ext.tables.executions
    with ext.engine().connect() as conn:
        steps = list(
            conn.execute(
                sa.select(e.c.step_name).where(
                    e.c.workflow_id == workflow.id, e.c.state == StepState.WAITING
                )
            ).scalars()
        )
    graph = type(workflow).__geneva_definition__.graph
    waits = {s: graph.steps[s].wait_for for s in steps if s in graph.steps}
    if name not in waits.values():
        found = ", ".join(f"{s!r} for {w!r}" for s, w in waits.items()) or "no step is waiting"
        raise AssertionError(
            f"expected a step of {type(workflow).__name__} id={workflow.id} "
            f"({workflow.state}) to wait for signal {name!r}; {found}"
        )
