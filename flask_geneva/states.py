"""Workflow states, step execution states and outcomes, and what each allows."""

from __future__ import annotations

from enum import StrEnum


class WorkflowState(StrEnum):
    """The states of a workflow, stored as these lowercase strings."""

    READY = "ready"
    PERFORMING = "performing"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELED = "canceled"


class StepState(StrEnum):
    """The states of one step execution (one attempt to run a step)."""

    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    #: Due, but its ``wait_for`` signal has not arrived: no Huey message (except the
    #: timeout's), no worker. A signal's arrival makes it scheduled again.
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"


class Outcome(StrEnum):
    """Why a step execution ended, recorded beside its terminal state."""

    SUCCESS = "success"
    REATTEMPTED = "reattempted"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    FAILED = "failed"
    RECOVERED = "recovered"
    #: On a scheduled execution only: made due by an ``on_timeout="run"`` timeout, so it
    #: runs without a signal (``received_signal`` is None) instead of waiting again.
    TIMED_OUT = "timed_out"
    #: A resumable step reached ``max_iterations`` or ``max_runtime`` at a checkpoint
    #: (or its worker was stopping): ended ``completed``, and a new execution of the
    #: same step continues from the stored cursor.
    CONTINUED = "continued"


#: Workflow states that will never change again.
TERMINAL_WORKFLOW_STATES = frozenset({WorkflowState.FINISHED, WorkflowState.CANCELED})
#: Workflow states that may still change, in their display order (ready, performing,
#: paused): what the census, the metrics and the "stranded" filter count as ongoing.
ONGOING_WORKFLOW_STATES: tuple[str, ...] = tuple(
    s.value for s in WorkflowState if s not in TERMINAL_WORKFLOW_STATES
)
#: Workflow states in which a claimed execution may start.
RUNNABLE_WORKFLOW_STATES = frozenset({WorkflowState.READY, WorkflowState.PERFORMING})
#: Execution states that hold the (workflow, step) slot of the unique index.
ACTIVE_STEP_STATES = frozenset({StepState.SCHEDULED, StepState.IN_PROGRESS, StepState.WAITING})
#: Execution states that will never change again.
TERMINAL_STEP_STATES = frozenset(
    {StepState.COMPLETED, StepState.FAILED, StepState.CANCELED, StepState.SKIPPED}
)


def is_ongoing(state: str) -> bool:
    """Return whether a workflow in ``state`` may still change."""
    return state not in TERMINAL_WORKFLOW_STATES
