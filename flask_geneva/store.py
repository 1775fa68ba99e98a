"""SQL for the state machine: read a workflow under its row lock, write a transition.

Every function here runs inside :func:`~flask_geneva.transaction.run_locked` and
takes the workflow row lock before touching its executions (lock order: workflow,
then execution, always).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .scheduling import Trigger
from .states import RUNNABLE_WORKFLOW_STATES
from .states import StepState
from .states import WorkflowState
from .transitions import ExecutionRecord
from .transitions import Transition


class Tables:
    """The two Core tables and the hot path's statements, built once.

    The executor runs these for every step, so they are constructed here once with
    bind parameters (named ``p_*`` so they never clash with column names): building a
    statement and computing its cache key on every call cost more CPU than the rest
    of a step's Python code.
    """

    def __init__(self, workflows: sa.Table, executions: sa.Table) -> None:
        self.workflows = w = workflows
        self.executions = e = executions
        self.record_columns = (
            e.c.id,
            e.c.step_name,
            e.c.state,
            e.c.outcome,
            e.c.scheduled_for,
            e.c.attempt,
            e.c.consecutive_reattempts,
            e.c.huey_task_id,
            e.c.started_at,
        )
        now: sa.BindParameter[Any] = sa.bindparam("p_now")
        #: The execution with its workflow row, read before the claim (no lock).
        self.claim_read = (
            sa.select(
                e.c.id.label("e_id"),
                e.c.step_name.label("e_step_name"),
                e.c.state.label("e_state"),
                e.c.scheduled_for.label("e_scheduled_for"),
                e.c.consecutive_reattempts.label("e_consecutive_reattempts"),
                *w.c,
            )
            .join(w, w.c.id == e.c.workflow_id)
            .where(e.c.id == sa.bindparam("p_eid"))
        )
        #: Claim, part 1: the workflow becomes ``performing`` (this takes its row lock).
        self.claim_workflow = (
            sa.update(w)
            .where(w.c.id == sa.bindparam("p_wid"), w.c.state.in_(RUNNABLE_WORKFLOW_STATES))
            .values(
                state=WorkflowState.PERFORMING,
                started_at=sa.func.coalesce(w.c.started_at, now),
                transitioned_at=sa.case(
                    (w.c.state != WorkflowState.PERFORMING, now), else_=w.c.transitioned_at
                ),
                updated_at=now,
            )
        )
        #: Claim, part 2: the conditional flip that only one worker can win.
        self.claim_execution = (
            sa.update(e)
            .where(e.c.id == sa.bindparam("p_eid"), e.c.state == StepState.SCHEDULED)
            .values(state=StepState.IN_PROGRESS, started_at=now, updated_at=now)
        )
        self.lock_workflow = sa.select(w).where(w.c.id == sa.bindparam("p_wid")).with_for_update()
        self.load_records = (
            sa.select(*self.record_columns)
            .where(e.c.workflow_id == sa.bindparam("p_wid"))
            .order_by(e.c.id)
        )
        self.insert_execution = sa.insert(e)
        #: Updates whose SET clause comes from the parameters given at execution.
        self.update_execution = sa.update(e).where(e.c.id == sa.bindparam("p_id"))
        self.update_workflow = sa.update(w).where(w.c.id == sa.bindparam("p_id"))


def lock_workflow(conn: Connection, tables: Tables, workflow_id: int) -> Mapping[str, Any] | None:
    """Lock the workflow row (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds
    the database write lock) and return it, or None if it is gone."""
    row = conn.execute(tables.lock_workflow, {"p_wid": workflow_id}).first()
    return None if row is None else dict(row._mapping)


def load_records(conn: Connection, tables: Tables, workflow_id: int) -> list[ExecutionRecord]:
    """Read every execution of a locked workflow, oldest first."""
    rows = conn.execute(tables.load_records, {"p_wid": workflow_id})
    return [ExecutionRecord(*row) for row in rows]


def claim(conn: Connection, tables: Tables, workflow_id: int, execution_id: int, now: Any) -> str:
    """Flip a scheduled execution to ``in_progress`` and its workflow to ``performing``.

    Updating the workflow row first takes its lock (workflow, then execution). The
    execution's UPDATE matches only while it is still scheduled, so of several
    workers holding the same trigger exactly one wins, on every database.

    :return: ``claimed``; ``not_runnable`` (the workflow was paused or ended, nothing
        written); or ``taken`` (another worker won: the caller must roll back).
    """
    moved = conn.execute(tables.claim_workflow, {"p_wid": workflow_id, "p_now": now})
    if moved.rowcount != 1:
        return "not_runnable"
    claimed = conn.execute(tables.claim_execution, {"p_eid": execution_id, "p_now": now})
    return "claimed" if claimed.rowcount == 1 else "taken"


def persist(
    conn: Connection, tables: Tables, workflow_id: int, transition: Transition
) -> list[Trigger]:
    """Write the transition's changes and return the triggers to send after commit."""
    transition.assign_task_ids()
    now = transition.now
    for record in transition.records:
        if record.id is None:
            values = {
                "workflow_id": workflow_id,
                "step_name": record.step_name,
                "state": record.state,
                "outcome": record.outcome,
                "scheduled_for": record.scheduled_for,
                "attempt": record.attempt,
                "consecutive_reattempts": record.consecutive_reattempts,
                "huey_task_id": record.huey_task_id,
                "created_at": now,
                "updated_at": now,
            }
            if record.state != "scheduled":
                values.update(finished_at=now, **{f"{record.state}_at": now})
            result = conn.execute(tables.insert_execution, values)
            record.id = int(result.inserted_primary_key[0])  # type: ignore[index]
        elif record.changes:
            record.changes.setdefault("updated_at", now)
            conn.execute(tables.update_execution, {"p_id": record.id, **record.changes})
            record.changes = {}
    if transition.workflow_changes:
        values = dict(transition.workflow_changes, updated_at=now, p_id=workflow_id)
        conn.execute(tables.update_workflow, values)
        transition.workflow_changes = {}
    return transition.triggers()
