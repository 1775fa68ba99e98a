"""Huey triggers: what to send, and sending them only after the transaction commits.

A trigger is (execution id, when, Huey task id). Triggers are decided inside a
transaction but sent only once it has committed: a worker must never receive the id
of a row it cannot see yet, and a rolled-back transaction must never leave a trigger
behind. The executor and the operations send theirs right after their own commit;
``Workflow.create(commit=False)`` joins the caller's ``db.session`` transaction, so its
triggers wait in ``session.info`` for that session's ``after_commit`` event and are
dropped on rollback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from .definition import WorkflowDefinition

logger = logging.getLogger("flask_geneva")

_PENDING_KEY = "flask_geneva.pending_triggers"


@dataclass(frozen=True)
class Trigger:
    """A Huey message to send for one execution."""

    execution_id: int
    #: When the execution is due (naive UTC, flask-geneva's clock); None = now.
    eta: datetime | None
    #: The Huey task id, chosen before the row is written so no second write is needed.
    task_id: str
    priority: int | None = None


def job_priority(definition: WorkflowDefinition | None, own: Mapping[str, Any] | None) -> Any:
    """The Huey priority of a workflow's step tasks: its own ``step_job_options`` first.

    :param own: the options stored with the workflow (``create(step_job_options=)``).
    """
    if own and own.get("priority") is not None:
        return own["priority"]
    return definition.job_options.get("priority") if definition is not None else None


def new_task_id() -> str:
    """Return a fresh Huey task id."""
    return uuid.uuid4().hex


Sender = Callable[[Iterable[Trigger]], None]


def defer_until_commit(session: Session, sender: Sender, triggers: Iterable[Trigger]) -> None:
    """Send ``triggers`` through ``sender`` when ``session``'s transaction commits."""
    pending: list[tuple[Sender, list[Trigger]]] = session.info.setdefault(_PENDING_KEY, [])
    pending.append((sender, list(triggers)))


def install_session_hooks(session_target: Any) -> None:
    """Listen on a session (or sessionmaker / scoped_session) for commit and rollback."""
    if not sa.event.contains(session_target, "after_commit", _after_commit):
        sa.event.listen(session_target, "after_commit", _after_commit)
        sa.event.listen(session_target, "after_soft_rollback", _after_soft_rollback)


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if not pending:
        return
    for sender, triggers in pending:
        try:
            sender(triggers)
        except Exception:
            # The rows are committed; housekeeping re-triggers overdue executions, so a
            # queue outage delays work but loses nothing.
            logger.exception("could not send %d trigger(s) after commit", len(triggers))


def _after_soft_rollback(session: Session, previous_transaction: Any) -> None:
    # Only the outermost transaction's rollback discards; a savepoint's rollback keeps
    # them (a trigger whose row vanished is a harmless no-op for the worker).
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
