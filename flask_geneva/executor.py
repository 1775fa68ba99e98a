"""Run one step execution: claim (locked) → run the body (unlocked) → finalize (locked).

``execute(ext, execution_id)`` is the whole job of a Huey trigger. Nothing else lives
here: the rules of what a result does are in :mod:`~flask_geneva.transitions`, the SQL
in :mod:`~flask_geneva.store`.

Why three phases: a step body may take minutes and call other services, so it runs
with no transaction open and no lock held. The claim is a short transaction that
flips the execution from ``scheduled`` to ``in_progress`` with a conditional UPDATE
(``WHERE state = 'scheduled'``), after updating the workflow row (which takes its
lock first, keeping the workflow-then-execution lock order). Two workers holding the
same trigger (duplicate delivery, a re-trigger racing the original) both try; exactly
one UPDATE matches, the other sees rowcount 0 and does nothing, so a body runs once
per execution, even on SQLite, where ``FOR UPDATE`` does not exist. Finalize is a
second short transaction under the workflow row lock: it re-reads the executions (a
sibling branch may have finished meanwhile), records the outcome and creates the
successors that became ready. Triggers are sent only after each commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.orm import make_transient_to_detached

from . import clock
from . import results
from . import signals
from . import store
from .errors import StepNotDefinedError
from .errors import UnresolvedReferenceError
from .flow import FlowSignal
from .logging import tagged
from .scheduling import Trigger
from .scheduling import new_task_id
from .states import RUNNABLE_WORKFLOW_STATES
from .states import StepState
from .steps import evaluate_condition
from .transaction import run_locked
from .transitions import StepResult
from .transitions import Transition
from .workflow import set_row_values

if TYPE_CHECKING:
    from .extension import Geneva
    from .extension import GenevaState
    from .steps import StepDefinition

#: A trigger that arrives this early still runs (clock skew between machines).
EARLY_TOLERANCE_SECONDS = 0.5


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


class _Claim:
    """Everything read before the claim: the execution, its workflow, the step."""

    def __init__(self, row: Any) -> None:
        m = row._mapping
        self.execution_id: int = m["e_id"]
        self.workflow_id: int = m["id"]
        self.step_name: str = m["e_step_name"]
        self.state: str = m["e_state"]
        self.scheduled_for = m["e_scheduled_for"]
        self.consecutive_reattempts: int = m["e_consecutive_reattempts"]
        self.workflow_values = {k: v for k, v in m.items() if not k.startswith("e_")}


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
    tables = ext.tables
    engine = ext.engine()
    with _read_connection(engine) as conn:
        row = conn.execute(tables.claim_read, {"p_eid": execution_id}).first()
        hero_exists = _hero_exists(ext, conn, row)
    if row is None:
        ext.log.info("execution %s not found (deleted?); trigger ignored", execution_id)
        return None
    claim = _Claim(row)
    values = claim.workflow_values
    report = ExecutionReport(execution_id, claim.workflow_id, claim.step_name, "noop")
    if claim.state != StepState.SCHEDULED:
        return report

    now = clock.now()
    lateness = (claim.scheduled_for - now).total_seconds()
    if not ignore_schedule and lateness > EARLY_TOLERANCE_SECONDS:
        # Early trigger (an operator moved scheduled_for later, or a clock is skewed):
        # run nothing now and come back when it is due.
        state.send([Trigger(execution_id, claim.scheduled_for, new_task_id(), None)])
        report.status = "deferred"
        return report

    cls = ext.registry.get(values["type"])
    class_name = cls.__name__ if cls is not None else str(values["type"])
    log = tagged(
        class_name,
        claim.workflow_id,
        values["hero_type"],
        values["hero_id"],
        execution_id=execution_id,
        step_name=claim.step_name,
    )
    if values["state"] not in RUNNABLE_WORKFLOW_STATES:
        return _settle(ext, state, claim, None, StepResult("drop"), report, log)

    # -- preconditions, evaluated before any lock is taken ---------------------------------
    if cls is None:
        missing: Exception = UnresolvedReferenceError(
            f"workflow type {values['type']!r} names no workflow class in this process; "
            "workflow paused (deploy the class, or pin its old name with __geneva_type__)",
            workflow_id=claim.workflow_id,
            execution_id=execution_id,
        )
        return _settle(ext, state, claim, None, results.failed(missing), report, log)
    definition = cls.__geneva_definition__
    step = definition.graph.steps.get(claim.step_name)
    if step is None:
        missing = StepNotDefinedError(
            f"Step '{claim.step_name}' is not defined in {cls.__name__}; workflow paused",
            workflow_id=claim.workflow_id,
            execution_id=execution_id,
        )
        return _settle(ext, state, claim, cls, results.failed(missing), report, log)

    workflow = _instance(cls, values)
    if isinstance(hero_exists, LookupError):
        missing = UnresolvedReferenceError(
            f"{hero_exists}; workflow paused",
            workflow_id=claim.workflow_id,
            execution_id=execution_id,
        )
        return _settle(ext, state, claim, cls, results.failed(missing), report, log)
    if hero_exists is False and not definition.may_proceed_without_hero:
        log.info("hero %s:%s is gone; workflow canceled", values["hero_type"], values["hero_id"])
        return _settle(ext, state, claim, cls, StepResult("cancel"), report, log)

    if definition.cancel_if or step.skip_if is not None:
        result = _preconditions(ext, cls, workflow, step, claim, log)
        if result is not None:
            _settle(ext, state, claim, cls, result, report, log)
            if raise_errors and report.error is not None:
                raise report.error
            return report

    # -- claim -----------------------------------------------------------------------------
    try:
        claimed = run_locked(engine, lambda conn: _claim(conn, tables, claim))
    except _NotClaimed:
        return report  # another worker claimed it first: a duplicate trigger
    if not claimed:
        # The workflow stopped being runnable (paused, canceled) since it was read.
        return _settle(ext, state, claim, cls, StepResult("drop"), report, log)

    # -- run the body with nothing held ----------------------------------------------------
    log.debug("step started")
    workflow._geneva_context = log
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        step.body(workflow)()
        ext.db.session.commit()
        result, outcome = StepResult("success"), "completed"
    except FlowSignal as signal:
        ext.db.session.commit()
        result, outcome = results.from_signal(signal, None, "flow_control"), signal.action
    except Exception as exc:
        ext.db.session.rollback()
        error, outcome = exc, "exception"
        result = results.from_exception(
            workflow, step, claim.consecutive_reattempts, exc, "exception_policy", log
        )
    finally:
        workflow._geneva_context = None
    duration = time.perf_counter() - started
    signals.step_performed.send(
        cls,
        workflow_id=claim.workflow_id,
        execution_id=execution_id,
        step_name=claim.step_name,
        outcome=outcome,
        exception=error,
        duration=duration,
    )
    report.status = "ran"
    report.error = error
    _finalize(ext, state, claim, cls, result, report, log, expect=StepState.IN_PROGRESS)
    if error is not None:
        log.warning("step raised %s: %s; %s", type(error).__name__, error, report.action)
    else:
        log.debug("step ended: %s in %.1f ms", report.action, duration * 1000)
    if raise_errors and error is not None:
        raise error
    return report


def _preconditions(
    ext: Geneva, cls: Any, workflow: Any, step: StepDefinition, claim: _Claim, log: Any
) -> StepResult | None:
    """Evaluate ``cancel_if`` then ``skip_if``; return a result if one decides the step."""
    definition = cls.__geneva_definition__
    started = time.perf_counter()
    outcome, result, error = "passed", None, None
    try:
        if any(evaluate_condition(c, workflow) for c in definition.cancel_if):
            outcome, result = "canceled", StepResult("cancel")
        elif step.should_skip(workflow):
            outcome, result = "skipped", StepResult("skip")
    except Exception as exc:
        outcome, error = "exception", exc
        result = results.from_exception(
            workflow, step, claim.consecutive_reattempts, exc, "precondition", log
        )
    finally:
        # Conditions only read. End their transaction so the step body starts a fresh
        # one (on SQLite an old read snapshot cannot be upgraded to a write).
        ext.db.session.rollback()
    signals.precondition_evaluated.send(
        cls,
        workflow_id=claim.workflow_id,
        execution_id=claim.execution_id,
        step_name=claim.step_name,
        outcome=outcome,
        exception=error,
        duration=time.perf_counter() - started,
    )
    if result is not None and error is not None:
        result.exception = error
    return result


def _claim(conn: Connection, tables: store.Tables, claim: _Claim) -> bool:
    outcome = store.claim(conn, tables, claim.workflow_id, claim.execution_id, clock.now())
    if outcome == "taken":
        raise _NotClaimed()  # roll back the workflow update too
    return outcome == "claimed"


@contextmanager
def _read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for the unlocked reads before the claim.

    On PostgreSQL and SQLite it runs in driver autocommit, so the reads cost one round
    trip each instead of BEGIN, SELECT, ROLLBACK. (MySQL drivers would pay two extra
    round trips to switch autocommit on and off, so MySQL keeps its default.)
    """
    with engine.connect() as conn:
        if engine.dialect.name in ("postgresql", "sqlite"):
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


def _hero_exists(ext: Geneva, conn: Connection, row: Any) -> bool | None | LookupError:
    """Whether the workflow's hero row exists; None without a hero; the error if its
    model is unknown."""
    if row is None or row.hero_type is None or row.e_state != StepState.SCHEDULED:
        return None
    try:
        return ext.heroes.exists(conn, row.hero_type, row.hero_id)
    except LookupError as error:
        return error


class _NotClaimed(Exception):
    """Raised inside the claim transaction to roll it back: someone else claimed first."""


def _settle(
    ext: Geneva,
    state: GenevaState,
    claim: _Claim,
    cls: type | None,
    result: StepResult,
    report: ExecutionReport,
    log: Any,
) -> ExecutionReport:
    """Record a result decided before the body ran (the execution is still scheduled)."""
    report.status = "settled"
    report.error = result.exception
    _finalize(ext, state, claim, cls, result, report, log, expect=StepState.SCHEDULED)
    if report.action is None:
        # Another worker claimed or settled the execution first; nothing was recorded.
        report.status = "noop"
    return report


def _finalize(
    ext: Geneva,
    state: GenevaState,
    claim: _Claim,
    cls: Any,
    result: StepResult,
    report: ExecutionReport,
    log: Any,
    *,
    expect: str,
) -> None:
    tables = ext.tables
    graph = cls.__geneva_definition__.graph if cls is not None else None
    priority = cls.__geneva_definition__.job_options.get("priority") if cls is not None else None
    started = time.perf_counter()
    outcome: dict[str, Any] = {}

    def work(conn: Connection) -> list[Trigger]:
        outcome.clear()
        workflow = store.lock_workflow(conn, tables, claim.workflow_id)
        if workflow is None:
            return []
        transition = Transition(
            graph,
            workflow["state"],
            store.load_records(conn, tables, claim.workflow_id),
            clock.now(),
            priority=priority,
        )
        record = transition.get(claim.execution_id)
        if record is None or record.state != expect:
            outcome["lost"] = None if record is None else record.state
            return []
        applied = result
        if expect == StepState.SCHEDULED and transition.state not in RUNNABLE_WORKFLOW_STATES:
            # Decided before the claim, but the workflow was paused or ended meanwhile:
            # the execution alone is canceled; resume will create a fresh one.
            applied = StepResult("drop")
        transition.apply(record, applied)
        triggers = store.persist(conn, tables, claim.workflow_id, transition)
        outcome.update(
            action=applied.action,
            workflow_state=transition.state,
            step_state=record.state,
            outcome=record.outcome,
        )
        return triggers

    triggers = run_locked(ext.engine(), work)
    state.send(triggers)
    if "lost" in outcome:
        if expect == StepState.IN_PROGRESS:
            log.warning(
                "execution changed to %s while its body ran (recovered by housekeeping?); "
                "this run's outcome is discarded",
                outcome["lost"],
            )
        return
    report.action = outcome.get("action")
    signals.step_finalized.send(
        cls,
        workflow_id=claim.workflow_id,
        execution_id=claim.execution_id,
        step_name=claim.step_name,
        outcome=outcome.get("outcome"),
        workflow_state=outcome.get("workflow_state"),
        step_state=outcome.get("step_state"),
        exception=report.error,
        duration=time.perf_counter() - started,
    )
    if result.error is not None and result.action == "failed":
        log.error("step failed with %s: %s", result.error.error_class, result.error.message)


def _instance(cls: type, values: dict[str, Any]) -> Any:
    """Build a detached instance of ``cls`` from a row already read (no extra query)."""
    instance = cls.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    set_row_values(instance, values)
    make_transient_to_detached(instance)
    return instance
