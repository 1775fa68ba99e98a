"""The Workflow base behaviour: class definition, creation, hero, and flow control.

``Geneva(db)`` builds ``geneva.Workflow`` from :class:`WorkflowBase` and ``db.Model``
(see :func:`build_models`); application classes subclass it, one class per workflow,
all stored in one table (single-table inheritance, ``type`` as discriminator).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import Self

import sqlalchemy as sa

from . import clock
from . import definition
from . import otel
from . import unit
from .controls import Controls
from .errors import DefinitionError
from .errors import GenevaError
from .errors import InvalidStateError
from .errors import WorkflowExistsError
from .flow import FlowSignal
from .hero import reference
from .logging import tagged
from .models import BASE_IDENTITY
from .outputs import StepData
from .resumable import Resumable
from .states import TERMINAL_WORKFLOW_STATES
from .states import WorkflowState

if TYPE_CHECKING:
    from .extension import Geneva
    from .graph import StepGraph
    from .records import Signal


class WorkflowBase(StepData, Resumable, Controls):
    """Behaviour shared by every workflow class (mixed into ``geneva.Workflow``).

    Class attributes an application may set:

    ``__geneva_type__``
        the identity stored in the ``type`` column (default: the class name); pin it so
        renaming the class does not orphan its rows.
    ``cancel_if``
        a condition or a list of them (callables taking the workflow, or method
        names), evaluated before every step; any true cancels the workflow.
        Accumulates down the inheritance chain.
    ``on_exception``
        an :class:`~flask_geneva.ExceptionPolicy` (or action name, or handler), or a
        list of them: those with ``exceptions=`` are specific, the one without is the
        blanket policy. A subclass's entries are consulted before its parent's.
    ``may_proceed_without_hero``
        ``True`` lets steps run after the hero row was deleted (``self.hero`` is None).
    ``step_job_options``
        Huey options for this class's step tasks, e.g. ``{"priority": 10}``.
    """

    _geneva: ClassVar[Geneva]
    __geneva_definition__: ClassVar[definition.WorkflowDefinition]
    __geneva_identity__: ClassVar[str]

    # Set by the executor on the instance it runs a step with; None outside a step.
    _geneva_context: Any = None
    _geneva_step: str | None = None
    #: The flow-control signal the running body raised last: honoured at finalize even
    #: when the body caught it (a bare ``except:``) and went on.
    _geneva_flow: FlowSignal | None = None
    #: Inside a step that waits (``@step(wait_for=...)``): the signal it consumed, a
    #: read-only :class:`~flask_geneva.records.Signal` (``.name``, ``.payload``,
    #: ``.idempotency_key``, ``.received_at``); None after an ``on_timeout="run"``
    #: timeout, and in steps that do not wait.
    received_signal: Signal | None = None

    # Mapped columns (declared on the mapped class; listed here for type checkers).
    id: Any
    type: Any
    hero_type: Any
    hero_id: Any
    state: Any
    allow_multiple: Any
    created_at: Any
    updated_at: Any
    started_at: Any
    transitioned_at: Any
    fingerprint: Any
    job_options: Any
    traceparent: Any
    executions: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.__dict__.get("_geneva_base"):
            cls.__geneva_identity__ = BASE_IDENTITY
            cls.__geneva_definition__ = definition.build(cls, None)
        else:
            parent = getattr(cls, "__geneva_definition__", None)
            cls.__geneva_definition__ = definition.build(cls, parent)
            if not cls.__dict__.get("__abstract__"):
                identity = cls.__dict__.get("__geneva_type__") or cls.__name__
                if not isinstance(identity, str):
                    raise DefinitionError(f"{cls.__name__}: __geneva_type__ must be a string")
                cls.__geneva_identity__ = identity
                cls._geneva.register(cls, identity)
                if "__mapper_args__" not in cls.__dict__:
                    cls.__mapper_args__ = {"polymorphic_identity": identity}  # type: ignore[attr-defined]
        super().__init_subclass__(**kwargs)

    # -- definition ----------------------------------------------------------------------

    @classmethod
    def step_graph(cls) -> StepGraph:
        """Return this class's step graph (its DAG)."""
        return cls.__geneva_definition__.graph

    @classmethod
    def removed_steps_in_flight(cls) -> dict[str, int]:
        """Return ``{step name: count}`` of this class's ``removed_steps`` still in flight.

        Counts the scheduled, waiting and in-progress executions of those steps in the
        class's ongoing workflows (a step with none is left out): once it is ``{}``,
        the names can leave ``removed_steps``.
        """
        from .census import census

        found = census(cls._geneva, cls.__geneva_identity__).get(cls.__geneva_identity__)
        if found is None:
            return {}
        return {u.step: u.total for u in found.undefined_steps if u.skipped_by == "removed_steps"}

    # -- creation ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        hero: Any = None,
        *,
        allow_multiple: bool = False,
        commit: bool = True,
        step_job_options: dict[str, Any] | None = None,
    ) -> Self:
        """Persist a new workflow for ``hero`` and schedule its first step(s).

        The workflow and its first executions are added to ``db.session``. With
        ``commit=True`` (default) the session is committed; with ``commit=False`` the
        workflow joins the caller's transaction and its Huey triggers are sent when the
        caller commits (never if it rolls back). The OpenTelemetry span current here (a
        request's), if any, is recorded as the row's ``traceparent``: the step spans of
        :mod:`flask_geneva.otel` link to it.

        :param hero: a persisted mapped instance, or None.
        :param allow_multiple: allow another ongoing workflow of this class for the hero.
        :param step_job_options: job options for this workflow's steps, over the class's
            ``step_job_options`` (``{"priority": 10}``: this one order jumps the queue).
        :raises WorkflowExistsError: an ongoing workflow of this class has this hero.
        :raises ValueError: ``step_job_options`` is not a dict of known options.
        """
        ext = cls._geneva
        if cls.__dict__.get("_geneva_base") or cls.__dict__.get("__abstract__"):
            raise GenevaError(f"{cls.__name__} is abstract; create one of its subclasses")
        if step_job_options is not None:
            problem = definition.job_options_problem(step_job_options)
            if problem is not None:
                raise ValueError(f"{cls.__name__}.create(): {problem}")
        ext.get_state()  # outside an app context, say so before touching the database
        session = ext.db.session
        hero_type, hero_id = reference(hero)
        now = clock.now()

        if hero_type is not None and not allow_multiple:
            w = ext.Workflow.__table__
            existing = session.execute(
                sa.select(w.c.id)
                .where(
                    w.c.type == cls.__geneva_identity__,
                    w.c.hero_type == hero_type,
                    w.c.hero_id == hero_id,
                    w.c.state.not_in(TERMINAL_WORKFLOW_STATES),
                    w.c.allow_multiple.is_(False),
                )
                .limit(1)
            ).first()
            if existing is not None:
                raise WorkflowExistsError(
                    f"an ongoing {cls.__name__} (id={existing[0]}) already exists for "
                    f"{hero_type}:{hero_id}; pass allow_multiple=True to create another"
                )

        workflow = cls(  # type: ignore[call-arg]
            hero_type=hero_type,
            hero_id=hero_id,
            state=WorkflowState.READY,
            allow_multiple=allow_multiple,
            created_at=now,
            updated_at=now,
            transitioned_at=None,
            fingerprint=cls.__geneva_definition__.graph.fingerprint,
            job_options=dict(step_job_options) if step_job_options else None,
            # The trace this was created in (a request's), for its step spans to link to.
            traceparent=otel.creating_traceparent(),
        )
        workflow.__dict__["_geneva_hero"] = hero
        session.add(workflow)
        try:
            session.flush()
        except sa.exc.IntegrityError as error:
            if commit:
                session.rollback()
            raise WorkflowExistsError(
                f"an ongoing {cls.__name__} already exists for {hero_type}:{hero_id}; "
                "pass allow_multiple=True to create another"
            ) from error

        unit.create(ext, session, workflow, commit=commit)
        return workflow

    # -- hero ----------------------------------------------------------------------------

    @property
    def hero(self) -> Any:
        """The hero record, loaded through ``db.session``; None if none or deleted."""
        if "_geneva_hero" not in self.__dict__:
            hero = None
            if self.hero_type is not None:
                ext = self._geneva
                hero = ext.heroes.load(ext.db.session, self.hero_type, self.hero_id)
            self.__dict__["_geneva_hero"] = hero
        return self.__dict__["_geneva_hero"]

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines carry this workflow's tag, so they can be grepped by id.

        Inside a step the tag names the execution too:
        ``[PaymentWorkflow id=12 hero=Payment:7] [execution=88 step=capture] ...``.
        """
        if self._geneva_context is not None:
            return self._geneva_context  # type: ignore[no-any-return]
        return tagged(type(self).__name__, self.id, self.hero_type, self.hero_id)

    @property
    def idempotency_key(self) -> str:
        """Inside a step: a key for effects outside the database, the same on every run.

        Every execution of this step in this workflow (reattempts, a recovery after a
        lost worker, a resume) sees the same key; another step or another workflow
        sees another. Hand it to a payment gateway or an e-mail API so that a body run
        twice has its outside effect once::

            @step(on_exception="reattempt")
            def capture(self):
                gateway.capture(self.hero.amount, idempotency_key=self.idempotency_key)

        :raises InvalidStateError: outside a step body.
        """
        if self._geneva_step is None:
            raise InvalidStateError(
                "idempotency_key is only defined inside a step body; outside one, use "
                "idempotency_key_for('step')"
            )
        if self.item_index is not None:  # each item of a map step has its own effect
            return step_key(self, f"{self._geneva_step}[{self.item_index}]")
        return step_key(self, self._geneva_step)

    def idempotency_key_for(self, step_name: str) -> str:
        """The :attr:`idempotency_key` that step ``step_name`` of this workflow sends.

        For looking a call up afterwards (at the gateway, in a later step)::

            status = gateway.status(self.idempotency_key_for("capture"))
        """
        if not isinstance(step_name, str) or not step_name:
            raise ValueError(f"idempotency_key_for() takes a step name, got {step_name!r}")
        return step_key(self, step_name)

    # -- signals -------------------------------------------------------------------------

    def signal(
        self,
        name: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        commit: bool = True,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Signal:
        """Store signal ``name`` for this workflow and wake the step waiting for it.

        The signal is stored as a row before anything is dispatched. A signal with the
        same (name, ``idempotency_key``) stored before is returned as it was, with
        ``duplicate=True``, and nothing else happens (a redelivered webhook is
        harmless). With ``commit=False`` it joins ``db.session``'s transaction and the
        woken step's trigger is sent when the caller commits (never on rollback)::

            transfer.settled_at = request.json["at"]
            wf.signal("settled", payload=request.json,
                      idempotency_key=request.headers["X-Delivery-Id"], commit=False)
            db.session.commit()

        An operator sending it by hand gives ``actor=`` (and ``reason=``): the signal is
        then also recorded in the operator actions, in the same transaction, and shown
        on the workflow's page (a duplicate records nothing new)::

            wf.signal("approved", {"by": "legal"}, actor="ops@example.com",
                      reason="approved on the phone")

        :return: the stored :class:`~flask_geneva.records.Signal`.
        :raises SignalError: the payload is not JSON-serialisable or is over
            ``GENEVA_MAX_SIGNAL_PAYLOAD``; the name or key is not a short string.
        :raises ValueError: ``actor`` or ``reason`` is too long or holds control
            characters (as for the other operator calls).
        :raises InvalidStateError: the workflow is finished or canceled.
        """
        from .signal_delivery import deliver

        if self.in_step:
            raise InvalidStateError("signal() cannot be called inside a step of the workflow")
        return deliver(
            self._geneva,
            type(self),
            self.id,
            name,
            payload,
            idempotency_key=idempotency_key,
            commit=commit,
            actor=actor,
            reason=reason,
        )

    @classmethod
    def signal_for(
        cls,
        hero: Any,
        name: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        commit: bool = True,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Signal:
        """:meth:`signal` the ongoing workflow of this class for ``hero``.

        :raises InvalidStateError: no workflow of this class is ongoing for ``hero``
            (or several are: signal one with :meth:`signal`).
        """
        from .operations import check_audit
        from .signal_delivery import check
        from .signal_delivery import deliver
        from .signal_delivery import ongoing_for

        ext = cls._geneva
        check(ext, name, payload, idempotency_key)
        check_audit(actor, reason)
        workflow_id = ongoing_for(ext, cls, hero)
        return deliver(
            ext,
            cls,
            workflow_id,
            name,
            payload,
            idempotency_key=idempotency_key,
            commit=commit,
            actor=actor,
            reason=reason,
        )

    def __repr__(self) -> str:
        hero = f" hero={self.hero_type}:{self.hero_id}" if self.hero_type else ""
        return f"<{type(self).__name__} id={self.id} state={self.state}{hero}>"


def step_key(workflow: Any, step_name: str) -> str:
    """The idempotency key of ``step_name`` in ``workflow``: short, stable, unique.

    Hashes the workflow's type, id and creation time with the step name, so two
    databases (staging and production sharing one gateway account, a restored
    backup) do not hand out the same key for different workflows.
    """
    created = workflow.created_at.isoformat(timespec="microseconds")
    material = f"{workflow.type}|{workflow.id}|{created}|{step_name}"
    digest = hashlib.sha256(material.encode()).hexdigest()[:24]
    return f"geneva-{workflow.id}-{digest}"
