"""Flow control inside a step, and the operator commands on a loaded workflow outside one.

The same names do both (SPEC section 2): inside a running body ``self.cancel()``
raises a flow-control signal that ends the step; on a workflow loaded anywhere else it
is an operator command, applied through :mod:`~flask_geneva.operations` and recorded
with ``actor=`` and ``reason=`` (the audit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import sqlalchemy as sa

from .errors import InvalidStateError
from .flow import CancelSignal
from .flow import FinishSignal
from .flow import FlowSignal
from .flow import PauseSignal
from .flow import ReattemptSignal
from .flow import SkipSignal

if TYPE_CHECKING:
    from datetime import timedelta

    from .extension import Geneva
    from .rerun_rules import RerunPlan


class Controls:
    """Flow control and operator commands (mixed into every workflow class)."""

    _geneva: ClassVar[Geneva]
    _geneva_context: Any
    _geneva_flow: FlowSignal | None
    id: Any

    @property
    def in_step(self) -> bool:
        """True while this instance is running a step body (flow control raises)."""
        return self._geneva_context is not None

    def cancel(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Inside a step: cancel the workflow. Outside: cancel it now.

        :param actor: outside a step, who cancels (stored with the action).
        :param reason: outside a step, why (shown on the workflow's page).
        """
        if self.in_step:
            self._no_audit("cancel", actor, reason)
            raise self._flow(CancelSignal())
        self._operate("cancel", actor=actor, reason=reason)

    def pause(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Inside a step: pause; resume runs this step again. Outside: pause now."""
        if self.in_step:
            self._no_audit("pause", actor, reason)
            raise self._flow(PauseSignal())
        self._operate("pause", actor=actor, reason=reason)

    def skip(
        self, step: str | None = None, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        """Inside a step: record it as skipped and go on. Outside: skip the due step.

        :param step: outside a step, the step to skip; needed when several are due.
        """
        if self.in_step:
            if step is not None:
                raise TypeError("skip() inside a step skips the running step; it takes no name")
            self._no_audit("skip", actor, reason)
            raise self._flow(SkipSignal())
        self._operate("skip", step=step, actor=actor, reason=reason)

    def reattempt(
        self,
        wait: timedelta | int | float | None = None,
        *,
        step: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Inside a step: run it again after ``wait``. Outside: run the due/failed step now.

        :param wait: inside a step, the delay before the next attempt.
        :param step: outside a step, the step to run; needed when several are due.
        """
        if self.in_step:
            self._no_audit("reattempt", actor, reason)
            raise self._flow(ReattemptSignal(wait))
        if wait is not None:
            raise TypeError("reattempt(wait=) applies inside a step; outside, it runs now")
        self._operate("reattempt", step=step, actor=actor, reason=reason)

    def finish(self) -> None:
        """Inside a step: complete it and finish the workflow, canceling the rest."""
        if self.in_step:
            raise self._flow(FinishSignal())
        raise InvalidStateError("finish() can only be called inside a step; use cancel() outside")

    def resume(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Resume a paused workflow: re-trigger its scheduled steps, retry failed ones."""
        self._outside("resume")
        self._operate("resume", actor=actor, reason=reason)

    def resume_at(
        self, step: str, *, actor: str | None = None, reason: str | None = None
    ) -> list[str]:
        """Go on from ``step`` in a paused workflow, and nowhere else; return the skipped.

        For a workflow stranded on a step a deploy removed: what is scheduled or
        waiting ends, every step not done that does not come after ``step`` is recorded
        as skipped, and ``step`` is scheduled now.

        :raises InvalidStateError: the workflow is not paused, has no such step, or a
            step is running.
        """
        self._outside("resume_at")
        detail = self._operate("resume_at", step=step, actor=actor, reason=reason)
        return list(detail.get("skipped", [])) if detail else []

    def rerun_from(
        self, step: str, reason: str | None = None, *, actor: str | None = None
    ) -> tuple[str, ...]:
        """Run ``step`` and all its descendants again, with new executions; return them.

        For a paused, finished or canceled workflow (a bug fixed after it ran): the old
        rows stay as history; the ancestors keep their executions and outputs; the
        workflow is ready again (a failed step in another branch runs again too).
        :meth:`rerun_plan` shows what it would do first.

        :raises InvalidStateError: the workflow is ready or performing, a step of the
            rerun is running, the step has not run yet, or there is no such step.
        """
        self._outside("rerun_from")
        detail = self._operate("rerun_from", step=step, actor=actor, reason=reason)
        return tuple(detail["rerun"]) if detail else (step,)

    def rerun_plan(self, step: str) -> RerunPlan:
        """What :meth:`rerun_from` would re-run, keep and cancel; changes nothing.

        Its ``problem`` says why the rerun would be refused now (None: accepted).

        :raises InvalidStateError: the workflow has no step ``step``.
        """
        from . import operations

        return operations.plan_rerun(self._geneva, self.id, step)

    def _flow(self, signal: FlowSignal) -> FlowSignal:
        """Remember the flow-control call made in the running body, then raise it."""
        self._geneva_flow = signal
        return signal

    def _outside(self, name: str) -> None:
        if self.in_step:
            raise InvalidStateError(f"{name}() cannot be called inside a step")

    @staticmethod
    def _no_audit(name: str, actor: str | None, reason: str | None) -> None:
        if actor is not None or reason is not None:
            raise TypeError(
                f"{name}() inside a step takes no actor= or reason=: they record an "
                "operator's command, given outside a step"
            )

    def _operate(self, operation: str, **kwargs: Any) -> dict[str, Any] | None:
        from . import operations

        result = operations.perform(self._geneva, operation, [self.id], **kwargs)
        self._reload_committed()
        return result.details.get(self.id)

    def _reload_committed(self) -> None:
        """Re-read this workflow's row on a fresh connection and keep it as committed state.

        Not ``session.refresh()``: the caller's session may hold an open transaction
        whose snapshot predates the change (MySQL/MariaDB's REPEATABLE READ), and would
        show the old state.
        """
        w = self._geneva.tables.workflows
        with self._geneva.engine().connect() as conn:
            row = conn.execute(sa.select(w).where(w.c.id == self.id)).first()
        if row is None:
            return
        from .mapping import set_row_values

        set_row_values(self, row._mapping)
        session = sa.inspect(self).session
        if session is not None:
            session.expire(self, ["executions"])
