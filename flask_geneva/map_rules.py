"""The rules of map steps, as part of :class:`~flask_geneva.transitions.Transition`.

A map step (``@step(for_each="split")``) has one execution per element of the list
its producer returned: an *item*, numbered by its index in that list. Under the
workflow lock:

* when the map step becomes ready, its first items are released (created and
  scheduled), at most ``max_parallel`` at once; an empty list completes the map step
  at once (one row of its own, output ``[]``); a producer that was skipped skips it;
* each time an item ends, the next ones are released to fill the room it left;
  failed or canceled items (after a resume or a reattempt) are released again first;
* the map step is done when every item is completed or skipped (or when its own row
  is: the empty list, or an operator's skip of the whole step).

Done items are not read into the snapshot (a map may have thousands): the snapshot
reads the items not done, and :class:`MapProgress` counts the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .records import ExecutionRecord
from .states import RUNNABLE_WORKFLOW_STATES
from .states import Outcome
from .states import StepState

if TYPE_CHECKING:
    from .graph import StepGraph


@dataclass
class MapProgress:
    """What the snapshot counted of one map step's items (the done ones are not read)."""

    #: Items whose latest execution is completed or skipped.
    done: int = 0
    #: The highest item index that has an execution (-1: none yet).
    highest: int = -1


class MapRules:
    """The map-step rules of a transition (mixed into it; see its other rules there)."""

    graph: StepGraph | None
    state: str
    now: datetime
    records: list[ExecutionRecord]
    maps: dict[str, MapProgress]

    if TYPE_CHECKING:  # provided by Transition

        def latest(
            self, step_name: str, item_index: int | None = None
        ) -> ExecutionRecord | None: ...

        def add(
            self,
            step_name: str,
            *,
            due: datetime,
            consecutive_reattempts: int = 0,
            state: str = StepState.SCHEDULED,
            trigger: bool = True,
            item_index: int | None = None,
        ) -> ExecutionRecord: ...

        def end(self, record: ExecutionRecord, state: str, outcome: str) -> None: ...

    # -- views -------------------------------------------------------------------------

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

    def map_progress(self, step_name: str) -> dict[str, int]:
        """Counts for display: total, done, running, failed, scheduled (of the items)."""
        total = self.item_total(step_name) or 0
        items = self.items(step_name).values()
        progress = self.maps.get(step_name, MapProgress())
        return {
            "total": total,
            "done": progress.done + sum(1 for r in items if r.is_done),
            "running": sum(1 for r in items if r.state == StepState.IN_PROGRESS),
            "failed": sum(1 for r in items if not r.is_done and not r.is_active),
            "scheduled": sum(
                1 for r in items if r.state in (StepState.SCHEDULED, StepState.WAITING)
            ),
        }

    # -- changes -----------------------------------------------------------------------

    def start_map(self, step_name: str) -> None:
        """The map step became ready: release its first items (or end it at once)."""
        assert self.graph is not None
        producer = self.latest(self.graph.maps[step_name])
        if producer is None or producer.state == StepState.SKIPPED:
            # Nothing to map over: the map step is skipped like its producer.
            self.add(step_name, due=self.now, state=StepState.SKIPPED)
            return
        if not producer.item_count:
            # An empty list (or a producer recorded before it was one): done, with [].
            record = self.add(step_name, due=self.now, state=StepState.COMPLETED)
            record.changes["output"] = []
            return
        self.release_items(step_name)

    def release_items(self, step_name: str) -> None:
        """Fill the map step's room (``max_parallel``) with items: pending ones, then new.

        Only while the workflow is runnable: a paused workflow releases nothing, and
        resume releases what is due.
        """
        assert self.graph is not None
        if self.state not in RUNNABLE_WORKFLOW_STATES:
            return
        total = self.item_total(step_name)
        if total is None:
            return
        step = self.graph.steps[step_name]
        items = self.items(step_name)
        active = sum(1 for r in items.values() if r.is_active)
        room = total if step.max_parallel is None else step.max_parallel - active
        if room <= 0:
            return
        progress = self.maps.get(step_name, MapProgress())
        highest = max([progress.highest, *items])
        candidates = self.pending_items(step_name) + list(range(highest + 1, total))
        for index in candidates[:room]:
            self.add(step_name, due=self.now + step.wait, item_index=index)

    def skip_map(self, step_name: str) -> None:
        """An operator skips the whole map step: its waiting items are canceled, it is done.

        Items already running finish and are recorded; the map step's own row
        (``skipped``) makes it done, so its successors run with its output None.
        """
        for record in self.items(step_name).values():
            if record.state in (StepState.SCHEDULED, StepState.WAITING):
                self.end(record, StepState.CANCELED, Outcome.CANCELED)
        self.add(step_name, due=self.now, state=StepState.SKIPPED)
