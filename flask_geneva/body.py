"""Run a claimed step's body, then record its outcome with what the body wrote.

:func:`run_body` is phases 3 and 4 of :mod:`~flask_geneva.executor`:

3. :func:`_perform` — the body runs with no lock of the library's held. What it
   writes through ``db.session`` stays in the session's open transaction. Whatever it
   raises is the step's (``BaseException`` included) except ``KeyboardInterrupt``,
   the worker shutting down, which goes up to the executor.
4. :func:`finalize` — in that same transaction: lock the workflow, let the rules
   record the outcome and schedule successors, commit (the body's writes and the
   outcome together, or neither), then send triggers. A body that raised had its
   writes rolled back first.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import outputs
from . import results
from . import resumable
from . import signals
from . import unit
from .flow import FlowSignal
from .records import ExecutionRecord
from .records import StepResult
from .states import StepState
from .transaction import is_retryable
from .transaction import watching_writes

if TYPE_CHECKING:
    from .extension import Geneva
    from .steps import StepDefinition

#: How many times a body runs when its finalize keeps failing with a deadlock (its
#: writes are rolled back with the outcome each time, so running it again is safe).
BODY_ATTEMPTS = 3


@dataclass
class Run:
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
class Finalized:
    action: str | None = None
    lost: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def run_body(ext: Geneva, run: Run) -> tuple[BaseException | None, str | None]:
    """Run the body and finalize it with its writes; return its error and the action.

    A deadlock (or a dropped connection) at finalize rolls back the body's writes with
    the outcome. If the body wrote, it runs again (its writes are gone, so this is
    safe for the database; outside effects need ``self.idempotency_key``); if it did
    not, only the finalize is tried again. A commit that fails for another reason (a
    constraint checked at commit, an ``on_commit`` hook that raises) is the step's
    exception: its policy applies, flow control or not.
    """
    session = ext.db.session
    performed = _perform(ext, run)
    finalized: Finalized | None = None
    for attempt in range(1, BODY_ATTEMPTS + 1):
        try:
            finalized = finalize(
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
        finalized = finalize(
            ext, run, performed.result, body_ran=True, in_session=False, exception=performed.error
        )
    raised, action = performed.error, finalized.action
    if raised is not None:
        message = performed.result.error.message if performed.result.error else ""
        run.log.warning("step raised %s: %s; %s", type(raised).__name__, message, action)
    else:
        run.log.debug("step ended: %s in %.1f ms", action, performed.duration * 1000)
    return raised, action


def _unrecordable(run: Run, performed: _Performed, error: Exception) -> _Performed:
    """The outcome itself could not be recorded (a due time out of range): pause on it."""
    run.log.error("could not record the step's outcome (%r); workflow paused", error)
    return _Performed(results.failed(error), "exception", error=error, duration=performed.duration)


def _failed_commit(run: Run, performed: _Performed, error: Exception) -> _Performed:
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


def _perform(ext: Geneva, run: Run) -> _Performed:
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
    resumable.begin(workflow, run)
    started = time.perf_counter()
    performed: _Performed
    with watching_writes() as wrote:
        try:
            output: Any = None
            item_count: int | None = None
            try:
                returned = run.step.body(workflow)(**_inputs(ext, run))
                if returned is not None and inspect.isawaitable(returned):
                    _refuse_awaitable(returned)
                signal = _swallowed(run, None)
                if signal is None:
                    config = ext.get_state().config
                    item_count = outputs.checked(
                        returned,
                        run.record.step_name,
                        run.cls.__geneva_definition__.graph,
                        max_bytes=config.max_output_bytes,
                        max_items=config.max_map_items,
                    )
                    output = returned
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
                result = StepResult("success", output=output, item_count=item_count)
                performed = _Performed(result, "completed", keep_writes=keep)
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
            workflow._geneva_resume = None
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
        traceparent=run.workflow_row.get("traceparent"),
    )
    return performed


def _inputs(ext: Geneva, run: Run) -> dict[str, Any]:
    """Set a map item on the workflow; return the body's parameters (ancestors' outputs)."""
    assert run.step is not None
    step, workflow = run.step, run.workflow
    if step.for_each is None and not step.parameters:
        return {}
    conn = ext.db.session.connection(bind_arguments={"mapper": ext.Workflow})
    index = run.record.item_index
    if step.for_each is not None and index is not None:
        workflow.item_index = index
        workflow.item = outputs.item(conn, ext.tables, run.workflow_id, step.for_each, index)
    return {name: workflow.output_of(name) for name in step.parameters}


def _refuse_awaitable(returned: Any) -> None:
    """A body that returned a coroutine did not run it: that is the step's error."""
    close = getattr(returned, "close", None)
    if close is not None:
        close()  # no "never awaited" warning on top of the error
    raise TypeError(
        f"the step returned {type(returned).__name__} {returned!r} instead of running it: "
        "step bodies are plain functions; call async code with asyncio.run(...) inside"
    )


def _swallowed(run: Run, error: BaseException | None) -> FlowSignal | None:
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


def finalize(
    ext: Geneva,
    run: Run,
    result: StepResult,
    *,
    body_ran: bool,
    in_session: bool,
    exception: BaseException | None,
) -> Finalized:
    """Record ``result`` on the claimed execution through the one write path.

    ``in_session``: inside ``db.session``'s transaction, committing the body's writes
    with the outcome; otherwise in a short transaction of its own.
    """
    started = time.perf_counter()
    execution_id = run.execution_id

    def decide(snap: unit.Snapshot) -> Finalized:
        transition = snap.transition
        record = transition.get(execution_id)
        if record is None or record.state != StepState.IN_PROGRESS:
            # Housekeeping recovered it while the body ran (a worker thought lost):
            # this run's outcome, and its writes, are discarded.
            raise unit.Discard(Finalized(lost=record.state if record else "gone"))
        transition.apply(record, result, body_ran=body_ran)
        return Finalized(
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
