"""The one write path: lock a workflow, let the rules decide, persist, commit, then trigger.

Every change of a workflow's state goes through this module:

1. lock the workflow row and read it with its steps' latest executions, in one
   statement (:func:`~flask_geneva.store.snapshot`);
2. let the pure rules decide: the caller's ``decide(snapshot)`` calls
   :class:`~flask_geneva.transitions.Transition` or :mod:`~flask_geneva.commands`
   methods, which record changes and never touch the database;
3. persist the changeset (:func:`~flask_geneva.store.persist`);
4. commit;
5. only then send the Huey triggers.

:func:`change` runs all of it in a short transaction of its own (operator commands,
housekeeping, the executor's results when the body wrote nothing). :func:`change_in_session`
runs it inside ``db.session``'s transaction, so that what a step body wrote commits
with its outcome, or not at all; :func:`create` is the same path for a workflow that
does not exist yet. The claim (:func:`claim`) is the one change that reads no
snapshot: its rule, "a scheduled, due execution of a runnable workflow becomes in
progress", is the WHERE clause of two conditional UPDATEs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any
from typing import Generic
from typing import TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from . import clock
from . import store
from .errors import WorkflowNotFoundError
from .records import ExecutionRecord
from .scheduling import defer_until_commit
from .scheduling import job_priority
from .transaction import begin_sqlite_write
from .transaction import run_locked
from .transitions import Transition

if TYPE_CHECKING:
    from .definition import WorkflowDefinition
    from .extension import Geneva

T = TypeVar("T")


@dataclass
class Snapshot:
    """A locked workflow as the rules see it: its row, its class and the transition."""

    workflow: dict[str, Any]
    cls: type[Any] | None
    transition: Transition

    @property
    def definition(self) -> WorkflowDefinition | None:
        return self.cls.__geneva_definition__ if self.cls is not None else None


class Discard(Exception, Generic[T]):
    """Raised by ``decide`` to roll the transaction back and return ``value``.

    The executor raises it when its execution was recovered while the body ran: the
    outcome is not recorded, and neither are the body's writes.
    """

    def __init__(self, value: T) -> None:
        super().__init__(value)
        self.value = value


Decide = Callable[[Snapshot], T]


def change(ext: Geneva, workflow_id: int, decide: Decide[T], *, signals: bool = False) -> T:
    """Apply ``decide`` to workflow ``workflow_id`` in a short transaction of its own.

    The transaction is retried on deadlock, so ``decide`` may run more than once; it
    must only decide.

    :param signals: read the workflow's signals into the snapshot even if its class
        has no step that waits (delivery: a signal nobody waits for is still stored).
    :raises WorkflowNotFoundError: there is no such workflow.
    """
    tables = ext.tables

    def work(conn: Connection) -> tuple[T, list[Any]]:
        snap = _snapshot(ext, conn, workflow_id, signals=signals)
        value = decide(snap)
        return value, store.persist(conn, tables, workflow_id, snap.transition)

    try:
        value, triggers = run_locked(ext.engine(), work)
    except Discard as discarded:
        return discarded.value  # type: ignore[no-any-return]
    ext.get_state().send(triggers)
    return value


def change_in_session(
    ext: Geneva,
    session: Session,
    workflow_id: int,
    decide: Decide[T],
    *,
    commit: bool = True,
    signals: bool = False,
) -> T:
    """Apply ``decide`` inside ``session``'s transaction, with what it already holds.

    With ``commit`` the session is committed (its triggers are sent after that
    commit); otherwise the triggers wait for the caller's commit and are dropped on
    rollback. A failure rolls the session back and propagates: nothing of the
    transaction (the caller's writes included) is kept.

    :raises WorkflowNotFoundError: there is no such workflow.
    """
    try:
        conn = connection(ext, session)
        snap = _snapshot(ext, conn, workflow_id, signals=signals)
        value = decide(snap)
        triggers = store.persist(conn, ext.tables, workflow_id, snap.transition)
    except Discard as discarded:
        session.rollback()
        return discarded.value  # type: ignore[no-any-return]
    except BaseException:
        session.rollback()
        raise
    defer_until_commit(session, ext.get_state().send, triggers)
    if commit:
        session.commit()
    return value


def create(ext: Geneva, session: Session, workflow: Any, *, commit: bool) -> Transition:
    """Start a workflow whose row was just flushed in ``session``: schedule its roots.

    The new row is locked by its own INSERT, so no snapshot is read. Returns the
    transition (its ``state`` is the workflow's state).
    """
    cls = type(workflow)
    definition = cls.__geneva_definition__
    transition = Transition(
        definition.graph,
        workflow.state,
        [],
        workflow.created_at,
        priority=job_priority(definition, workflow.job_options),
    )
    transition.start()
    changes = dict(transition.workflow_changes)
    try:
        triggers = store.persist(connection(ext, session), ext.tables, workflow.id, transition)
    except BaseException:
        if commit:
            session.rollback()
        raise
    from .mapping import set_row_values

    set_row_values(workflow, changes)
    defer_until_commit(session, ext.get_state().send, triggers)
    if commit:
        session.commit()
    return transition


#: A claim that another worker won between the two UPDATEs.
TAKEN = "taken"


def claim(
    ext: Geneva, execution_id: int, *, now: datetime, due_by: datetime
) -> tuple[dict[str, Any], ExecutionRecord] | str | None:
    """Claim a scheduled execution due by ``due_by``, in one short transaction.

    :return: the workflow row and the claimed record; :data:`TAKEN`; or None when
        nothing could be claimed (see :func:`~flask_geneva.store.claim`).
    """
    tables = ext.tables
    try:
        return run_locked(
            ext.engine(), lambda conn: store.claim(conn, tables, execution_id, now, due_by)
        )
    except store.Taken:
        return TAKEN


def connection(ext: Geneva, session: Session) -> Connection:
    """The session's connection to the workflow tables, holding SQLite's write lock.

    On SQLite the session's transaction is started with ``BEGIN IMMEDIATE`` unless it
    already writes (a step body that wrote holds the write lock since its first
    write), so the snapshot read below is serialised with every other writer.
    """
    conn = session.connection(bind_arguments={"mapper": ext.Workflow})
    begin_sqlite_write(conn)
    return conn


def _snapshot(ext: Geneva, conn: Connection, workflow_id: int, *, signals: bool) -> Snapshot:
    # The rules compare against the database's clock: re-measure this machine's offset
    # to it if stale (a statement once a minute, on this transaction's connection).
    clock.sync(conn)
    found = store.snapshot(conn, ext.tables, workflow_id)
    if found is None:
        raise WorkflowNotFoundError(f"workflow {workflow_id} does not exist")
    row, records = found
    cls = ext.registry.get(row["type"])
    definition = cls.__geneva_definition__ if cls is not None else None
    if signals or (definition is not None and definition.waits):
        # After the workflow row's lock: every delivery to it holds the same lock.
        found_signals = store.signals(conn, ext.tables, workflow_id)
    else:
        found_signals = []
    maps = (
        store.map_progress(conn, ext.tables, workflow_id)
        if definition is not None and definition.graph.maps
        else None
    )
    transition = Transition(
        definition.graph if definition is not None else None,
        row["state"],
        records,
        clock.now(),
        priority=job_priority(definition, row["job_options"]),
        signals=found_signals,
        maps=maps,
    )
    return Snapshot(row, cls, transition)
