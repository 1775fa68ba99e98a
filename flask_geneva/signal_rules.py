"""The rules of signals, a mixin of :class:`~flask_geneva.transitions.Transition`.

A claimed step that waits takes the signal it consumed before, else the oldest pending
one it accepts, else it waits; a signal's arrival wakes the oldest waiting execution
that accepts it; a timeout applies the step's ``on_timeout``. Pure, like the rest of
the rules: they change the transition's records and signals, and ``store.persist``
writes them.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from typing import Any

from .records import ErrorInfo
from .records import ExecutionRecord
from .records import SignalRecord
from .states import RUNNABLE_WORKFLOW_STATES
from .states import Outcome
from .states import StepState
from .transition_base import TransitionBase

#: The due time of a waiting execution without a timeout: never (no trigger is sent
#: for it, and housekeeping's overdue search never reaches it).
NO_TIMEOUT = datetime(9999, 12, 31)
#: The error class recorded on a step whose signal did not come in time (``pause``).
SIGNAL_TIMEOUT_ERROR = "flask_geneva.SignalTimeout"


class SignalRules(TransitionBase):
    """The signal rules of a transition (mixed into it; see its other rules there)."""

    def consumed_by_step(self, step_name: str) -> SignalRecord | None:
        """The signal step ``step_name`` consumed (by any of its executions), if any."""
        for signal in reversed(self.signals):
            if signal.consumed_step == step_name:
                return signal
        return None

    def _acceptable_signal(self, record: ExecutionRecord) -> SignalRecord | None:
        """The oldest pending signal ``record``'s step waits for and accepts."""
        step = self.graph.steps.get(record.step_name) if self.graph is not None else None
        if step is None or step.wait_for is None:
            return None
        for signal in self.signals:
            if signal.pending and signal.name == step.wait_for and step.accepts(signal.payload):
                return signal
        return None

    def consume(self, signal: SignalRecord, record: ExecutionRecord) -> None:
        """``record``'s step consumes ``signal`` (the execution id is known at persist)."""
        signal.consumed_step = record.step_name
        signal.consumed_at = self.now
        signal.changes.update(
            consumed_step=record.step_name, consumed_at=self.now, consumed_by=record
        )

    def take_signal(
        self, record: ExecutionRecord, timeout: timedelta | None
    ) -> tuple[bool, SignalRecord | None]:
        """A claimed execution of a step that waits: run it now, or make it wait.

        It runs with the signal its step consumed before (a reattempt, a recovery, a
        resume), else with the oldest pending signal it accepts (consumed now), else
        with none after an ``on_timeout="run"`` timeout. Otherwise it becomes
        ``waiting``: no worker, no trigger but its timeout's, due at the timeout.

        :return: (runs now, the signal it runs with).
        """
        if record.outcome == Outcome.TIMED_OUT:
            return True, None
        signal = self.consumed_by_step(record.step_name) or self._acceptable_signal(record)
        if signal is not None:
            if signal.pending:
                self.consume(signal, record)
            return True, signal
        due = self.now + timeout if timeout is not None else NO_TIMEOUT
        record.state = StepState.WAITING
        record.scheduled_for = due
        record.started_at = None
        record.changes.update(
            state=StepState.WAITING,
            scheduled_for=due,
            started_at=None,
            heartbeat_at=None,
            updated_at=self.now,
            metadata={"waiting_since": self.now.isoformat()},
        )
        record.trigger = timeout is not None
        self.settle_state()
        return False, None

    def receive(
        self, name: str, payload: Any, idempotency_key: str | None
    ) -> tuple[SignalRecord, ExecutionRecord | None]:
        """Store a new signal; a runnable workflow wakes the oldest execution accepting it.

        :return: the signal, and the execution it woke (None: stored as pending).
        """
        signal = SignalRecord(None, name, payload, idempotency_key, self.now)
        self.signals.append(signal)
        if self.state not in RUNNABLE_WORKFLOW_STATES:
            return signal, None
        for record in self.waiting():
            found = self._acceptable_signal(record)
            if found is not None:
                self.consume(found, record)
                self._make_due(record)
                if found is signal:
                    return signal, record
        return signal, None

    def _make_due(self, record: ExecutionRecord, *, outcome: str | None = None) -> None:
        record.state = StepState.SCHEDULED
        record.outcome = outcome
        record.changes.update(state=StepState.SCHEDULED, outcome=outcome)
        self.due_now(record)
        self.retrigger(record)

    def time_out(self, record: ExecutionRecord, on_timeout: str, waited: timedelta) -> None:
        """A waiting execution's timeout passed: apply ``on_timeout``.

        ``pause`` fails it with an error naming the signal and the wait; ``cancel``
        cancels the workflow; ``skip`` skips the step; ``run`` makes it due now, to run
        without a signal.
        """
        step = self.graph.steps.get(record.step_name) if self.graph is not None else None
        awaited = step.wait_for if step is not None else "?"
        if on_timeout == "run":
            self._make_due(record, outcome=Outcome.TIMED_OUT)
        elif on_timeout == "skip":
            self.end(record, StepState.SKIPPED, Outcome.SKIPPED)
        elif on_timeout == "cancel":
            self.end(record, StepState.CANCELED, Outcome.CANCELED)
            self.stop("cancel")
        else:
            error = ErrorInfo(
                SIGNAL_TIMEOUT_ERROR,
                f"step {record.step_name!r} waited {waited} for signal {awaited!r} and none "
                "came; workflow paused (send the signal and resume, or skip the step)",
                "",
            )
            self.end(record, StepState.FAILED, Outcome.FAILED, error=error)
            self.stop("pause")
        self.advance()
        self.settle_state()
