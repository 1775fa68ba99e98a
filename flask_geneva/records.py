"""The values the rules work on: an execution as a record, a step's result, a stored error.

Plain data, no behaviour beyond small views: :mod:`~flask_geneva.transitions` decides
with them, :mod:`~flask_geneva.store` reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any

from .states import Outcome
from .states import StepState


@dataclass
class ErrorInfo:
    """What is kept of an exception on the execution it failed."""

    error_class: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, error: BaseException, traceback_text: str) -> ErrorInfo:
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        return cls(name, str(error), traceback_text)


@dataclass
class ExecutionRecord:
    """One execution row as the rules see it, with the changes decided for it."""

    id: int | None
    step_name: str
    state: str
    outcome: str | None
    scheduled_for: datetime
    attempt: int = 1
    consecutive_reattempts: int = 0
    huey_task_id: str | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    #: The lease's last refresh while the body ran (None: not yet, or a 0.1 row).
    heartbeat_at: datetime | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    trigger: bool = False

    @property
    def is_done(self) -> bool:
        return self.state == StepState.SKIPPED or (
            self.state == StepState.COMPLETED and self.outcome == Outcome.SUCCESS
        )

    @property
    def is_active(self) -> bool:
        return self.state in (StepState.SCHEDULED, StepState.IN_PROGRESS)


@dataclass
class StepResult:
    """How one execution ended, in the executor's words.

    ``action`` is one of: ``success``, ``finish``, ``skip``, ``reattempt``, ``cancel``,
    ``pause`` (in-step flow control or a precondition), ``failed`` (an exception whose
    policy ends in ``then`` = ``pause`` or ``cancel``), ``drop`` (cancel the execution
    alone: the workflow was not runnable when it was claimed).
    """

    action: str
    wait: timedelta = timedelta(0)
    error: ErrorInfo | None = None
    #: For reattempts: ``flow_control``, ``exception_policy`` or ``precondition``.
    reason: str | None = None
    #: For ``failed``: what happens to the workflow, ``pause`` or ``cancel``.
    then: str = "pause"
    #: The exception itself, when one caused this result (not stored; reported).
    exception: BaseException | None = None
