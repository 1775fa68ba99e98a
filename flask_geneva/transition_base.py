"""The state of a transition and the primitives every rule is built from.

:class:`TransitionBase` holds what a :class:`~flask_geneva.transitions.Transition`
works on (the snapshot of one workflow read under its row lock, and the changes
decided so far), the reads every rule asks (which steps are done, pending, active;
a map step's items) and the small changes they are made of (create or end an
execution, set the workflow's state, note an operator action, trigger again). It
decides nothing by itself. The rules built on it:

* :mod:`~flask_geneva.map_rules`, :mod:`~flask_geneva.signal_rules`,
  :mod:`~flask_geneva.resumable_rules`, :mod:`~flask_geneva.rerun_rules`: one
  mixin each, subclassing this base;
* :mod:`~flask_geneva.transitions`: :class:`~flask_geneva.transitions.Transition`,
  which composes them with the core rules (start, advance, apply, recover, resume,
  release, run_now) and the triggers to send after commit.

The two core rules the mixins call back into, :meth:`TransitionBase.advance` and
:meth:`TransitionBase.resume`, are declared here once and defined by ``Transition``.
"""

from __future__ import annotations

from abc import ABC
from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

from .records import ErrorInfo
from .records import ExecutionRecord
from .records import SignalRecord
from .states import RUNNABLE_WORKFLOW_STATES
from .states import Outcome
from .states import StepState
from .states import WorkflowState
from .states import is_ongoing

if TYPE_CHECKING:
    from .graph import StepGraph


@dataclass
class MapProgress:
    """What the snapshot counted of one map step's items (the done ones are not read)."""

    #: Items whose latest execution is completed or skipped.
    done: int = 0
    #: The highest item index that has an execution (-1: none yet).
    highest: int = -1


class TransitionBase(ABC):
    """A workflow's snapshot, the reads of it and the primitive changes to it.

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

    # -- a map step's items (see map_rules) --------------------------------------------

    def items(self, step_name: str) -> dict[int, ExecutionRecord]:
        """The latest execution of each item of ``step_name`` read or created (not done
        at the snapshot), by item index."""
        found: dict[int, ExecutionRecord] = {}
        for record in self.records:
            if record.step_name == step_name and record.item_index is not None:
                found[record.item_index] = record
        return found

    def item_total(self, step_name: str) -> int | None:
        """How many items the map step has: the length of its producer's list (None: unknown)."""
        assert self.graph is not None
        producer = self.latest(self.graph.maps[step_name])
        return producer.item_count if producer is not None else None

    def map_started(self, step_name: str) -> bool:
        progress = self.maps.get(step_name)
        return (progress is not None and progress.highest >= 0) or bool(self.items(step_name))

    def map_done(self, step_name: str) -> bool:
        """Whether every item is done (or the map step's own row is done)."""
        own = self.latest(step_name)
        if own is not None and own.is_done:
            return True
        total = self.item_total(step_name)
        if total is None or not self.map_started(step_name):
            return False
        progress = self.maps.get(step_name, MapProgress())
        done_now = sum(1 for r in self.items(step_name).values() if r.is_done)
        return progress.done + done_now >= total

    def pending_items(self, step_name: str) -> list[int]:
        """Items whose latest execution failed or was canceled (to run again on resume)."""
        return sorted(
            index
            for index, record in self.items(step_name).items()
            if not record.is_done and not record.is_active
        )

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

    def settle_state(self) -> None:
        """Set ready/performing from whether any execution is still in progress."""
        if self.state in RUNNABLE_WORKFLOW_STATES:
            busy = bool(self.in_progress())
            self.set_state(WorkflowState.PERFORMING if busy else WorkflowState.READY)

    def stop(self, how: str) -> None:
        if not is_ongoing(self.state):
            return
        if how == "cancel":
            self.cancel_scheduled()
            self.set_state(WorkflowState.CANCELED)
        else:
            self.set_state(WorkflowState.PAUSED)

    # -- the core rules, defined by Transition -----------------------------------------

    @abstractmethod
    def advance(self) -> None:
        """Create executions for steps that became ready; finish when all steps are done."""

    @abstractmethod
    def resume(self) -> None:
        """Re-trigger scheduled executions and re-create pending steps, due now."""
