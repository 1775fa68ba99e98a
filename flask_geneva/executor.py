"""Run one step execution: claim → decide → run the body → finalize with the body's writes.

``execute(ext, state, execution_id)`` is the whole job of a Huey trigger. It reads as
its phases, each a function that returns its result:

1. :func:`_claim` — one short transaction: two conditional UPDATEs flip a scheduled,
   due execution to ``in_progress`` and its workflow to ``performing``, and return
   both rows (the read and the claim are one). Of several workers holding the same
   trigger exactly one UPDATE matches, on every database. A trigger that claims
   nothing is looked at once (:func:`_unclaimed`): early, gone, or already run.
2. :func:`_decide` — with nothing locked: a missing class, step or hero, then
   ``cancel_if`` and ``skip_if``. Only the worker that claimed evaluates them. A step
   that waits for a signal then takes it, or becomes ``waiting``, in one change
   through the write path (:func:`_take_signal`). A trigger that reaches a waiting
   execution is its timeout (:func:`_timed_out`).
3. and 4. :func:`~flask_geneva.body.run_body` — the body runs with no lock of the
   library's held, and its outcome is recorded in the transaction that holds what it
   wrote (see :mod:`~flask_geneva.body`). ``KeyboardInterrupt`` (the worker shutting
   down) gives the execution back (:func:`_release`).

The rules of what a result does live in :mod:`~flask_geneva.transitions`; the write
path in :mod:`~flask_geneva.unit`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import make_transient_to_detached

from . import clock
from . import lease
from . import results
from . import signals
from . import store
from . import unit
from .body import Run
from .body import finalize
from .body import run_body
from .errors import StepNotDefinedError
from .errors import UnresolvedReferenceError
from .logging import tagged
from .mapping import set_row_values
from .records import ExecutionRecord
from .records import SignalRecord
from .records import StepResult
from .scheduling import Trigger
from .scheduling import job_priority
from .scheduling import new_task_id
from .signal_rules import NO_TIMEOUT
from .states import RUNNABLE_WORKFLOW_STATES
from .states import StepState
from .steps import evaluate_condition
from .transaction import is_retryable

if TYPE_CHECKING:
    from .extension import Geneva
    from .extension import GenevaState

#: A trigger that arrives this early still runs (clock skew between machines).
EARLY_TOLERANCE = timedelta(seconds=0.5)
#: ``ignore_schedule``: claim whatever the due time.
ANY_TIME = datetime(9999, 1, 1)


@dataclass
class ExecutionReport:
    """What one call to :func:`execute` did."""

    execution_id: int
    workflow_id: int
    step_name: str
    #: ``ran`` (the body ran), ``settled`` (decided before the body: skip, cancel,
    #: pause, a signal's timeout), ``waiting`` (for its signal), ``deferred`` (early
    #: trigger re-sent), ``noop`` (nothing to do).
    status: str
    action: str | None = None
    error: BaseException | None = None


def execute(
    ext: Geneva,
    state: GenevaState,
    execution_id: int,
    *,
    ignore_schedule: bool = False,
    raise_errors: bool = False,
) -> ExecutionReport | None:
    """Run the step execution ``execution_id`` if it is due and still scheduled.

    Safe to call any number of times for the same id: only one call runs the body.

    :param ignore_schedule: run even if ``scheduled_for`` is in the future (test helpers).
    :param raise_errors: re-raise the step's exception after its outcome is committed.
    :return: a report, or None when the execution does not exist.
    """
    run = _claim(ext, execution_id, ignore_schedule)
    if run is None:
        return _unclaimed(ext, state, execution_id)
    report = ExecutionReport(execution_id, run.workflow_id, run.record.step_name, "settled")
    try:
        decided = _decide(ext, run)
        if decided is None and run.step is not None and run.step.wait_for is not None:
            taken = _take_signal(ext, run)
            if taken is not None:
                report.status = report.action = taken
                return report
        if decided is not None:
            report.error = decided.exception
            report.action = finalize(
                ext, run, decided, body_ran=False, in_session=False, exception=decided.exception
            ).action
        else:
            report.status = "ran"
            with lease.beating(ext, run.workflow_id, run.execution_id, run.step):
                report.error, report.action = run_body(ext, run)
    except KeyboardInterrupt:
        # The worker is shutting down mid-step: give the execution back, then stop.
        _release(ext, run)
        raise
    if raise_errors and report.error is not None:
        raise report.error
    return report


def _release(ext: Geneva, run: Run) -> None:
    """Schedule a claimed execution again, now (nothing of its body's was kept)."""
    ext.db.session.rollback()

    def release(snap: unit.Snapshot) -> bool:
        record = snap.transition.get(run.execution_id)
        if record is None or record.state != StepState.IN_PROGRESS:
            return False  # its outcome was committed before the interrupt
        snap.transition.release(record)
        return True

    if unit.change(ext, run.workflow_id, release):
        run.log.warning("worker shutting down mid-step; the execution is scheduled again")


# -- 1. claim -------------------------------------------------------------------------------


def _claim(ext: Geneva, execution_id: int, ignore_schedule: bool) -> Run | None:
    now = clock.now()
    due_by = ANY_TIME if ignore_schedule else now + EARLY_TOLERANCE
    claimed = unit.claim(ext, execution_id, now=now, due_by=due_by)
    if claimed is None or claimed == unit.TAKEN:
        return None
    assert not isinstance(claimed, str)
    row, record = claimed
    cls = ext.registry.get(row["type"])
    log = tagged(
        cls.__name__ if cls is not None else str(row["type"]),
        row["id"],
        row["hero_type"],
        row["hero_id"],
        execution_id=execution_id,
        step_name=record.step_name,
    )
    return Run(row, record, cls, log)


def _unclaimed(ext: Geneva, state: GenevaState, execution_id: int) -> ExecutionReport | None:
    """Say why a trigger claimed nothing, and act on an early one or a stopped workflow."""
    with ext.engine().connect() as conn:
        found = store.read_execution(conn, ext.tables, execution_id)
    if found is None:
        ext.log.info("execution %s not found (deleted?); trigger ignored", execution_id)
        return None
    row, record = found
    report = ExecutionReport(execution_id, row["id"], record.step_name, "noop")
    if record.state == StepState.WAITING:
        return _timed_out(ext, state, row, record, report)
    if record.state != StepState.SCHEDULED:
        return report  # another worker claimed or settled it: a duplicate trigger
    if record.scheduled_for > clock.now() + EARLY_TOLERANCE:
        # Early trigger (an operator moved scheduled_for later, or a clock is skewed):
        # run nothing now and come back when it is due, under the same task id.
        cls = ext.registry.get(row["type"])
        priority = job_priority(cls.__geneva_definition__ if cls else None, row["job_options"])
        task_id = record.huey_task_id or new_task_id()
        state.send([Trigger(execution_id, record.scheduled_for, task_id, priority)])
        report.status = "deferred"
        return report
    if row["state"] in RUNNABLE_WORKFLOW_STATES:
        return report  # raced with a resume or a claim; nothing to do

    def drop(snap: unit.Snapshot) -> str | None:
        # A trigger for a paused (or ended) workflow: the execution alone is canceled;
        # resume creates a fresh one.
        found = snap.transition.get(execution_id)
        if found is None or found.state != StepState.SCHEDULED:
            return None
        if snap.transition.state in RUNNABLE_WORKFLOW_STATES:
            return None
        snap.transition.apply(found, StepResult("drop"), body_ran=False)
        return "drop"

    report.action = unit.change(ext, row["id"], drop)
    if report.action is not None:
        report.status = "settled"
    return report


def _timed_out(
    ext: Geneva,
    state: GenevaState,
    row: dict[str, Any],
    record: ExecutionRecord,
    report: ExecutionReport,
) -> ExecutionReport:
    """A trigger reached a waiting execution: its timeout, if due; apply ``on_timeout``."""
    if record.scheduled_for >= NO_TIMEOUT:
        return report  # waits forever: a stray duplicate trigger
    if record.scheduled_for > clock.now() + EARLY_TOLERANCE:
        cls = ext.registry.get(row["type"])
        priority = job_priority(cls.__geneva_definition__ if cls else None, row["job_options"])
        task_id = record.huey_task_id or new_task_id()
        state.send([Trigger(report.execution_id, record.scheduled_for, task_id, priority)])
        report.status = "deferred"
        return report
    execution_id = report.execution_id

    def time_out(snap: unit.Snapshot) -> str | None:
        transition = snap.transition
        found = transition.get(execution_id)
        if found is None or found.state != StepState.WAITING:
            return None  # its signal came meanwhile
        if transition.state not in RUNNABLE_WORKFLOW_STATES:
            return None  # paused: resume sends the timeout's trigger again
        if found.scheduled_for > transition.now + EARLY_TOLERANCE:
            return None
        step = transition.graph.steps.get(found.step_name) if transition.graph else None
        on_timeout = step.on_timeout if step is not None else "pause"
        waited = step.timeout if step is not None and step.timeout is not None else timedelta(0)
        transition.time_out(found, on_timeout, waited)
        return on_timeout

    report.action = unit.change(ext, row["id"], time_out)
    if report.action is not None:
        report.status = "settled"
        tagged(
            str(row["type"]),
            row["id"],
            row["hero_type"],
            row["hero_id"],
            execution_id=execution_id,
            step_name=record.step_name,
        ).warning("no signal came before the step's timeout; on_timeout=%r", report.action)
    return report


# -- 2. decide before the body --------------------------------------------------------------


def _take_signal(ext: Geneva, run: Run) -> str | None:
    """A step that waits: take its signal (the body then runs), or wait for it.

    Under the workflow lock, so a signal delivered at the same moment is either seen
    here (and consumed) or finds this execution waiting (and wakes it): never both,
    never neither. Returns None when the body runs (``run.workflow.received_signal``
    set), else what was done: ``waiting``, or ``noop`` (the execution was taken from
    this worker meanwhile).
    """
    assert run.step is not None
    step, execution_id = run.step, run.execution_id

    def take(snap: unit.Snapshot) -> tuple[bool, SignalRecord | None] | None:
        record = snap.transition.get(execution_id)
        if record is None or record.state != StepState.IN_PROGRESS:
            return None
        return snap.transition.take_signal(record, step.timeout)

    taken = unit.change(ext, run.workflow_id, take)
    if taken is None:
        return "noop"
    runs, signal = taken
    if not runs:
        run.log.info(
            "waiting for signal %r%s",
            step.wait_for,
            f" (times out in {step.timeout})" if step.timeout is not None else "",
        )
        return "waiting"
    run.workflow.received_signal = signal.public(run.workflow_id) if signal is not None else None
    return None


def _decide(ext: Geneva, run: Run) -> StepResult | None:
    """A result that ends the execution before its body runs, or None to run it."""
    row, cls = run.workflow_row, run.cls
    if cls is None:
        return results.failed(
            UnresolvedReferenceError(
                f"workflow type {row['type']!r} names no workflow class in this process; "
                "workflow paused (deploy the class, or pin its old name with __geneva_type__)",
                workflow_id=run.workflow_id,
                execution_id=run.execution_id,
            )
        )
    definition = cls.__geneva_definition__
    run.step = definition.graph.steps.get(run.record.step_name)
    if run.step is None and definition.skips(run.record.step_name):
        # removed_steps / skip_undefined_steps: skipped, and the workflow carries on
        # with the ready steps of the current graph.
        return StepResult("skip", reason="removed_step")
    if run.step is None:
        return results.failed(
            StepNotDefinedError(
                f"Step '{run.record.step_name}' is not defined in {cls.__name__}; workflow paused",
                workflow_id=run.workflow_id,
                execution_id=run.execution_id,
            )
        )
    run.workflow = _instance(cls, row)
    if row["hero_type"] is not None:
        try:
            with ext.engine().connect() as conn:
                exists = ext.heroes.exists(conn, row["hero_type"], row["hero_id"])
        except LookupError as error:
            return _unresolved(run, f"{error}; workflow paused")
        except (sa.exc.DBAPIError, OverflowError) as error:
            # The database refused the lookup itself (a key out of the column's range, a
            # NUL byte, the hero's table gone): pause on it. An outage is not the row's
            # fault: it goes up, and housekeeping recovers the execution.
            if isinstance(error, sa.exc.DBAPIError) and is_retryable(error):
                raise
            return _unresolved(
                run,
                f"looking up hero {row['hero_type']}:{row['hero_id']!r} failed "
                f"({getattr(error, 'orig', error)}); workflow paused",
            )
        if not exists and not definition.may_proceed_without_hero:
            run.log.info("hero %s:%s is gone; workflow canceled", row["hero_type"], row["hero_id"])
            return StepResult("cancel")
    return _preconditions(ext, run)


def _unresolved(run: Run, message: str) -> StepResult:
    return results.failed(
        UnresolvedReferenceError(
            message, workflow_id=run.workflow_id, execution_id=run.execution_id
        )
    )


def _preconditions(ext: Geneva, run: Run) -> StepResult | None:
    """Evaluate ``cancel_if`` then ``skip_if``; return a result if one decides the step."""
    assert run.step is not None
    definition = run.cls.__geneva_definition__
    started = time.perf_counter()
    outcome, result, error = "passed", None, None
    if definition.cancel_if or run.step.skip_if is not None:
        try:
            if any(evaluate_condition(c, run.workflow) for c in definition.cancel_if):
                outcome, result = "canceled", StepResult("cancel")
            elif run.step.should_skip(run.workflow):
                outcome, result = "skipped", StepResult("skip")
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit, GeneratorExit...: the condition's failure
            outcome, error = "exception", exc
            result = results.from_exception(
                run.workflow,
                run.step,
                run.record.consecutive_reattempts,
                exc,
                "precondition",
                run.log,
            )
    # Conditions only read. End their transaction so the body starts a fresh one, with
    # a snapshot taken after the claim (MariaDB's REPEATABLE READ keeps the first).
    ext.db.session.rollback()
    signals.send(
        signals.precondition_evaluated,
        run.cls,
        run.log,
        workflow_id=run.workflow_id,
        execution_id=run.execution_id,
        step_name=run.record.step_name,
        outcome=outcome,
        exception=error,
        duration=time.perf_counter() - started,
    )
    if result is not None and error is not None:
        result.exception = error
    return result


def _instance(cls: type, values: dict[str, Any]) -> Any:
    """Build a detached instance of ``cls`` from a row already read (no extra query)."""
    instance = cls.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    set_row_values(instance, values)
    make_transient_to_detached(instance)
    return instance
