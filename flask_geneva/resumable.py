"""Long steps: a resumable step's cursor and its checkpoints, inside the body.

``@step(resumable=True)`` gives the body :attr:`Resumable.cursor`, the last value it
checkpointed (for a map item: that item's), and :meth:`Resumable.checkpoint`, which
stores a new one. A checkpoint is a commit of the body's own transaction: what the
body wrote since the previous checkpoint commits with the cursor, and iterations
grows by one, in one conditional UPDATE of the execution that matches only while it
is still ``in_progress`` (housekeeping may have recovered it from a worker thought
lost: then the run is discarded, as at finalize). Whatever the execution ends with
afterwards (an exception, a pause, a lost worker) rolls back only what came after
the last checkpoint, and the next execution starts from its cursor.

When the execution has run ``max_iterations`` checkpoints or ``max_runtime``, or its
worker is stopping gracefully, the checkpoint does not commit by itself: it ends the
body with :class:`ContinueSignal`, and the executor records the cursor, the outcome
``continued`` and a new execution of the step with the body's writes, through the one
write path (:mod:`~flask_geneva.resumable_rules` decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import sqlalchemy as sa

from . import clock
from .errors import InvalidStateError
from .errors import OutputError
from .flow import FlowSignal
from .records import json_size
from .states import StepState

if TYPE_CHECKING:
    from .body import Run


class ContinueSignal(FlowSignal):
    """A checkpoint reached the execution's limits: end it and continue in a new one."""

    action = "continue"

    def __init__(self, cursor: Any, iterations: int) -> None:
        super().__init__(cursor)
        self.cursor = cursor
        self.iterations = iterations


class LostSignal(FlowSignal):
    """A checkpoint found its execution no longer in progress: this run is discarded.

    Finalize finds the execution taken from this worker too and records nothing.
    """

    action = "drop"


@dataclass
class _State:
    """What the running body of a resumable step knows of its cursor."""

    run: Run
    loaded: bool = False
    cursor: Any = None
    #: Checkpoints this execution counted (stored on its row).
    iterations: int = 0


def begin(workflow: Any, run: Run) -> None:
    """Give the body about to run its resumable state (None for other steps)."""
    resumable = run.step is not None and run.step.resumable
    workflow._geneva_resume = _State(run) if resumable else None


def checked(value: Any, step: str, *, max_bytes: int) -> None:
    """Check ``value`` can be stored as step ``step``'s cursor.

    :raises OutputError: None, not JSON, or over ``GENEVA_MAX_OUTPUT_BYTES``.
    """
    if value is None:
        raise OutputError(
            f"step {step!r} checkpointed None: a cursor of None cannot be told apart from "
            "no checkpoint at all (self.cursor is None at first); checkpoint a value that "
            "says where to go on from, such as the last id done"
        )
    try:
        size, nul = json_size(value)
    except ValueError as error:
        raise OutputError(
            f"step {step!r} checkpointed {type(value).__name__} that cannot be stored as its "
            f"cursor: {error}. A cursor is stored as JSON (at most GENEVA_MAX_OUTPUT_BYTES="
            f"{max_bytes:,} bytes): checkpoint a dict, list, string, number or boolean"
        ) from None
    if nul:
        raise OutputError(
            f"step {step!r} checkpointed a value holding a NUL character, which "
            "PostgreSQL's JSON cannot store (refused on every database alike)"
        )
    if size > max_bytes:
        raise OutputError(
            f"step {step!r} checkpointed {size:,} bytes of JSON, over GENEVA_MAX_OUTPUT_BYTES="
            f"{max_bytes:,}: a cursor says where the step is (an id, a page token), not "
            "what it did; keep the data in your own table"
        )


class Resumable:
    """A workflow's view of its resumable step's cursor (mixed into the workflow base)."""

    _geneva: ClassVar[Any]
    _geneva_step: str | None
    _geneva_flow: FlowSignal | None
    id: Any
    #: Set by the executor while a resumable step's body runs.
    _geneva_resume: _State | None = None

    def _resume_state(self, what: str) -> _State:
        state = self._geneva_resume
        if state is None or self._geneva_step is None:
            where = (
                f"step {self._geneva_step!r} is not resumable (add @step(resumable=True))"
                if self._geneva_step is not None
                else "it is only defined inside a step body"
            )
            raise InvalidStateError(f"{what} belongs to a resumable step's body: {where}")
        if not state.loaded:
            self._load(state)
        return state

    def _load(self, state: _State) -> None:
        """Read the step's (item's) last cursor and this execution's iterations."""
        ext = self._geneva
        e = ext.tables.executions
        record = state.run.record
        conn = ext.db.session.connection(bind_arguments={"mapper": ext.Workflow})
        item = (
            e.c.item_index.is_(None)
            if record.item_index is None
            else e.c.item_index == record.item_index
        )
        state.cursor = conn.execute(
            sa.select(e.c.cursor)
            .where(
                e.c.workflow_id == self.id,
                e.c.step_name == record.step_name,
                item,
                e.c.cursor.is_not(None),
            )
            .order_by(e.c.id.desc())
            .limit(1)
        ).scalar()
        iterations = conn.execute(sa.select(e.c.iterations).where(e.c.id == record.id)).scalar()
        state.iterations = int(iterations or 0)
        state.loaded = True

    @property
    def cursor(self) -> Any:
        """In a resumable step's body: the value it checkpointed last (None at first).

        Across all the step's executions (for a map item, that item's): a reattempt,
        a resume, a recovery or a continuation starts from it.

        :raises InvalidStateError: outside the body of a resumable step.
        """
        return self._resume_state("self.cursor").cursor

    def checkpoint(self, value: Any) -> None:
        """Store ``value`` as the cursor, with the body's writes so far, and count an iteration.

        Commits the body's transaction (``db.session``): those writes are kept whatever
        happens later. When this execution reached ``max_iterations`` or ``max_runtime``,
        or its worker is stopping gracefully, the body ends here instead: the execution
        is recorded ``continued`` with the cursor, and a new one continues from it.

        ::

            for user in User.query.filter(User.id > (self.cursor or 0)).order_by(User.id):
                notify(user)
                self.checkpoint(user.id)

        :raises OutputError: ``value`` is None, not JSON or too large (the step's
            exception policy applies).
        :raises InvalidStateError: outside the body of a resumable step.
        """
        state = self._resume_state("self.checkpoint()")
        run = state.run
        assert run.step is not None
        ext = self._geneva
        checked(value, run.step.name, max_bytes=ext.get_state().config.max_output_bytes)
        iterations = state.iterations + 1
        if self._continues(state, iterations):
            self._geneva_flow = signal = ContinueSignal(value, iterations)
            raise signal
        session = ext.db.session
        session.flush()
        e = ext.tables.executions
        conn = session.connection(bind_arguments={"mapper": ext.Workflow})
        # Not the workflow lock: the execution row alone, conditional on its state, so
        # a recovery committed meanwhile (under the workflow lock) is seen and wins.
        matched = conn.execute(
            sa.update(e)
            .where(e.c.id == run.execution_id, e.c.state == StepState.IN_PROGRESS)
            .values(cursor=value, iterations=iterations)
        ).rowcount
        if matched != 1:
            session.rollback()
            run.log.warning(
                "checkpoint found the execution no longer in progress (recovered by "
                "housekeeping?); this run stops and its writes since the last checkpoint "
                "are discarded"
            )
            self._geneva_flow = lost = LostSignal()
            raise lost
        session.commit()
        state.cursor, state.iterations = value, iterations

    def _continues(self, state: _State, iterations: int) -> bool:
        """Whether this checkpoint ends the execution (its limits, or a stopping worker)."""
        step, record = state.run.step, state.run.record
        assert step is not None
        if step.max_iterations is not None and iterations >= step.max_iterations:
            return True
        if (
            step.max_runtime is not None
            and record.started_at is not None
            and clock.now() - record.started_at >= step.max_runtime
        ):
            return True
        from .tasks import stopping  # the Huey wiring imports the executor, which imports this

        return stopping(self._geneva.get_state().huey)
