"""Writing a transition: the one place the rules' decisions reach the database.

:func:`persist` writes what a :class:`~flask_geneva.transitions.Transition` decided
(updated and new executions, superseded rows, signals, operator actions, the
workflow row) in the caller's transaction, under the workflow lock the snapshot took
(:mod:`~flask_geneva.store`), and returns the triggers to send after commit. Called
through ``store.persist`` by :mod:`~flask_geneva.unit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from .records import ExecutionRecord
from .states import StepState

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .scheduling import Trigger
    from .store import Tables
    from .transitions import Transition


def persist(
    conn: Connection, tables: Tables, workflow_id: int, transition: Transition
) -> list[Trigger]:
    """Write the transition's changes and return the triggers to send after commit."""
    transition.assign_task_ids()
    now = transition.now
    new = [record for record in transition.records if record.id is None]
    for record in transition.retired + transition.records:
        if record.id is not None and record.changes:
            record.changes.setdefault("updated_at", now)
            conn.execute(tables.update_execution, {"p_id": record.id, **record.changes})
            record.changes = {}
    if transition.superseded:  # before the inserts: the new rows are the current ones
        steps = sorted(transition.superseded)
        conn.execute(tables.supersede, {"p_wid": workflow_id, "p_steps": steps, "p_now": now})
        transition.superseded = set()
    if new:
        rows = [_insert_values(workflow_id, record, now) for record in new]
        if len(rows) == 1:
            result = conn.execute(tables.insert_execution, rows[0])
            new[0].id = int(result.inserted_primary_key[0])  # type: ignore[index]
        else:  # one statement for a fan-out (insertmanyvalues)
            ids = conn.execute(tables.insert_executions, rows).scalars().all()
            for record, new_id in zip(new, ids, strict=True):
                record.id = int(new_id)
    if transition.signals:
        _persist_signals(conn, tables, workflow_id, transition)
    if transition.actions:
        rows = [dict(action, workflow_id=workflow_id) for action in transition.actions]
        conn.execute(tables.insert_action, rows)
        transition.actions = []
    if transition.workflow_changes:
        values = dict(transition.workflow_changes, updated_at=now, p_id=workflow_id)
        conn.execute(tables.update_workflow, values)
        transition.workflow_changes = {}
    return transition.triggers()


def _persist_signals(
    conn: Connection, tables: Tables, workflow_id: int, transition: Transition
) -> None:
    """Insert the signals received and mark those consumed (after the executions: ids)."""
    for signal in transition.signals:
        consumer = signal.changes.pop("consumed_by", None)
        if consumer is not None:
            signal.consumed_by_execution_id = consumer.id
            signal.changes["consumed_by_execution_id"] = consumer.id
        if signal.id is None:
            values = {
                "workflow_id": workflow_id,
                "name": signal.name,
                "payload": signal.payload,
                "idempotency_key": signal.idempotency_key,
                "received_at": signal.received_at,
                "consumed_step": signal.consumed_step,
                "consumed_by_execution_id": signal.consumed_by_execution_id,
                "consumed_at": signal.consumed_at,
            }
            result = conn.execute(tables.insert_signal, values)
            signal.id = int(result.inserted_primary_key[0])  # type: ignore[index]
        elif signal.changes:
            conn.execute(tables.update_signal, {"p_id": signal.id, **signal.changes})
        signal.changes = {}


def _insert_values(workflow_id: int, record: ExecutionRecord, now: Any) -> dict[str, Any]:
    # Every row gets the same keys (one INSERT for a fan-out); what the rules decided
    # for a new record (an error, an output, its end) is in its changes.
    values = {
        "workflow_id": workflow_id,
        "step_name": record.step_name,
        "state": record.state,
        "outcome": record.outcome,
        "scheduled_for": record.scheduled_for,
        "attempt": record.attempt,
        "consecutive_reattempts": record.consecutive_reattempts,
        "huey_task_id": record.huey_task_id,
        "item_index": record.item_index,
        "item_count": record.item_count,
        "continues_id": record.continues_id,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "completed_at": None,
        "failed_at": None,
        "canceled_at": None,
        "skipped_at": None,
        "error_class": None,
        "error_message": None,
        "error_traceback": None,
        "output": None,
    }
    if record.state != StepState.SCHEDULED:
        values.update(finished_at=now, **{f"{record.state}_at": now})
    values.update((k, v) for k, v in record.changes.items() if k in values)
    record.changes = {}
    return values
