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
from .transitions import ExecutionRecord
from .transitions import Transition


class Tables:
    """The two Core tables, with the column lists the hot path selects."""

    def __init__(self, workflows: sa.Table, executions: sa.Table) -> None:
        self.workflows = workflows
        self.executions = executions
        e = executions.c
        self.record_columns = (
            e.id,
            e.step_name,
            e.state,
            e.outcome,
            e.scheduled_for,
            e.attempt,
            e.consecutive_reattempts,
            e.huey_task_id,
            e.started_at,
        )


def lock_workflow(conn: Connection, tables: Tables, workflow_id: int) -> Mapping[str, Any] | None:
    """Lock the workflow row (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds
    the database write lock) and return it, or None if it is gone."""
    w = tables.workflows
    row = conn.execute(sa.select(w).where(w.c.id == workflow_id).with_for_update()).first()
    return None if row is None else dict(row._mapping)


def load_records(conn: Connection, tables: Tables, workflow_id: int) -> list[ExecutionRecord]:
    """Read every execution of a locked workflow, oldest first."""
    e = tables.executions
    rows = conn.execute(
        sa.select(*tables.record_columns).where(e.c.workflow_id == workflow_id).order_by(e.c.id)
    )
    return [ExecutionRecord(**row._mapping) for row in rows]


def persist(
    conn: Connection, tables: Tables, workflow_id: int, transition: Transition
) -> list[Trigger]:
    """Write the transition's changes and return the triggers to send after commit."""
    e = tables.executions
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
            result = conn.execute(sa.insert(e).values(values))
            record.id = int(result.inserted_primary_key[0])  # type: ignore[index]
        elif record.changes:
            record.changes.setdefault("updated_at", now)
            conn.execute(sa.update(e).where(e.c.id == record.id).values(record.changes))
            record.changes = {}
    if transition.workflow_changes:
        w = tables.workflows
        values = dict(transition.workflow_changes, updated_at=now)
        conn.execute(sa.update(w).where(w.c.id == workflow_id).values(values))
        transition.workflow_changes = {}
    return transition.triggers()
