"""Deliver a signal to a workflow: check it, store it, wake the step that waits for it.

``wf.signal()`` and ``Cls.signal_for()`` call :func:`deliver`. The signal is one change
through the write path (:mod:`~flask_geneva.unit`), in ``db.session``'s transaction:
under the workflow row lock the rules (:meth:`~flask_geneva.transitions.Transition.receive`)
look for the same (name, idempotency key) stored before, store the signal, and make the
oldest waiting execution that accepts it due; its trigger is sent after the commit
(the caller's commit with ``commit=False``), never after a rollback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import signals
from . import unit
from .errors import InvalidStateError
from .errors import SignalError
from .logging import tagged
from .records import Signal
from .records import SignalRecord
from .records import json_size
from .states import TERMINAL_WORKFLOW_STATES

if TYPE_CHECKING:
    from .extension import Geneva

#: The longest signal name and idempotency key (their columns' length).
MAX_NAME_LENGTH = 191


def deliver(
    ext: Geneva,
    cls: type[Any],
    workflow_id: int,
    name: str,
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    commit: bool = True,
) -> Signal:
    """Store signal ``name`` for workflow ``workflow_id``; wake the step waiting for it.

    :raises SignalError: the name, key or payload cannot be stored (checked before
        anything is written).
    :raises InvalidStateError: the workflow is finished or canceled (nothing is
        written; the caller's transaction is left as it was).
    :raises WorkflowNotFoundError: there is no such workflow.
    """
    check(ext, name, payload, idempotency_key)
    session = ext.db.session

    def receive(snap: unit.Snapshot) -> tuple[SignalRecord | str, bool]:
        transition = snap.transition
        for stored in transition.signals:
            if (
                idempotency_key is not None
                and stored.name == name
                and stored.idempotency_key == idempotency_key
            ):
                return stored, True
        if transition.state in TERMINAL_WORKFLOW_STATES:
            # Refused without raising here: raising would roll back the caller's
            # transaction, and its own rows with it.
            return str(transition.state), False
        signal, _woken = transition.receive(name, payload, idempotency_key)
        return signal, False  # its id is filled in when it is persisted

    found, duplicate = unit.change_in_session(
        ext, session, workflow_id, receive, commit=commit, signals=True
    )
    if isinstance(found, str):
        raise InvalidStateError(
            f"Cannot signal {name!r} to a {found} workflow (id={workflow_id}): it will "
            "never run another step"
        )
    result = found.public(workflow_id, duplicate=duplicate)
    log = tagged(cls.__name__, workflow_id, None, None)
    if duplicate:
        log.info("signal %r (key %r) was delivered before; ignored", name, idempotency_key)
    elif result.consumed_step is not None:
        log.info("signal %r received; step %r woken", name, result.consumed_step)
    else:
        log.info("signal %r received; pending (no step waits for it now)", name)
    signals.send(
        signals.signal_received, cls, log, workflow_id=workflow_id, name=name, duplicate=duplicate
    )
    return result


def check(ext: Geneva, name: Any, payload: Any, idempotency_key: Any) -> None:
    """Raise :class:`SignalError` for a name, key or payload a signal cannot hold."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise SignalError(
            f"a signal name must be a non-empty string of at most {MAX_NAME_LENGTH} "
            f"characters, got {name!r}"
        )
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not idempotency_key
        or len(idempotency_key) > MAX_NAME_LENGTH
    ):
        raise SignalError(
            "idempotency_key must be None or a non-empty string of at most "
            f"{MAX_NAME_LENGTH} characters, got {idempotency_key!r}"
        )
    limit = ext.get_state().config.max_signal_payload
    try:
        size, nul = json_size(payload)
    except ValueError as error:
        raise SignalError(
            f"the payload of signal {name!r} is not JSON-serialisable ({error}); give a "
            f"dict, list, str, number, bool or None (at most {limit} bytes as JSON, "
            "GENEVA_MAX_SIGNAL_PAYLOAD)"
        ) from None
    if size > limit:
        raise SignalError(
            f"the payload of signal {name!r} is {size} bytes as JSON, over the limit of "
            f"{limit} bytes (GENEVA_MAX_SIGNAL_PAYLOAD); store the data in your own table "
            "and send its id"
        )
    if nul and ext.engine().dialect.name == "postgresql":
        raise SignalError(
            f"the payload of signal {name!r} holds a NUL character, which PostgreSQL's "
            "JSON cannot store"
        )


def ongoing_for(ext: Geneva, cls: type[Any], hero: Any) -> int:
    """The id of the ongoing workflow of ``cls`` for ``hero``.

    :raises InvalidStateError: there is none, or several (``allow_multiple``).
    """
    from .hero import reference

    hero_type, hero_id = reference(hero)
    w = ext.tables.workflows
    ids = (
        ext.db.session.execute(
            sa.select(w.c.id)
            .where(
                w.c.type == cls.__geneva_identity__,
                w.c.hero_type == hero_type,
                w.c.hero_id == hero_id,
                w.c.state.not_in(TERMINAL_WORKFLOW_STATES),
            )
            .order_by(w.c.id)
            .limit(2)
        )
        .scalars()
        .all()
    )
    if not ids:
        raise InvalidStateError(
            f"no ongoing {cls.__name__} for {hero_type}:{hero_id}; nothing to signal"
        )
    if len(ids) > 1:
        raise InvalidStateError(
            f"several ongoing {cls.__name__} for {hero_type}:{hero_id} (allow_multiple); "
            "signal one of them with wf.signal()"
        )
    return int(ids[0])
