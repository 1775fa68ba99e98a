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
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .errors import InvalidStateError
from .graph import StepGraph
from .map_rules import MapProgress
from .map_rules import MapRules
from .records import ErrorInfo
from .records import ExecutionRecord
from .records import SignalRecord
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


class Transition(SignalRules, MapRules, ResumableRules, RerunRules):
    """Changes to one workflow and its executions, decided under its row lock.

    ``records`` holds the latest execution of each step, oldest first (an active
    execution is always its step's latest: the unique index allows one per step);
    for a map step, the latest execution of each item not done (``maps`` counts the
    done ones; see :mod:`~flask_geneva.map_rules`).
    """

    def __init__(
        self,
        graph: StepGraph | None,
        workflow_state: str,
        records: list[ExecutionRecord],
        now: datetime,
        *,
        priority: int | None = None,
        signals: list[SignalRecord] | None = None,
        maps: dict[str, MapProgress] | None = None,
    ) -> None:
        self.graph = graph
        self.state = workflow_state
        self.initial_state = workflow_state
        self.records = records
        self.now = now
        self.priority = priority
        #: The workflow's signals, oldest first (empty unless the snapshot read them).
        self.signals: list[SignalRecord] = signals if signals is not None else []
        #: The map steps' done items, counted by the snapshot.
        self.maps: dict[str, MapProgress] = maps if maps is not None else {}
        self.workflow_changes: dict[str, Any] = {}
        #: A rerun's steps, whose rows are marked superseded (see rerun_rules).
        self.superseded: set[str] = set()
        #: Records taken out of ``records`` by a rerun, with changes still to write.
        self.retired: list[ExecutionRecord] = []
        #: Operator actions to record (the audit): who did what, when and why.
        self.actions: list[dict[str, Any]] = []

    # -- views -------------------------------------------------------------------------

    def get(self, execution_id: int) -> ExecutionRecord | None:
        for record in self.records:
            if record.id == execution_id:
                return record
        return None

    def latest(self, step_name: str, item_index: int | None = None) -> ExecutionRecord | None:
        """The latest execution of a step (of one item of a map step, or its own row)."""
        for record in reversed(self.records):
            if record.step_name == step_name and record.item_index == item_index:
                return record
        return None

    def latest_by_step(self) -> dict[str, ExecutionRecord]:
        """Each step's latest execution of its own (a map step's items are apart)."""
        latest: dict[str, ExecutionRecord] = {}
        for record in self.records:
            if record.item_index is None:
                latest[record.step_name] = record
        return latest

    def done_steps(self) -> set[str]:
        done = {name for name, r in self.latest_by_step().items() if r.is_done}
        if self.graph is not None:
            done.update(name for name in self.graph.maps if self.map_done(name))
        return done

    def started_steps(self) -> set[str]:
        """Steps with an execution (a map step: of its own, or of an item)."""
        started = {r.step_name for r in self.records}
        started.update(name for name, p in self.maps.items() if p.highest >= 0)
        return started

    def scheduled(self) -> list[ExecutionRecord]:
        return [r for r in self.records if r.state == StepState.SCHEDULED]

    def in_progress(self) -> list[ExecutionRecord]:
        return [r for r in self.records if r.state == StepState.IN_PROGRESS]

    def waiting(self) -> list[ExecutionRecord]:
        return [r for r in self.records if r.state == StepState.WAITING]

    def pending_steps(self) -> list[str]:
        """Steps whose predecessors are done but whose latest execution failed or was canceled."""
        if self.graph is None:
            return []
        done = self.done_steps()
        latest = self.latest_by_step()
        return [
            name
            for name in self.graph.steps
            if name not in done
            and all(p in done for p in self.graph.predecessors[name])
            and (
                self.pending_items(name)
                if name in self.graph.maps
                else name in latest and not latest[name].is_done and not latest[name].is_active
            )
        ]

    def due_or_failed(self, *, waiting: bool = True) -> list[str]:
        """Steps an operator can skip (or, without the waiting ones, reattempt).

        Scheduled ones, pending ones, and (``waiting``) those waiting for a signal.
        """
        names = [r.step_name for r in self.records if r.state == StepState.SCHEDULED]
        if waiting:
            names += [r.step_name for r in self.waiting()]
        return list(dict.fromkeys(names + self.pending_steps()))

    # -- changes -----------------------------------------------------------------------

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.workflow_changes["state"] = state
            self.workflow_changes["transitioned_at"] = self.now

    def end(
        self,
        record: ExecutionRecord,
        state: str,
        outcome: str,
        *,
        error: ErrorInfo | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Move an execution to a terminal state, stamping its timestamps."""
        record.state = state
        record.outcome = outcome
        record.changes.update(
            state=state, outcome=outcome, finished_at=self.now, updated_at=self.now
        )
        record.changes[f"{state}_at"] = self.now
        if error is not None:
            record.changes.update(
                error_class=error.error_class,
                error_message=error.message,
                error_traceback=error.traceback,
            )
        if metadata:
            record.changes["metadata"] = metadata

    def add(
        self,
        step_name: str,
        *,
        due: datetime,
        consecutive_reattempts: int = 0,
        state: str = StepState.SCHEDULED,
        trigger: bool = True,
        item_index: int | None = None,
    ) -> ExecutionRecord:
        """Create a new execution of ``step_name`` (scheduled unless told otherwise).

        :param state: ``skipped`` or ``completed`` (a map step with no items) create
            it ended.
        :param item_index: the item of a map step it runs for.
        """
        previous = self.latest(step_name, item_index)
        if previous is None:  # a rerun's step numbers on from its superseded rows
            previous = next(
                (
                    r
                    for r in reversed(self.retired)
                    if (r.step_name, r.item_index) == (step_name, item_index)
                ),
                None,
            )
        record = ExecutionRecord(
            id=None,
            step_name=step_name,
            state=state,
            outcome=None,
            scheduled_for=due,
            attempt=previous.attempt + 1 if previous else 1,
            consecutive_reattempts=consecutive_reattempts,
            trigger=trigger and state == StepState.SCHEDULED,
            item_index=item_index,
        )
        if state == StepState.SKIPPED:
            record.outcome = Outcome.SKIPPED
        elif state == StepState.COMPLETED:
            record.outcome = Outcome.SUCCESS
        self.records.append(record)
        return record

    def note(
        self,
        action: str,
        *,
        step: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record an operator action with the change it made (written by ``persist``)."""
        self.actions.append(
            dict(
                action=action,
                step_name=step,
                actor=actor,
                reason=reason,
                detail=detail,
                created_at=self.now,
            )
        )

    def retrigger(self, record: ExecutionRecord) -> None:
        record.trigger = True

    def due_now(self, record: ExecutionRecord) -> None:
        """Move a scheduled execution's due time to now (no trigger by itself)."""
        record.scheduled_for = self.now
        record.changes["scheduled_for"] = self.now

    def cancel_scheduled(self) -> None:
        """Cancel the executions not running: scheduled and waiting ones."""
        for record in self.scheduled() + self.waiting():
            self.end(record, StepState.CANCELED, Outcome.CANCELED)

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

    def settle_state(self) -> None:
        """Set ready/performing from whether any execution is still in progress."""
        if self.state in RUNNABLE_WORKFLOW_STATES:
            busy = bool(self.in_progress())
            self.set_state(WorkflowState.PERFORMING if busy else WorkflowState.READY)

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

    def stop(self, how: str) -> None:
        if not is_ongoing(self.state):
            return
        if how == "cancel":
            self.cancel_scheduled()
            self.set_state(WorkflowState.CANCELED)
        else:
            self.set_state(WorkflowState.PAUSED)

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
