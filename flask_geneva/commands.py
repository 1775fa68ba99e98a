"""The operator rules: what pause, resume, cancel, skip, reattempt, resume_at and rerun_from do.

Pure, like :mod:`~flask_geneva.transitions` (whose :class:`Transition` they change):
the unit of work (:mod:`~flask_geneva.unit`) calls :func:`command` under the workflow
row lock; :mod:`~flask_geneva.operations` only validates input and loops over ids; the
admin draws its buttons from :func:`available` so a button shows exactly when the
command would be accepted. Every command is recorded with who gave it and why
(:meth:`~flask_geneva.transitions.Transition.note`), in the same transaction.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidStateError
from .rerun_rules import REFUSED_STATE
from .rerun_rules import RERUN_STATES
from .states import Outcome
from .states import StepState
from .states import WorkflowState
from .transitions import Transition

#: The operator commands and the workflow states each is allowed from.
ALLOWED: dict[str, frozenset[str]] = {
    "pause": frozenset({WorkflowState.READY, WorkflowState.PERFORMING}),
    "resume": frozenset({WorkflowState.PAUSED}),
    "cancel": frozenset({WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED}),
    "skip": frozenset({WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED}),
    "reattempt": frozenset({WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED}),
    "resume_at": frozenset({WorkflowState.PAUSED}),
    "rerun_from": RERUN_STATES,
}

#: Commands that need the workflow's class (its graph) to decide.
NEEDS_GRAPH = frozenset({"resume", "skip", "reattempt", "resume_at", "rerun_from"})
#: Commands that always name their step.
NEEDS_STEP = frozenset({"resume_at", "rerun_from"})

_REFUSED = {
    "pause": "Cannot pause a {state} workflow",
    "resume": "Cannot resume a {state} workflow",
    "cancel": "Cannot cancel a {state} workflow",
    "skip": "Cannot skip on a {state} workflow",
    "reattempt": "Cannot reattempt on a {state} workflow",
    "resume_at": "Cannot resume a {state} workflow at a step (only a paused one)",
    "rerun_from": REFUSED_STATE,
}


def check(operation: str) -> None:
    """Raise ``ValueError`` for a name that is not a command."""
    if operation not in ALLOWED:
        raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(ALLOWED)}")


def command(
    transition: Transition,
    operation: str,
    step: str | None = None,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any] | None:
    """Apply an operator command to ``transition``; return what it changed, if anything.

    The command is noted (``actor``, ``reason``, the step it targeted) with what it
    changed: the returned detail.

    :raises InvalidStateError: not allowed in the current state, or ``step`` is missing,
        unknown, or neither due nor failed.
    """
    check(operation)
    if transition.state not in ALLOWED[operation]:
        raise InvalidStateError(_REFUSED[operation].format(state=transition.state))
    target, detail = _apply(transition, operation, step)
    transition.note(operation, step=target, actor=actor, reason=reason, detail=detail)
    return detail


def _apply(
    transition: Transition, operation: str, step: str | None
) -> tuple[str | None, dict[str, Any] | None]:
    if operation == "pause":
        transition.set_state(WorkflowState.PAUSED)
        return None, None
    if operation == "cancel":
        canceled = sorted({r.step_name for r in transition.scheduled() + transition.waiting()})
        transition.cancel_scheduled()
        transition.set_state(WorkflowState.CANCELED)
        return None, {"canceled": canceled} if canceled else None
    if operation == "resume":
        transition.resume()
        return None, None
    if operation in NEEDS_STEP:
        if step is None:
            raise InvalidStateError(f"Cannot {operation.replace('_', ' ')}: name the step")
        if operation == "resume_at":
            skipped = transition.resume_at(step)
            return step, {"skipped": skipped} if skipped else None
        plan = transition.rerun_from(step)
        return step, {"rerun": list(plan.rerun)}
    target = _target(transition, operation, step)
    _skip_or_reattempt(transition, operation, target)
    return target, None


def available(transition: Transition) -> dict[str, list[str]]:
    """The commands allowed now → the steps each may target (``[]``: no step needed)."""
    found: dict[str, list[str]] = {}
    for operation in ("pause", "resume", "cancel"):
        if transition.state in ALLOWED[operation] and (
            operation not in NEEDS_GRAPH or transition.graph is not None
        ):
            found[operation] = []
    for operation in ("skip", "reattempt"):
        candidates = _candidates(transition, operation) if transition.graph is not None else []
        if transition.state in ALLOWED[operation] and candidates:
            found[operation] = candidates
    graph = transition.graph
    if graph is not None and transition.state in ALLOWED["resume_at"]:
        found["resume_at"] = list(graph.steps)
    if graph is not None and transition.state in ALLOWED["rerun_from"]:
        steps = [name for name in graph.steps if transition.rerun_plan(name).allowed]
        if steps:
            found["rerun_from"] = steps
    return found


def _candidates(transition: Transition, operation: str) -> list[str]:
    # A waiting step can be skipped, not reattempted: run now, it would wait again for
    # the signal it has not got. Send the signal instead (or skip the step).
    return transition.due_or_failed(waiting=operation == "skip")


def _target(transition: Transition, operation: str, step: str | None) -> str:
    candidates = _candidates(transition, operation)
    if step is None:
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise InvalidStateError(f"Cannot {operation}: no step is due or failed")
        raise InvalidStateError(
            f"Cannot {operation}: several steps are due or failed "
            f"({', '.join(candidates)}); name the step"
        )
    assert transition.graph is not None
    if step not in transition.graph:
        raise InvalidStateError(f"Cannot {operation}: the workflow has no step {step!r}")
    if step not in candidates:
        latest = transition.latest(step)
        if latest is not None and latest.state == StepState.WAITING:
            raise InvalidStateError(
                f"Cannot {operation} step {step!r}: it is waiting for a signal; send the "
                "signal, or skip the step"
            )
        raise InvalidStateError(f"Cannot {operation} step {step!r}: it is not due or failed")
    return step


def _skip_or_reattempt(transition: Transition, operation: str, step: str) -> None:
    assert transition.graph is not None
    if step in transition.graph.maps:
        _skip_or_reattempt_map(transition, operation, step)
        return
    latest = transition.latest(step)
    scheduled = latest is not None and latest.state == StepState.SCHEDULED
    if operation == "skip" and latest is not None and latest.state == StepState.WAITING:
        scheduled = True  # skipped where it waits (its signal, if one comes, stays pending)
    if operation == "skip":
        if latest is not None and scheduled:
            transition.end(latest, StepState.SKIPPED, Outcome.SKIPPED)
        else:
            transition.add(step, due=transition.now, state=StepState.SKIPPED)
    elif latest is not None and scheduled:
        transition.due_now(latest)
        transition.retrigger(latest)
    else:
        transition.add(step, due=transition.now)
    if transition.state == WorkflowState.PAUSED:
        transition.resume()
    else:
        transition.advance()
        transition.settle_state()


def _skip_or_reattempt_map(transition: Transition, operation: str, step: str) -> None:
    """Skip a whole map step, or reattempt its failed items (and run its due ones now).

    Skip: its scheduled items are canceled and the step counts as skipped (its
    successors run; its output is None); items already running finish. Reattempt: only
    the items that failed or were canceled run again, within ``max_parallel``; the
    items done stay done.
    """
    if operation == "skip":
        transition.skip_map(step)
    else:
        for record in transition.items(step).values():
            if record.state == StepState.SCHEDULED:
                transition.due_now(record)
                transition.retrigger(record)
    if transition.state == WorkflowState.PAUSED:
        transition.resume()  # releases the failed items again
    else:
        transition.advance()
        transition.settle_state()
