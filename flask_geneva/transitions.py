"""The rules: what a result, an operator's command or housekeeping does to one workflow.

Pure: a :class:`Transition` works on a snapshot of the workflow row and the latest
execution of each step (read under the workflow row lock by
:mod:`~flask_geneva.unit`) and records the changes to make; ``store.persist`` writes
them. Every state change of flask-geneva is decided here, and nowhere else: creation,
the executor's results, the operator commands, housekeeping's recoveries and the
testing helpers.

Vocabulary: a step is *done* when its latest execution is completed with outcome
``success`` or skipped; *active* when its latest execution is scheduled, in progress
or waiting (for a signal); *pending* when its predecessors are done but its latest
execution failed or was canceled (it waits for resume, skip or reattempt).

Signals (``@step(wait_for=...)``): the transition also holds the workflow's signals
(read only for classes with a step that waits), and the rules of consuming them: a
claimed step takes the signal it consumed before, else the oldest pending one it
accepts, else it waits; a signal's arrival wakes the oldest waiting execution that
accepts it; a timeout applies the step's ``on_timeout``.

Layout of the rules: :mod:`~flask_geneva.transition_base` holds the snapshot, its
reads and the primitive changes; one mixin on that base per feature
(:mod:`~flask_geneva.signal_rules`, :mod:`~flask_geneva.map_rules`,
:mod:`~flask_geneva.resumable_rules`, :mod:`~flask_geneva.rerun_rules`); this module
composes them with the core rules. The operator commands are in
:mod:`~flask_geneva.commands`, over the same :class:`Transition`.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidStateError
from .map_rules import MapRules
from .records import ErrorInfo
from .records import ExecutionRecord
from .records import StepResult
from .rerun_rules import RerunRules
from .resumable_rules import ResumableRules
from .scheduling import Trigger
from .scheduling import new_task_id
from .signal_rules import NO_TIMEOUT
from .signal_rules import SignalRules
from .states import RUNNABLE_WORKFLOW_STATES
from .states import Outcome
from .states import StepState
from .states import WorkflowState
from .states import is_ongoing

__all__ = ["ErrorInfo", "ExecutionRecord", "StepResult", "Transition"]


class Transition(SignalRules, RerunRules, MapRules, ResumableRules):
    """Changes to one workflow and its executions, decided under its row lock.

    The snapshot, its reads and the primitive changes are the base's
    (:class:`~flask_geneva.transition_base.TransitionBase`); the rules of signals,
    map steps, resumable steps and reruns are its mixins'; here are the core rules:
    a new workflow, advancing to ready steps, a step's result, a recovery, resume,
    and the triggers to send after commit.
    """

    # -- core rules --------------------------------------------------------------------

    def start(self) -> None:
        """A new workflow: schedule its root steps; a class with no steps is finished."""
        assert self.graph is not None
        for name in self.graph.roots:
            self.add(name, due=self.now + self.graph.steps[name].wait)
        if not len(self.graph):
            self.set_state(WorkflowState.FINISHED)

    def advance(self) -> None:
        """Create executions for steps that became ready; finish when all steps are done."""
        if self.graph is None or not is_ongoing(self.state):
            return
        while ready := self.graph.ready_steps(self.done_steps(), self.started_steps()):
            for name in ready:
                if name in self.graph.maps:
                    self.start_map(name)
                else:
                    self.add(name, due=self.now + self.graph.steps[name].wait)
            if not any(name in self.graph.maps for name in ready):
                break  # else a map step with no items may be done at once: look again
        done = self.done_steps()
        for name in self.graph.maps:
            if name not in done and self.map_started(name):
                self.release_items(name)  # the room an item left, or a resume
        # Every step of the graph (done may also name steps it no longer defines).
        if done.issuperset(self.graph.steps) and not any(r.is_active for r in self.records):
            self.set_state(WorkflowState.FINISHED)

    def resume(self) -> None:
        """Re-trigger scheduled executions and re-create pending steps, due now.

        A waiting step whose signal arrived while paused is woken; another waiting one
        gets its timeout's trigger again (due at once if it passed meanwhile).
        """
        self.set_state(WorkflowState.READY)
        for record in self.scheduled():
            self.retrigger(record)
        for record in self.waiting():
            signal = self._acceptable_signal(record)
            if signal is not None:
                self.consume(signal, record)
                self._make_due(record)
            elif record.scheduled_for < NO_TIMEOUT:
                self.retrigger(record)
        for name in self.pending_steps():
            if self.graph is None or name not in self.graph.maps:
                self.add(name, due=self.now)
        self.advance()  # a map step's pending items are released there, within its room
        self.settle_state()

    def apply(self, record: ExecutionRecord, result: StepResult, *, body_ran: bool = True) -> None:
        """Record how ``record`` ended and move the workflow accordingly.

        :param body_ran: False when the result was decided after the claim but before
            the body (a precondition, a missing class or hero): ``started_at`` is
            cleared, since it means "the body started".
        """
        if not body_ran:
            record.changes["started_at"] = None
        action = result.action
        if action == "success":
            self.end(record, StepState.COMPLETED, Outcome.SUCCESS)
            self.keep_output(record, result)
        elif action == "finish":
            self.end(record, StepState.COMPLETED, Outcome.SUCCESS)
            self.keep_output(record, result)
            if is_ongoing(self.state):
                self.cancel_scheduled()
                self.set_state(WorkflowState.FINISHED)
        elif action == "skip":
            metadata = {"skip_reason": result.reason} if result.reason else None
            self.end(
                record, StepState.SKIPPED, Outcome.SKIPPED, error=result.error, metadata=metadata
            )
        elif action == "reattempt":
            self._reattempt(record, result)
        elif action == "continue":
            self.continue_step(record, result)
        elif action in ("cancel", "pause"):
            self.end(record, StepState.CANCELED, Outcome.CANCELED)
            self.stop(action)
        elif action == "failed":
            outcome = Outcome.CANCELED if result.then == "cancel" else Outcome.FAILED
            self.end(record, StepState.FAILED, outcome, error=result.error)
            self.stop(result.then)
        elif action == "drop":
            self.end(record, StepState.CANCELED, Outcome.CANCELED)
            self.settle_state()
            return
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown step result action {action!r}")
        self.advance()
        self.settle_state()

    def keep_output(self, record: ExecutionRecord, result: StepResult) -> None:
        """Store what the body returned with its outcome (and a producer's item count)."""
        if result.output is not None:
            record.changes["output"] = result.output
        if result.item_count is not None:
            record.item_count = result.item_count
            record.changes["item_count"] = result.item_count

    def _reattempt(self, record: ExecutionRecord, result: StepResult) -> None:
        metadata: dict[str, Any] = {"reattempt_reason": result.reason or "flow_control"}
        if result.error is not None:
            metadata["exception"] = {
                "class": result.error.error_class,
                "message": result.error.message,
            }
        # The exception that caused an automatic reattempt stays on the execution, as on
        # a failed one: the operator reading attempt 3 wants attempts 1-2's errors.
        self.end(
            record, StepState.COMPLETED, Outcome.REATTEMPTED, error=result.error, metadata=metadata
        )
        counts = result.reason in ("exception_policy", "precondition")
        if is_ongoing(self.state):
            self.add(
                record.step_name,
                due=self.now + result.wait,
                consecutive_reattempts=record.consecutive_reattempts + (1 if counts else 0),
                item_index=record.item_index,
            )

    def recover(
        self,
        record: ExecutionRecord,
        error: ErrorInfo,
        *,
        then: str,
        recoveries: int = 1,
        max_recoveries: int | None = None,
    ) -> str:
        """End an execution whose worker was lost (housekeeping), then go on per ``then``.

        The execution becomes ``failed`` with outcome ``recovered`` and ``error``. With
        ``then="reattempt"`` a fresh execution of the step is due now (a paused workflow
        gets none: resume creates it); with ``then="cancel"`` the workflow is canceled.
        ``recoveries`` counts this one and the step's recoveries just before it; past
        ``max_recoveries`` the workflow is paused instead of reattempting again.

        :return: what was done: ``reattempt``, ``cancel`` or ``pause``.
        """
        if then != "cancel" and max_recoveries is not None and recoveries > max_recoveries:
            error = ErrorInfo(
                error.error_class,
                f"step {record.step_name!r} kept killing its worker: its worker was lost "
                f"{recoveries} times in a row (GENEVA_MAX_RECOVERIES={max_recoveries}); "
                "workflow paused. Find what kills the process (memory, a segfault, a "
                f"timeout) before resuming. Last recovery: {error.message}",
                error.traceback,
            )
            then = "pause"
        self.end(record, StepState.FAILED, Outcome.RECOVERED, error=error)
        if then in ("cancel", "pause"):
            self.stop(then)
        elif self.state in RUNNABLE_WORKFLOW_STATES:
            self.add(
                record.step_name,
                due=self.now,
                consecutive_reattempts=record.consecutive_reattempts,
                item_index=record.item_index,
            )
        self.advance()
        self.settle_state()
        return then

    def release(self, record: ExecutionRecord) -> None:
        """Give back an execution whose worker is shutting down mid-body: due again now.

        Not a failure and not an attempt: the same execution is scheduled again (its
        body's writes were rolled back) and triggered if the workflow is runnable.
        """
        record.state = StepState.SCHEDULED
        record.scheduled_for = self.now
        record.changes.update(
            state=StepState.SCHEDULED, started_at=None, scheduled_for=self.now, updated_at=self.now
        )
        self.retrigger(record)
        self.settle_state()

    def run_now(self, step_name: str) -> ExecutionRecord:
        """Make ``step_name`` due now without a trigger (the testing helpers run it).

        Its scheduled execution is moved to now; otherwise a fresh one is created. A map
        step's first scheduled item is moved to now (its items are created as the
        map releases them, never here).
        """
        if self.graph is not None and step_name in self.graph.maps:
            for record in self.items(step_name).values():
                if record.state == StepState.SCHEDULED:
                    self.due_now(record)
                    return record
            raise InvalidStateError(
                f"Cannot run map step {step_name!r} now: none of its items is scheduled "
                "(run its producer first; perform_next_step and speedrun run its items)"
            )
        latest = self.latest(step_name)
        if latest is not None and latest.state == StepState.SCHEDULED:
            self.due_now(latest)
            return latest
        if latest is not None and latest.state == StepState.WAITING:
            self._make_due(latest)  # its claim looks for its signal again
            latest.trigger = False
            return latest
        if latest is not None and latest.state == StepState.IN_PROGRESS:
            raise InvalidStateError(f"Cannot run step {step_name!r} now: it is running")
        return self.add(step_name, due=self.now, trigger=False)

    # -- what to send after commit -----------------------------------------------------

    def assign_task_ids(self) -> None:
        """Choose Huey task ids for executions about to be triggered (stored with the row)."""
        if self.state not in RUNNABLE_WORKFLOW_STATES:
            return
        for record in self.records:
            if record.trigger and record.state in _TRIGGERED:
                record.huey_task_id = new_task_id()
                if record.id is not None:
                    record.changes["huey_task_id"] = record.huey_task_id

    def triggers(self) -> list[Trigger]:
        """Return the Huey triggers to send once the transition has committed.

        Nothing is sent while the workflow is paused or over: scheduled executions wait
        for resume, which re-triggers them.
        """
        if self.state not in RUNNABLE_WORKFLOW_STATES:
            return []
        return [
            Trigger(
                execution_id=record.id,
                eta=record.scheduled_for,
                task_id=record.huey_task_id or new_task_id(),
                priority=self.priority,
            )
            for record in self.records
            if record.trigger and record.state in _TRIGGERED and record.id is not None
        ]


#: Execution states a trigger is sent for: scheduled ones, and waiting ones (their timeout).
_TRIGGERED = frozenset({StepState.SCHEDULED, StepState.WAITING})
