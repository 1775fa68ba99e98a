"""Whatever a step raises is the step's: recorded, its policy applied, the worker kept.

``SystemExit`` (``sys.exit()``, argparse), ``GeneratorExit`` and a custom
``BaseException`` are the step's failure, and never kill a worker thread.
``KeyboardInterrupt`` is the worker shutting down: the execution is given back, due
now, and nothing of its body's is kept. A flow-control call the body swallowed is
still applied; a flow-control call whose commit fails is the step's failure; a signal
receiver or a policy handler that raises does not leave the step half done. On 0.1
each of these left the execution in progress for housekeeping to run again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import mark_model
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import housekeeping
from flask_geneva import signals
from flask_geneva import step
from flask_geneva.executor import execute
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)
Mark = mark_model(db, "fbe_marks")
committed = Committed(geneva, Mark)


class Custom(BaseException):
    """A BaseException of the application's own."""


def _argparse_error() -> None:
    argparse.ArgumentParser(prog="report", exit_on_error=True).parse_args(["--nope"])


#: What a body raises: name → the callable that raises it.
RAISERS: dict[str, Any] = {
    "sys_exit": lambda: sys.exit(3),
    "argparse": _argparse_error,
    "generator_exit": lambda: (_ for _ in ()).throw(GeneratorExit("closed")),
    "custom": lambda: (_ for _ in ()).throw(Custom("ours")),
}
EXPECTED_CLASS = {
    "sys_exit": "SystemExit",
    "argparse": "SystemExit",
    "generator_exit": "GeneratorExit",
    "custom": f"{__name__}.Custom",
}

_behaviour: dict[str, Any] = {}


def mark(workflow: Any, name: str) -> None:
    db.session.add(Mark(workflow_id=workflow.id, name=name))


class Raises(geneva.Workflow):  # type: ignore[name-defined,misc]
    allow_multiple = True

    @step
    def work(self) -> None:
        mark(self, "work")
        db.session.flush()
        RAISERS[_behaviour["raise"]]()

    @step
    def after(self) -> None:
        mark(self, "after")


class ReattemptsOnExit(geneva.Workflow):  # type: ignore[name-defined,misc]
    """A policy naming SystemExit applies to it like to any exception."""

    @step(on_exception=ExceptionPolicy("reattempt", exceptions=(SystemExit,), max_reattempts=1))
    def work(self) -> None:
        sys.exit("nope")


class Interrupted(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def work(self) -> None:
        mark(self, "work")
        db.session.flush()
        if _behaviour.get("interrupt"):
            raise KeyboardInterrupt

    @step
    def after(self) -> None:
        mark(self, "after")


class Swallows(geneva.Workflow):  # type: ignore[name-defined,misc]
    allow_multiple = True

    @step
    def work(self) -> None:
        mark(self, "work")
        try:
            getattr(self, _behaviour["call"])()
        except:  # noqa: E722 - what the test is about
            pass
        mark(self, "went on")
        if _behaviour.get("then_raise"):
            raise ValueError("tripped over after the swallowed call")

    @step
    def after(self) -> None:
        mark(self, "after")


class Unique(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fbe_unique"
    id = sa.Column(sa.Integer, primary_key=True)
    code = sa.Column(sa.String(20), unique=True, nullable=False)


class FlowAfterBadWrite(geneva.Workflow):  # type: ignore[name-defined,misc]
    allow_multiple = True

    @step
    def work(self) -> None:
        db.session.add(Unique(code="taken"))  # violates the unique index
        call = _behaviour["call"]
        if call == "reattempt":
            self.reattempt(wait=1)
        getattr(self, call)()

    @step
    def after(self) -> None:
        mark(self, "after")


class Plain(geneva.Workflow):  # type: ignore[name-defined,misc]
    allow_multiple = True

    @step
    def work(self) -> None:
        mark(self, "work")


class ExitingCondition(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(skip_if=lambda wf: sys.exit(1))
    def work(self) -> None:
        mark(self, "work")


def _exiting_handler(workflow: Any, error: BaseException) -> None:
    raise SystemExit("the handler gave up")


class ExitingHandler(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception=_exiting_handler)
    def work(self) -> None:
        raise ValueError("first")


@pytest.fixture(autouse=True)
def _clean() -> Any:
    _behaviour.clear()
    yield
    _behaviour.clear()


def latest_error(workflow_id: int) -> tuple[str, str, str | None, str | None]:
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        row = conn.execute(
            sa.select(e.c.step_name, e.c.state, e.c.outcome, e.c.error_class)
            .where(e.c.workflow_id == workflow_id)
            .order_by(e.c.id.desc())
            .limit(1)
        ).one()
    return (row.step_name, row.state, row.outcome, row.error_class)


def assert_nothing_in_progress_hours_later(workflow_id: int) -> None:
    with travel(timedelta(hours=3)):
        summary = housekeeping.run(geneva)
    assert summary.stuck_reattempted + summary.stuck_canceled + summary.stuck_paused == 0
    assert "in_progress" not in {state for _, state, _ in committed.history(workflow_id)}


# -- SystemExit, GeneratorExit, a custom BaseException ------------------------------------


@pytest.mark.parametrize("kind", list(RAISERS))
def test_a_base_exception_is_the_steps_failure_and_pauses(app: Flask, kind: str) -> None:
    _behaviour["raise"] = kind
    wf = Raises.create()
    with pytest.raises(BaseException) as raised:
        perform_next_step(wf)  # the helper re-raises the step's error after it is recorded
    assert not isinstance(raised.value, KeyboardInterrupt)
    db.session.rollback()
    assert committed.state(wf) == "paused"
    assert latest_error(wf.id) == ("work", "failed", "failed", EXPECTED_CLASS[kind])
    assert committed.marks(wf) == []  # the body's write went with its failure
    assert_nothing_in_progress_hours_later(wf.id)


def test_a_policy_naming_system_exit_applies_to_it(app: Flask) -> None:
    wf = ReattemptsOnExit.create()
    for _ in range(2):
        with pytest.raises(SystemExit):
            perform_next_step(wf)
    db.session.rollback()
    assert committed.history(wf) == [
        ("work", "completed", "reattempted"),
        ("work", "failed", "failed"),
    ]
    assert committed.state(wf) == "paused"


def test_a_condition_that_exits_pauses_the_workflow(app: Flask) -> None:
    wf = ExitingCondition.create()
    with pytest.raises(SystemExit):
        perform_next_step(wf)
    db.session.rollback()
    assert committed.state(wf) == "paused"
    assert latest_error(wf.id) == ("work", "failed", "failed", "SystemExit")
    assert committed.marks(wf) == []


def test_a_policy_handler_that_exits_pauses_the_workflow(app: Flask) -> None:
    wf = ExitingHandler.create()
    with pytest.raises(ValueError, match="first"):
        perform_next_step(wf)
    db.session.rollback()
    assert committed.state(wf) == "paused"
    assert latest_error(wf.id)[:3] == ("work", "failed", "failed")


@pytest.mark.slow
def test_base_exceptions_never_kill_a_worker_thread(app: Flask, huey: Any) -> None:
    """A real consumer with two worker threads: twelve bodies raise, then work still runs."""
    failing = []
    with running_consumer(huey, workers=2) as consumer:
        threads = [t for _, t in consumer.worker_threads]
        for kind in list(RAISERS) * 3:
            _behaviour["raise"] = kind
            failing.append(Raises.create().id)
            wait_until(lambda: committed.state(failing[-1]) == "paused")
        assert all(t.is_alive() for t in threads)
        healthy = [Plain.create().id for _ in range(6)]
        wait_until(lambda: all(committed.state(i) == "finished" for i in healthy))
        assert all(t.is_alive() for t in threads)
    assert all(committed.state(i) == "paused" for i in failing)


# -- KeyboardInterrupt: the worker shuts down -------------------------------------------


def test_keyboard_interrupt_gives_the_execution_back_due_now(app: Flask, huey: Any) -> None:
    state = app.extensions["geneva"]
    _behaviour["interrupt"] = True
    wf = Interrupted.create()
    db.session.commit()
    (first,) = committed.scheduled(wf).values()
    huey.flush()
    with pytest.raises(KeyboardInterrupt):
        execute(geneva, state, first)
    db.session.rollback()
    # Not a failure, not lost: the same execution, scheduled again, triggered again.
    assert committed.history(wf) == [("work", "scheduled", None)]
    assert committed.scheduled(wf) == {"work": first}
    assert committed.state(wf) == "ready"
    assert committed.marks(wf) == []  # the interrupted body's write was rolled back
    assert huey.pending_count() == 1
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        row = conn.execute(sa.select(e).where(e.c.id == first)).one()
    assert (row.attempt, row.started_at, row.error_class) == (1, None, None)

    _behaviour.clear()  # the next worker runs it through
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert committed.marks(wf) == ["work", "after"]
    assert committed.history(wf) == [
        ("work", "completed", "success"),
        ("after", "completed", "success"),
    ]


# -- flow control swallowed by the body -------------------------------------------------


@pytest.mark.parametrize(
    ("call", "workflow_state", "history"),
    [
        ("cancel", "canceled", [("work", "canceled", "canceled")]),
        ("pause", "paused", [("work", "canceled", "canceled")]),
        ("skip", "finished", [("work", "skipped", "skipped"), ("after", "completed", "success")]),
        ("finish", "finished", [("work", "completed", "success")]),
    ],
)
def test_a_swallowed_flow_control_call_is_still_applied(
    app: Flask, caplog: pytest.LogCaptureFixture, call: str, workflow_state: str, history: Any
) -> None:
    _behaviour["call"] = call
    wf = Swallows.create()
    with caplog.at_level(logging.WARNING, logger="flask_geneva"):
        speedrun(wf)
    assert committed.state(wf) == workflow_state
    assert committed.history(wf) == history
    assert f"caught its own {call}()" in caplog.text
    # It returned normally: what it wrote commits with the flow control's outcome.
    expected = ["work", "went on"] + (["after"] if call == "skip" else [])
    assert committed.marks(wf) == expected


def test_a_swallowed_cancel_wins_over_an_exception_raised_after_it(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    _behaviour.update(call="cancel", then_raise=True)
    wf = Swallows.create()
    with caplog.at_level(logging.WARNING, logger="flask_geneva"):
        perform_next_step(wf)
    assert committed.state(wf) == "canceled"
    assert committed.history(wf) == [("work", "canceled", "canceled")]
    assert committed.marks(wf) == []  # it raised: its writes were rolled back
    assert "then raised ValueError" in caplog.text


# -- flow control whose writes cannot be committed --------------------------------------


@pytest.mark.parametrize("call", ["skip", "cancel", "pause", "finish", "reattempt"])
def test_flow_control_after_a_write_that_breaks_a_unique_index_pauses(
    app: Flask, call: str
) -> None:
    db.session.add(Unique(code="taken"))
    db.session.commit()
    _behaviour["call"] = call
    wf = FlowAfterBadWrite.create()
    with pytest.raises(sa.exc.IntegrityError):
        perform_next_step(wf)
    db.session.rollback()
    assert committed.state(wf) == "paused"
    (name, state, outcome, error_class) = latest_error(wf.id)
    assert (name, state, outcome) == ("work", "failed", "failed")
    assert error_class is not None and "IntegrityError" in error_class
    assert_nothing_in_progress_hours_later(wf.id)


# -- signal receivers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "signal_name", ["precondition_evaluated", "step_performed", "step_finalized"]
)
@pytest.mark.parametrize("error", [RuntimeError("receiver bug"), SystemExit(4)])
def test_a_signal_receiver_that_raises_does_not_leave_the_step_half_done(
    app: Flask, caplog: pytest.LogCaptureFixture, signal_name: str, error: BaseException
) -> None:
    calls = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(threading.get_ident())
        raise error

    wf = Plain.create()
    with getattr(signals, signal_name).connected_to(receiver), caplog.at_level(logging.ERROR):
        speedrun(wf)
    assert calls, "the receiver was called"
    assert committed.state(wf) == "finished"
    assert committed.marks(wf) == ["work"]
    assert "receiver of the" in caplog.text


# -- a body that returns a coroutine instead of running it ------------------------------


async def _send_later() -> None:
    raise AssertionError("never awaited, never run")


class ReturnsCoroutine(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def work(self) -> Any:
        mark(self, "work")
        return _send_later()


def test_a_body_returning_a_coroutine_fails_instead_of_counting_as_done(app: Flask) -> None:
    wf = ReturnsCoroutine.create()
    with pytest.raises(TypeError, match="returned coroutine"):
        perform_next_step(wf)
    db.session.rollback()
    assert committed.state(wf) == "paused"
    assert latest_error(wf.id) == ("work", "failed", "failed", "TypeError")
    assert committed.marks(wf) == []
