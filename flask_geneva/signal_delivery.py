"""Deliver a signal to a workflow: check it, store it, wake the step that waits for it.

``wf.signal()`` and ``Cls.signal_for()`` call :func:`deliver`. The signal is one change
through the write path (:mod:`~flask_geneva.unit`), in ``db.session``'s transaction:
under the workflow row lock the rules (:meth:`~flask_geneva.transitions.Transition.receive`)
look for the same (name, idempotency key) stored before, store the signal, and make the
oldest waiting execution that accepts it due; its trigger is sent after the commit
(the caller's commit with ``commit=False``), never after a rollback.

A signal an operator sends (``actor=`` / ``reason=``, the admin's form, ``flask geneva
signal``) is also an operator action: the rules note it with the signal, and the write
path stores both in the same transaction. A duplicate (stored before), a refused
signal, or one application code sends without an actor records none.
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
from .operations import check_audit
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
    actor: str | None = None,
    reason: str | None = None,
    operator: bool = False,
) -> Signal:
    """Store signal ``name`` for workflow ``workflow_id``; wake the step waiting for it.

    :param actor: who sends it (an operator); recorded with ``reason`` as an operator
        action ``signal``, in the signal's transaction.
    :param operator: record the action even without an actor or a reason (the admin
        and the CLI: an operator sends it, whether or not they are named).
    :raises SignalError: the name, key or payload cannot be stored (checked before
        anything is written).
    :raises ValueError: ``actor`` or ``reason`` is not a string of acceptable length
        (as for every operator call; checked before anything is written).
    :raises InvalidStateError: the workflow is finished or canceled (nothing is
        written; the caller's transaction is left as it was).
    :raises WorkflowNotFoundError: there is no such workflow.
    """
    check(ext, name, payload, idempotency_key)
    audited = operator or actor is not None or reason is not None
    actor, reason = check_audit(actor, reason)
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
        signal, woken = transition.receive(name, payload, idempotency_key)
        if audited:
            detail: dict[str, Any] = {"signal": name}
            if idempotency_key is not None:
                detail["idempotency_key"] = idempotency_key
            step = woken.step_name if woken is not None else None
            transition.note("signal", step=step, actor=actor, reason=reason, detail=detail)
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
    by = ""
    if audited:
        by = f" from {actor or 'an operator'}{f': {reason}' if reason else ''}"
    if duplicate:
        log.info("signal %r (key %r) was delivered before; ignored", name, idempotency_key)
    elif result.consumed_step is not None:
        log.info("signal %r received%s; step %r woken", name, by, result.consumed_step)
    else:
        log.info("signal %r received%s; pending (no step waits for it now)", name, by)
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
