"""The rules of ``resume_at`` and ``rerun_from``, part of the :class:`Transition`.

Two operator escape hatches, decided under the workflow lock like every other change:

* **resume at a step** (a paused workflow, for instance one stranded on a step a deploy
  removed): the workflow goes on from that step and nowhere else. What is scheduled
  or waiting is ended (executions of steps the class no longer defines are canceled);
  every step of the graph that is not done and does not come after the target is
  recorded as skipped, so the workflow can finish; the target is scheduled now.
* **rerun from a step** (a paused, finished or canceled workflow): the step and all
  its descendants get new executions. Their old rows stay as history, marked
  ``superseded_at`` (:meth:`RerunRules.supersede`), and the rules, the outputs and the
  map counts read only the rows that are not; the ancestors keep their completed
  executions and outputs. Then the workflow is resumed: ready again, its failed or
  canceled steps elsewhere run again too.

:meth:`RerunRules.rerun_plan` says what a rerun would do without doing it: the admin's
preview and ``wf.rerun_plan()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING

from .errors import InvalidStateError
from .map_rules import MapRules
from .states import Outcome
from .states import StepState
from .states import WorkflowState

if TYPE_CHECKING:
    from .graph import StepGraph

#: The workflow states a rerun is allowed from.
RERUN_STATES = frozenset({WorkflowState.PAUSED, WorkflowState.FINISHED, WorkflowState.CANCELED})
#: Why a rerun is refused in any other state (``{state}``: the workflow's).
REFUSED_STATE = (
    "Cannot rerun a {state} workflow (only a paused, finished or canceled one: pause it first)"
)


@dataclass(frozen=True)
class RerunPlan:
    """What ``rerun_from(step)`` would do to one workflow, decided without changing it."""

    step: str
    #: The step and its descendants, in an order where each follows its predecessors.
    rerun: tuple[str, ...]
    #: The steps that are done and stay done (the ancestors among them keep their outputs).
    kept: tuple[str, ...]
    #: Steps of the rerun whose scheduled or waiting execution would be canceled.
    canceled: tuple[str, ...] = ()
    #: Why the rerun would be refused now (None: it would be accepted).
    problem: str | None = None
    #: The workflow's state when the plan was made.
    state: str = field(default="")

    @property
    def allowed(self) -> bool:
        return self.problem is None


class RerunRules(MapRules):
    """The rerun and resume-at rules of a transition (mixed into it).

    On the map rules: going on from a step starts or skips a map step as a whole.
    """

    # -- rerun -------------------------------------------------------------------------

    def rerun_plan(self, step: str) -> RerunPlan:
        """What a rerun from ``step`` would re-run, keep and cancel, and whether it may.

        :raises InvalidStateError: the class has no step ``step``.
        """
        graph = self._graph_with(step, "rerun")
        reach = {step} | graph.descendants[step]
        rerun = tuple(name for name in graph.topological_order if name in reach)
        done = self.done_steps()
        kept = tuple(name for name in graph.steps if name in done and name not in reach)
        canceled = tuple(
            dict.fromkeys(
                r.step_name
                for r in self.records
                if r.step_name in reach and r.state in (StepState.SCHEDULED, StepState.WAITING)
            )
        )
        return RerunPlan(
            step, rerun, kept, canceled, problem=self._rerun_problem(step, reach), state=self.state
        )

    def _rerun_problem(self, step: str, reach: set[str]) -> str | None:
        assert self.graph is not None
        if self.state not in RERUN_STATES:
            return REFUSED_STATE.format(state=self.state)
        running = sorted(
            {r.step_name for r in self.records if r.state == StepState.IN_PROGRESS} & reach
        )
        if running:
            return f"Cannot rerun from {step!r}: step {running[0]!r} is running; wait for it to end"
        waiting_on = sorted(self.graph.ancestors[step] - self.done_steps())
        if waiting_on:
            return (
                f"Cannot rerun from {step!r}: it has not run yet ({', '.join(waiting_on)} "
                "before it not done); resume the workflow, or rerun from an earlier step"
            )
        return None

    def rerun_from(self, step: str) -> RerunPlan:
        """Re-run ``step`` and its descendants with new executions; resume the workflow.

        :raises InvalidStateError: see :meth:`rerun_plan`'s ``problem``.
        """
        plan = self.rerun_plan(step)
        if plan.problem is not None:
            raise InvalidStateError(plan.problem)
        self.supersede(plan.rerun)
        self.resume()  # ready again; the step is ready (its ancestors are done)
        return plan

    def supersede(self, steps: tuple[str, ...]) -> None:
        """Retire every row of ``steps``: active ones are canceled, all marked superseded.

        The rows stay (history); from now on the rules see these steps as never run.
        """
        for record in [r for r in self.records if r.step_name in steps]:
            if record.state in (StepState.SCHEDULED, StepState.WAITING):
                self.end(record, StepState.CANCELED, Outcome.CANCELED)
            self.records.remove(record)
            self.retired.append(record)
        for name in steps:
            self.maps.pop(name, None)
        self.superseded.update(steps)

    # -- resume at ---------------------------------------------------------------------

    def resume_at(self, step: str) -> list[str]:
        """Go on from ``step`` in a paused workflow; return the steps recorded as skipped.

        :raises InvalidStateError: not paused, no such step, or an execution is running.
        """
        graph = self._graph_with(step, "resume at")
        if self.state != WorkflowState.PAUSED:
            raise InvalidStateError(f"Cannot resume a {self.state} workflow at a step")
        running = sorted({r.step_name for r in self.records if r.state == StepState.IN_PROGRESS})
        if running:
            raise InvalidStateError(
                f"Cannot resume at {step!r}: step {running[0]!r} is running; wait for it to end"
            )
        after = graph.descendants[step]
        done = self.done_steps()
        for record in list(self.records):
            if record.state not in (StepState.SCHEDULED, StepState.WAITING):
                continue
            if record.step_name not in graph:
                self.end(record, StepState.CANCELED, Outcome.CANCELED)  # a vanished step
            elif record.step_name != step and record.step_name not in after:
                if record.item_index is None:
                    self.end(record, StepState.SKIPPED, Outcome.SKIPPED)
        skipped = [
            name
            for name in graph.topological_order
            if name != step and name not in after and name not in done
        ]
        for name in skipped:
            latest = self.latest(name)
            if name in graph.maps:
                self.skip_map(name)
            elif latest is None or latest.state != StepState.SKIPPED:
                self.add(name, due=self.now, state=StepState.SKIPPED)
        self._schedule_now(step)
        self.set_state(WorkflowState.READY)
        self.advance()
        self.settle_state()
        return skipped

    def _schedule_now(self, step: str) -> None:
        assert self.graph is not None
        if step in self.graph.maps:
            if not self.map_started(step):
                self.start_map(step)
            return  # its failed items are released again by advance (the room they left)
        latest = self.latest(step)
        if latest is not None and latest.state == StepState.SCHEDULED:
            self.due_now(latest)
            self.retrigger(latest)
        elif latest is not None and latest.state == StepState.WAITING:
            self.retrigger(latest)  # it goes on waiting for its signal
        else:
            self.add(step, due=self.now)

    def _graph_with(self, step: str, what: str) -> StepGraph:
        if self.graph is None:
            raise InvalidStateError(f"Cannot {what}: the workflow's class is not loaded")
        if step not in self.graph:
            raise InvalidStateError(
                f"Cannot {what} {step!r}: the workflow has no step {step!r} (its steps: "
                f"{', '.join(self.graph.steps)})"
            )
        return self.graph
