"""The rules of map steps, a mixin of :class:`~flask_geneva.transitions.Transition`.

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
reads the items not done, and :class:`~flask_geneva.transition_base.MapProgress`
counts the others (defined with the reads of the items, in the base; importable from
here too).
"""

from __future__ import annotations

from .states import RUNNABLE_WORKFLOW_STATES
from .states import Outcome
from .states import StepState
from .transition_base import MapProgress
from .transition_base import TransitionBase

__all__ = ["MapProgress", "MapRules"]


class MapRules(TransitionBase):
    """The map-step rules of a transition (mixed into it; see its other rules there).

    The reads of a map step's items (``items``, ``map_done``, ``pending_items``, ...)
    are the base's: the rules of every step ask them.
    """

    # -- views -------------------------------------------------------------------------

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
