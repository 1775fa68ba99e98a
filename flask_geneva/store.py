"""SQL for the state machine: claim an execution, read a locked snapshot, write changes.

Every function here runs inside a transaction opened by :mod:`~flask_geneva.unit` and
takes the workflow row lock before touching its executions (lock order: workflow,
then execution, always). Here: the statements (:class:`Tables`, built once), the
claim, the snapshot and the other reads; writing a transition's changes is
:mod:`~flask_geneva.persist`'s (re-exported here as ``persist``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .models import ACTIONS_TABLE
from .models import SIGNALS_TABLE
from .models import is_mysql
from .persist import persist as persist  # writing a transition: its own module
from .records import ExecutionRecord
from .records import SignalRecord
from .states import RUNNABLE_WORKFLOW_STATES
from .states import Outcome
from .states import StepState
from .states import WorkflowState
from .transition_base import MapProgress

#: Prefix of the execution columns in statements that also return the workflow's.
_E = "e_"


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
        #: The signals table (built beside the other two, on the same metadata).
        self.signals = sg = workflows.metadata.tables[SIGNALS_TABLE]
        #: The operator actions (who did what, when and why), beside them too.
        self.actions = ac = workflows.metadata.tables[ACTIONS_TABLE]
        #: Every table, parents first (``create_all`` and ``drop_all``).
        self.all = [w, e, sg, ac]
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
            e.c.updated_at,
            e.c.heartbeat_at,
            e.c.item_index,
            e.c.item_count,
        )
        now: sa.BindParameter[Any] = sa.bindparam("p_now")
        wid: sa.BindParameter[Any] = sa.bindparam("p_wid")
        eid: sa.BindParameter[Any] = sa.bindparam("p_eid")
        #: The execution with its workflow row (no lock): the claim's read on MySQL,
        #: and the look at an execution that could not be claimed.
        self.read_execution = (
            sa.select(*[c.label(_E + c.name) for c in self.record_columns], *w.c)
            .join(w, w.c.id == e.c.workflow_id)
            .where(e.c.id == eid)
        )
        #: Claim, part 1: the workflow of a scheduled, due execution becomes
        #: ``performing`` (this takes its row lock first).
        due = sa.select(e.c.workflow_id).where(
            e.c.id == eid,
            e.c.state == StepState.SCHEDULED,
            e.c.scheduled_for <= sa.bindparam("p_due"),
        )
        claimed_values = dict(
            state=WorkflowState.PERFORMING,
            started_at=sa.func.coalesce(w.c.started_at, now),
            transitioned_at=sa.case(
                (w.c.state != WorkflowState.PERFORMING, now), else_=w.c.transitioned_at
            ),
            updated_at=now,
        )
        runnable = w.c.state.in_(RUNNABLE_WORKFLOW_STATES)
        self.claim_workflow = (
            sa.update(w).where(w.c.id == due.scalar_subquery(), runnable).values(claimed_values)
        )
        #: The same for MySQL/MariaDB, which read the workflow id first (no RETURNING).
        self.claim_workflow_by_id = (
            sa.update(w).where(w.c.id == wid, runnable).values(claimed_values)
        )
        #: Claim, part 2: the conditional flip that only one worker can win. started_at
        #: is the lease's first beat; an older beat (an execution released to be run
        #: again) is cleared, or it would make the new lease look expired.
        self.claim_execution = (
            sa.update(e)
            .where(e.c.id == eid, e.c.state == StepState.SCHEDULED)
            .values(state=StepState.IN_PROGRESS, started_at=now, updated_at=now, heartbeat_at=None)
        )
        #: The lease's beat: one statement for every running execution given.
        self.beat = (
            sa.update(e)
            .where(
                e.c.id.in_(sa.bindparam("p_ids", expanding=True)),
                e.c.state == StepState.IN_PROGRESS,
            )
            .values(heartbeat_at=now)
        )
        self.claim_workflow_returning = self.claim_workflow.returning(*w.c)
        self.claim_execution_returning = self.claim_execution.returning(
            *[c.label(_E + c.name) for c in self.record_columns]
        )
        # Rows a rerun superseded are history: the rules never read them.
        current = e.c.superseded_at.is_(None)
        latest_ids = (
            sa.select(sa.func.max(e.c.id))
            .where(e.c.workflow_id == wid, current)
            .group_by(e.c.step_name, e.c.item_index)
        )
        latest = latest_ids.scalar_subquery()
        # A map step's done items are counted (map_progress), not read: a map may have
        # thousands, and the rules need only those not done.
        done = done_clause(e)
        wanted = sa.and_(e.c.id.in_(latest), sa.or_(e.c.item_index.is_(None), sa.not_(done)))
        #: The workflow row with the latest execution of each step, in one statement.
        self._snapshot = (
            sa.select(*w.c, *[c.label(_E + c.name) for c in self.record_columns])
            .select_from(w.outerjoin(e, sa.and_(e.c.workflow_id == w.c.id, wanted)))
            .where(w.c.id == wid)
            .order_by(e.c.id)
        )
        #: PostgreSQL's snapshot: lock, then read in a second statement. In READ
        #: COMMITTED one statement would read the executions from the snapshot taken
        #: before it waited for the lock, and miss what the previous holder committed.
        self.lock_workflow = sa.select(w).where(w.c.id == wid).with_for_update()
        self.latest_records = (
            sa.select(*[c.label(_E + c.name) for c in self.record_columns])
            .where(e.c.workflow_id == wid, wanted)
            .order_by(e.c.id)
        )
        #: MySQL/MariaDB's, after the same lock: a locking read, its subquery included.
        #: In REPEATABLE READ a plain subquery reads the snapshot of the transaction's
        #: first read (a step body's), and would miss the executions other workers
        #: created since (the items a map released).
        locked_latest = latest_ids.with_for_update().scalar_subquery()
        self.latest_records_mysql = (
            sa.select(*[c.label(_E + c.name) for c in self.record_columns])
            .where(
                e.c.workflow_id == wid,
                e.c.id.in_(locked_latest),
                sa.or_(e.c.item_index.is_(None), sa.not_(done)),
            )
            .order_by(e.c.id)
            .with_for_update()
        )
        #: Per map step: how many items are done, and the highest item with a row.
        self.map_progress = (
            sa.select(
                e.c.step_name,
                sa.func.count(sa.distinct(sa.case((done, e.c.item_index)))),
                sa.func.max(e.c.item_index),
            )
            .where(e.c.workflow_id == wid, e.c.item_index.is_not(None), current)
            .group_by(e.c.step_name)
        )
        # PostgreSQL's claim in one statement: the workflow UPDATE runs first (the
        # execution UPDATE waits on its result), so the lock order holds.
        claimed_w = self.claim_workflow.returning(*w.c).cte("claimed_w")
        claimed_e = (
            self.claim_execution.where(sa.exists(sa.select(claimed_w.c.id)))
            .returning(*[c.label(_E + c.name) for c in self.record_columns])
            .cte("claimed_e")
        )
        self.claim_postgresql = sa.select(claimed_w, claimed_e).select_from(
            claimed_w.outerjoin(claimed_e, sa.true())
        )
        self.insert_execution = sa.insert(e)
        self.insert_executions = sa.insert(e).returning(e.c.id, sort_by_parameter_order=True)
        #: Updates whose SET clause comes from the parameters given at execution.
        self.update_execution = sa.update(e).where(e.c.id == sa.bindparam("p_id"))
        self.update_workflow = sa.update(w).where(w.c.id == sa.bindparam("p_id"))
        #: A workflow's signals, oldest first (read under its lock, after the snapshot).
        #: A locking read: in MySQL/MariaDB's REPEATABLE READ a plain one would read the
        #: snapshot of the caller's first read (``commit=False`` joins its transaction)
        #: and miss a signal delivered and consumed since.
        self.signals_of = (
            sa.select(sg).where(sg.c.workflow_id == wid).order_by(sg.c.id).with_for_update()
        )
        #: A rerun: every current row of its steps becomes history.
        self.supersede = (
            sa.update(e)
            .where(
                e.c.workflow_id == wid,
                e.c.step_name.in_(sa.bindparam("p_steps", expanding=True)),
                current,
            )
            .values(superseded_at=now)
        )
        self.insert_action = sa.insert(ac)
        self.insert_signal = sa.insert(sg)
        self.update_signal = sa.update(sg).where(sg.c.id == sa.bindparam("p_id"))
        self.recent_outcomes = (
            sa.select(e.c.outcome)
            .where(e.c.workflow_id == wid, e.c.step_name == sa.bindparam("p_step"), current)
            .order_by(e.c.id.desc())
            .limit(sa.bindparam("p_limit"))
        )


def signals(conn: Connection, tables: Tables, workflow_id: int) -> list[SignalRecord]:
    """The workflow's signals, oldest first (the caller holds the workflow's lock)."""
    return [
        SignalRecord(
            id=m["id"],
            name=m["name"],
            payload=m["payload"],
            idempotency_key=m["idempotency_key"],
            received_at=m["received_at"],
            consumed_step=m["consumed_step"],
            consumed_by_execution_id=m["consumed_by_execution_id"],
            consumed_at=m["consumed_at"],
        )
        for m in conn.execute(tables.signals_of, {"p_wid": workflow_id}).mappings()
    ]


def done_clause(executions: sa.Table) -> sa.ColumnElement[bool]:
    """An execution that makes its step (or item) done: completed with success, or skipped.

    The SQL twin of :attr:`~flask_geneva.records.ExecutionRecord.is_done`.
    """
    e = executions
    return sa.or_(
        e.c.state == StepState.SKIPPED,
        sa.and_(e.c.state == StepState.COMPLETED, e.c.outcome == Outcome.SUCCESS),
    )


def map_progress(conn: Connection, tables: Tables, workflow_id: int) -> dict[str, MapProgress]:
    """Each map step's items: how many are done, the highest index with a row.

    A locking read on MySQL/MariaDB: in REPEATABLE READ a plain one would read the
    snapshot of the transaction's first read (a body's), and miss the items other
    workers ended and released since.
    """
    statement = tables.map_progress
    if is_mysql(conn.dialect.name):
        statement = statement.with_for_update()
    return {
        name: MapProgress(done=int(done), highest=int(highest))
        for name, done, highest in conn.execute(statement, {"p_wid": workflow_id})
    }


def _record(m: Mapping[str, Any] | sa.RowMapping) -> ExecutionRecord:
    return ExecutionRecord(
        id=m["e_id"],
        step_name=m["e_step_name"],
        state=m["e_state"],
        outcome=m["e_outcome"],
        scheduled_for=m["e_scheduled_for"],
        attempt=m["e_attempt"],
        consecutive_reattempts=m["e_consecutive_reattempts"],
        huey_task_id=m["e_huey_task_id"],
        started_at=m["e_started_at"],
        updated_at=m["e_updated_at"],
        heartbeat_at=m["e_heartbeat_at"],
        item_index=m["e_item_index"],
        item_count=m["e_item_count"],
    )


def _workflow(m: Mapping[str, Any] | sa.RowMapping) -> dict[str, Any]:
    return {k: v for k, v in m.items() if not k.startswith(_E)}


def snapshot(
    conn: Connection, tables: Tables, workflow_id: int, *, lock: bool = True
) -> tuple[dict[str, Any], list[ExecutionRecord]] | None:
    """Lock the workflow row and read it with its steps' latest executions, oldest first.

    One statement on SQLite (the transaction's ``BEGIN IMMEDIATE`` is the lock); two on
    PostgreSQL (see :attr:`Tables.lock_workflow`) and on MySQL/MariaDB, whose second is
    a locking read down to its subquery (see :attr:`Tables.latest_records_mysql`).
    ``lock=False`` reads the same without a lock (the admin's buttons).
    """
    params = {"p_wid": workflow_id}
    mysql = is_mysql(conn.dialect.name)
    if lock and (mysql or conn.dialect.name == "postgresql"):
        locked = conn.execute(tables.lock_workflow, params).first()
        if locked is None:
            return None
        statement = tables.latest_records_mysql if mysql else tables.latest_records
        found = conn.execute(statement, params)
        return dict(locked._mapping), [_record(row._mapping) for row in found]
    rows = [row._mapping for row in conn.execute(tables._snapshot, params)]
    if not rows:
        return None
    records = [_record(m) for m in rows if m["e_id"] is not None]
    return _workflow(rows[0]), records


class Taken(Exception):
    """Raised inside the claim transaction to roll it back: another worker claimed first."""


def claim(
    conn: Connection, tables: Tables, execution_id: int, now: Any, due_by: Any
) -> tuple[dict[str, Any], ExecutionRecord] | None:
    """Flip a scheduled, due execution to ``in_progress`` and its workflow to ``performing``.

    Updating the workflow row first takes its lock (workflow, then execution). The
    execution's UPDATE matches only while it is still scheduled, so of several
    workers holding the same trigger exactly one wins, on every database. PostgreSQL
    and SQLite return both rows from the UPDATEs (two statements in all); MySQL and
    MariaDB have no ``UPDATE ... RETURNING`` and read them first.

    :return: the workflow row and the claimed execution; None when nothing was claimed
        (not found, not scheduled, not due, or the workflow is not runnable; nothing
        was written).
    :raises Taken: another worker won between the two UPDATEs (roll back).
    """
    params = {"p_eid": execution_id, "p_now": now, "p_due": due_by}
    if is_mysql(conn.dialect.name):
        row = conn.execute(tables.read_execution, params).first()
        if row is None:
            return None
        m = row._mapping
        if m["e_state"] != StepState.SCHEDULED or m["e_scheduled_for"] > due_by:
            return None
        moved = conn.execute(tables.claim_workflow_by_id, dict(params, p_wid=m["id"]))
        if moved.rowcount != 1:
            return None
        if conn.execute(tables.claim_execution, params).rowcount != 1:
            raise Taken()
        workflow = _workflow(m)
        workflow.update(state=WorkflowState.PERFORMING, started_at=workflow["started_at"] or now)
        record = _record(m)
        record.state, record.started_at = StepState.IN_PROGRESS, now
        record.heartbeat_at = None
        return workflow, record
    if conn.dialect.name == "postgresql":
        row = conn.execute(tables.claim_postgresql, params).first()
        if row is None:
            return None
        if row._mapping["e_id"] is None:
            raise Taken()
        return _workflow(row._mapping), _record(row._mapping)
    workflow_row = conn.execute(tables.claim_workflow_returning, params).first()
    if workflow_row is None:
        return None
    execution_row = conn.execute(tables.claim_execution_returning, params).first()
    if execution_row is None:
        raise Taken()
    return dict(workflow_row._mapping), _record(execution_row._mapping)


def read_execution(
    conn: Connection, tables: Tables, execution_id: int
) -> tuple[dict[str, Any], ExecutionRecord] | None:
    """Read an execution and its workflow row without a lock."""
    row = conn.execute(tables.read_execution, {"p_eid": execution_id}).first()
    return None if row is None else (_workflow(row._mapping), _record(row._mapping))


def beat(conn: Connection, tables: Tables, execution_ids: list[int], now: Any) -> int:
    """Refresh the lease of the executions still in progress among ``execution_ids``.

    Not a state change, so not the write path's: it locks execution rows only, never a
    workflow row. The caller passes at most one execution per workflow per statement,
    so a beat never waits on one row of a workflow while holding another (the lock
    cycle a finalize or an operator locking all of that workflow's executions would
    close). Returns how many rows were refreshed.
    """
    return conn.execute(tables.beat, {"p_ids": execution_ids, "p_now": now}).rowcount


def recovery_streak(
    conn: Connection, tables: Tables, workflow_id: int, step_name: str, limit: int
) -> int:
    """How many of the step's executions just before its latest ended ``recovered``."""
    outcomes = conn.execute(
        tables.recent_outcomes, {"p_wid": workflow_id, "p_step": step_name, "p_limit": limit + 2}
    ).scalars()
    streak = 0
    for outcome in list(outcomes)[1:]:
        if outcome != "recovered":
            break
        streak += 1
    return streak
