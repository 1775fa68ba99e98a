"""Run one step execution: claim → decide → run the body → finalize with the body's writes.

``execute(ext, state, execution_id)`` is the whole job of a Huey trigger. It reads as
its phases, each a function that returns its result:

1. :func:`_claim` — one short transaction: two conditional UPDATEs flip a scheduled,
   due execution to ``in_progress`` and its workflow to ``performing``, and return
   both rows (the read and the claim are one). Of several workers holding the same
   trigger exactly one UPDATE matches, on every database. A trigger that claims
   nothing is looked at once (:func:`_unclaimed`): early, gone, or already run.
2. :func:`_decide` — with nothing locked: a missing class, step or hero, then
   ``cancel_if`` and ``skip_if``. Only the worker that claimed evaluates them.
3. :func:`_perform` — the body runs with no lock of the library's held. What it
   writes through ``db.session`` stays in the session's open transaction.
4. :func:`_finalize` — in that same transaction: lock the workflow, let the rules
   record the outcome and schedule successors, commit (the body's writes and the
   outcome together, or neither), then send triggers. A body that raised had its
   writes rolled back first.

The rules of what a result does live in :mod:`~flask_geneva.transitions`; the write
path in :mod:`~flask_geneva.unit`.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from dataclasses import field
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
from .errors import StepNotDefinedError
from .errors import UnresolvedReferenceError
from .flow import FlowSignal
from .logging import tagged
from .records import ExecutionRecord
from .records import StepResult
from .scheduling import Trigger
from .scheduling import new_task_id
from .states import RUNNABLE_WORKFLOW_STATES
from .states import StepState
from .steps import evaluate_condition
from .transaction import is_retryable
from .transaction import watching_writes
from .workflow import set_row_values

if TYPE_CHECKING:
    from .extension import Geneva
    from .extension import GenevaState
    from .steps import StepDefinition

#: A trigger that arrives this early still runs (clock skew between machines).
EARLY_TOLERANCE = timedelta(seconds=0.5)
#: ``ignore_schedule``: claim whatever the due time.
_ANY_TIME = datetime(9999, 1, 1)
#: How many times a body runs when its finalize keeps failing with a deadlock (its
#: writes are rolled back with the outcome each time, so running it again is safe).
BODY_ATTEMPTS = 3


@dataclass
class ExecutionReport:
    """What one call to :func:`execute` did."""

    execution_id: int
    workflow_id: int
    step_name: str
    #: ``ran`` (the body ran), ``settled`` (decided before the body: skip, cancel,
    #: pause), ``deferred`` (early trigger re-sent), ``noop`` (nothing to do).
    status: str
    action: str | None = None
    error: BaseException | None = None


@dataclass
class _Run:
    """A claimed execution and what it runs with."""

    workflow_row: dict[str, Any]
    record: ExecutionRecord
    cls: Any
    log: Any
    step: StepDefinition | None = None
    workflow: Any = None

    @property
    def execution_id(self) -> int:
        assert self.record.id is not None
        return self.record.id

    @property
    def workflow_id(self) -> int:
        return int(self.workflow_row["id"])


@dataclass
class _Performed:
    """How the body ended."""

    result: StepResult
    #: ``completed``, a flow-control action, or ``exception`` (the signal's words).
    outcome: str
    error: BaseException | None = None
    #: The body's writes are still in the session, to commit with the outcome.
    keep_writes: bool = False
    wrote: bool = False
    duration: float = 0.0


@dataclass
class _Finalized:
    action: str | None = None
    lost: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


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
        if decided is not None:
            report.error = decided.exception
            report.action = _finalize(
                ext, run, decided, body_ran=False, in_session=False, exception=decided.exception
            ).action
        else:
            report.status = "ran"
            with lease.beating(ext, run.workflow_id, run.execution_id, run.step):
                _run_body(ext, run, report)
    except KeyboardInterrupt:
        # The worker is shutting down mid-step: give the execution back, then stop.
        _release(ext, run)
        raise
    if raise_errors and report.error is not None:
        raise report.error
    return report


def _release(ext: Geneva, run: _Run) -> None:
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


def _claim(ext: Geneva, execution_id: int, ignore_schedule: bool) -> _Run | None:
    now = clock.now()
    due_by = _ANY_TIME if ignore_schedule else now + EARLY_TOLERANCE
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
    return _Run(row, record, cls, log)


def _unclaimed(ext: Geneva, state: GenevaState, execution_id: int) -> ExecutionReport | None:
    """Say why a trigger claimed nothing, and act on an early one or a stopped workflow."""
    with ext.engine().connect() as conn:
        found = store.read_execution(conn, ext.tables, execution_id)
    if found is None:
        ext.log.info("execution %s not found (deleted?); trigger ignored", execution_id)
        return None
    row, record = found
    report = ExecutionReport(execution_id, row["id"], record.step_name, "noop")
    if record.state != StepState.SCHEDULED:
        return report  # another worker claimed or settled it: a duplicate trigger
    if record.scheduled_for > clock.now() + EARLY_TOLERANCE:
        # Early trigger (an operator moved scheduled_for later, or a clock is skewed):
        # run nothing now and come back when it is due, under the same task id.
        cls = ext.registry.get(row["type"])
        priority = cls.__geneva_definition__.job_options.get("priority") if cls else None
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


# -- 2. decide before the body --------------------------------------------------------------


def _decide(ext: Geneva, run: _Run) -> StepResult | None:
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


def _unresolved(run: _Run, message: str) -> StepResult:
    return results.failed(
        UnresolvedReferenceError(
            message, workflow_id=run.workflow_id, execution_id=run.execution_id
        )
    )


def _preconditions(ext: Geneva, run: _Run) -> StepResult | None:
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


# -- 3. the body, and 4. its finalize -------------------------------------------------------


def _run_body(ext: Geneva, run: _Run, report: ExecutionReport) -> None:
    """Run the body and finalize it with its writes.

    A deadlock (or a dropped connection) at finalize rolls back the body's writes with
    the outcome. If the body wrote, it runs again (its writes are gone, so this is
    safe for the database; outside effects need ``self.idempotency_key``); if it did
    not, only the finalize is tried again. A commit that fails for another reason (a
    constraint checked at commit, an ``on_commit`` hook that raises) is the step's
    exception: its policy applies, flow control or not.
    """
    session = ext.db.session
    performed = _perform(ext, run)
    finalized: _Finalized | None = None
    for attempt in range(1, BODY_ATTEMPTS + 1):
        try:
            finalized = _finalize(
                ext,
                run,
                performed.result,
                body_ran=True,
                in_session=performed.keep_writes,
                exception=performed.error,
            )
            break
        except Exception as error:
            session.rollback()
            if not performed.keep_writes:
                if isinstance(error, sa.exc.DBAPIError):
                    raise  # a short transaction of its own, already retried: an outage
                performed = _unrecordable(run, performed, error)
                break
            if (
                isinstance(error, sa.exc.DBAPIError)
                and is_retryable(error)
                and attempt < BODY_ATTEMPTS
            ):
                time.sleep(0.01 * attempt)
                if performed.wrote:
                    run.log.warning(
                        "finalize failed (%s); the body's writes were rolled back with its "
                        "outcome, so the body runs again",
                        getattr(error, "orig", error),
                    )
                    performed = _perform(ext, run)
                continue
            performed = _failed_commit(run, performed, error)
            break
    if finalized is None:
        finalized = _finalize(
            ext, run, performed.result, body_ran=True, in_session=False, exception=performed.error
        )
    report.error = performed.error
    report.action = finalized.action
    if report.error is not None:
        message = performed.result.error.message if performed.result.error else ""
        run.log.warning(
            "step raised %s: %s; %s", type(report.error).__name__, message, report.action
        )
    else:
        run.log.debug("step ended: %s in %.1f ms", report.action, performed.duration * 1000)


def _unrecordable(run: _Run, performed: _Performed, error: Exception) -> _Performed:
    """The outcome itself could not be recorded (a due time out of range): pause on it."""
    run.log.error("could not record the step's outcome (%r); workflow paused", error)
    return _Performed(results.failed(error), "exception", error=error, duration=performed.duration)


def _failed_commit(run: _Run, performed: _Performed, error: Exception) -> _Performed:
    """The body's writes could not be committed: the commit's error is the step's."""
    assert run.step is not None
    result = results.from_exception(
        run.workflow,
        run.step,
        run.record.consecutive_reattempts,
        error,
        "exception_policy",
        run.log,
    )
    return _Performed(result, "exception", error=error, duration=performed.duration)


def _perform(ext: Geneva, run: _Run) -> _Performed:
    """Run the body; flush its writes. Its exception is rolled back and resolved by policy.

    Any exception is the step's, ``BaseException`` included (``SystemExit`` from
    ``sys.exit()``, ``GeneratorExit``): recorded, its policy applied, the worker thread
    kept. ``KeyboardInterrupt`` alone means the worker is shutting down: it goes up
    to :func:`execute`, which gives the execution back.
    """
    assert run.step is not None
    session = ext.db.session
    workflow = run.workflow
    run.log.debug("step started")
    workflow._geneva_context = run.log
    workflow._geneva_step = run.record.step_name
    workflow._geneva_flow = None
    started = time.perf_counter()
    performed: _Performed
    with watching_writes() as wrote:
        try:
            try:
                returned = run.step.body(workflow)()
                if returned is not None and inspect.isawaitable(returned):
                    _refuse_awaitable(returned)
                signal = _swallowed(run, None)
            except FlowSignal as raised:
                signal, workflow._geneva_flow = raised, None
            # The body's writes are flushed here, so a constraint they break is the
            # body's exception (its policy applies), not a failed finalize.
            session.flush()
            # A body that wrote finalizes inside its own transaction, so its writes
            # commit with the outcome; one that only read ends its transaction here and
            # finalizes in a short one of its own (lighter than the ORM session's).
            keep = wrote[0]
            if not keep:
                session.rollback()
            if signal is None:
                performed = _Performed(StepResult("success"), "completed", keep_writes=keep)
            else:
                result = results.from_signal(signal, None, "flow_control")
                performed = _Performed(result, signal.action, keep_writes=keep)
        except KeyboardInterrupt:
            session.rollback()
            raise
        except BaseException as exc:
            session.rollback()
            signal = _swallowed(run, exc)
            if signal is not None:
                performed = _Performed(
                    results.from_signal(signal, None, "flow_control"), signal.action
                )
            else:
                result = results.from_exception(
                    workflow,
                    run.step,
                    run.record.consecutive_reattempts,
                    exc,
                    "exception_policy",
                    run.log,
                )
                performed = _Performed(result, "exception", error=exc)
        finally:
            workflow._geneva_context = None
            workflow._geneva_step = None
    performed.wrote = wrote[0]
    performed.duration = time.perf_counter() - started
    signals.send(
        signals.step_performed,
        run.cls,
        run.log,
        workflow_id=run.workflow_id,
        execution_id=run.execution_id,
        step_name=run.record.step_name,
        outcome=performed.outcome,
        exception=performed.error,
        duration=performed.duration,
    )
    return performed


def _refuse_awaitable(returned: Any) -> None:
    """A body that returned a coroutine did not run it: that is the step's error."""
    close = getattr(returned, "close", None)
    if close is not None:
        close()  # no "never awaited" warning on top of the error
    raise TypeError(
        f"the step returned {type(returned).__name__} {returned!r} instead of running it: "
        "step bodies are plain functions; call async code with asyncio.run(...) inside"
    )


def _swallowed(run: _Run, error: BaseException | None) -> FlowSignal | None:
    """The flow-control call the body made and then caught itself, if it did.

    ``self.cancel()`` inside a bare ``except:`` still cancels: the call is what the
    body asked for. It also wins over an exception the body raised after it.
    """
    signal: FlowSignal | None = run.workflow._geneva_flow
    run.workflow._geneva_flow = None
    if signal is None:
        return None
    if error is None:
        run.log.warning(
            "the body caught its own %s() and returned; applying it anyway", signal.action
        )
    else:
        run.log.warning(
            "the body caught its own %s() and then raised %s; applying %s()",
            signal.action,
            type(error).__name__,
            signal.action,
        )
    return signal


def _finalize(
    ext: Geneva,
    run: _Run,
    result: StepResult,
    *,
    body_ran: bool,
    in_session: bool,
    exception: BaseException | None,
) -> _Finalized:
    """Record ``result`` on the claimed execution through the one write path.

    ``in_session``: inside ``db.session``'s transaction, committing the body's writes
    with the outcome; otherwise in a short transaction of its own.
    """
    started = time.perf_counter()
    execution_id = run.execution_id

    def decide(snap: unit.Snapshot) -> _Finalized:
        transition = snap.transition
        record = transition.get(execution_id)
        if record is None or record.state != StepState.IN_PROGRESS:
            # Housekeeping recovered it while the body ran (a worker thought lost):
            # this run's outcome, and its writes, are discarded.
            raise unit.Discard(_Finalized(lost=record.state if record else "gone"))
        transition.apply(record, result, body_ran=body_ran)
        return _Finalized(
            action=result.action,
            details=dict(
                workflow_state=transition.state, step_state=record.state, outcome=record.outcome
            ),
        )

    if in_session:
        finalized = unit.change_in_session(ext, ext.db.session, run.workflow_id, decide)
    else:
        finalized = unit.change(ext, run.workflow_id, decide)
    if finalized.lost is not None:
        run.log.warning(
            "execution changed to %s while its body ran (recovered by housekeeping?); "
            "this run's outcome and writes are discarded",
            finalized.lost,
        )
        return finalized
    signals.send(
        signals.step_finalized,
        run.cls,
        run.log,
        workflow_id=run.workflow_id,
        execution_id=execution_id,
        step_name=run.record.step_name,
        exception=exception,
        duration=time.perf_counter() - started,
        **finalized.details,
    )
    if result.error is not None and result.action == "failed":
        run.log.error("step failed with %s: %s", result.error.error_class, result.error.message)
    return finalized


def _instance(cls: type, values: dict[str, Any]) -> Any:
    """Build a detached instance of ``cls`` from a row already read (no extra query)."""
    instance = cls.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    set_row_values(instance, values)
    make_transient_to_detached(instance)
    return instance
