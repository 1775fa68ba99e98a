"""The rule of resumable steps, a mixin of :class:`~flask_geneva.transitions.Transition`.

A resumable step's checkpoint that reached ``max_iterations`` or ``max_runtime`` (or
found its worker stopping) ends the execution: its cursor and iterations are stored
with the outcome ``continued`` (state ``completed``, like ``reattempted``), and a new
execution of the same step, for the same map item, is due now, linked to it by
``continues_id``. It gets its own Huey message at the back of the queue, so other work
runs in between. Pure, like the rest of the rules.
"""

from __future__ import annotations

from .records import ExecutionRecord
from .records import StepResult
from .states import Outcome
from .states import StepState
from .states import is_ongoing
from .transition_base import TransitionBase


class ResumableRules(TransitionBase):
    """The continuation rule of a transition (mixed into it)."""

    def continue_step(self, record: ExecutionRecord, result: StepResult) -> None:
        """End ``record`` as ``continued`` with its last cursor; schedule its continuation.

        The continuation keeps the consecutive reattempt count (a continuation is
        progress, not a failure) and is due now; a paused workflow holds it scheduled
        until resume, a canceled or finished one gets none.
        """
        record.changes.update(cursor=result.cursor, iterations=result.iterations)
        self.end(record, StepState.COMPLETED, Outcome.CONTINUED)
        if not is_ongoing(self.state):
            return
        continuation = self.add(
            record.step_name,
            due=self.now,
            consecutive_reattempts=record.consecutive_reattempts,
            item_index=record.item_index,
        )
        continuation.continues_id = record.id
