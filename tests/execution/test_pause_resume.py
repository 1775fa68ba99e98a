"""Pause and resume (Geneva Drive PR-01..15, with SPEC 2.1's external pause while a step
runs covered in test_flow_control.py).

Pause keeps scheduled executions scheduled; resume re-triggers them (at once if
overdue) or creates a fresh execution for a failed or canceled step.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import close
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import clock
from flask_geneva import step
from flask_geneva.executor import execute
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "pr_accounts"
    id = sa.Column(sa.Integer, primary_key=True)
    failing = sa.Column(sa.Boolean, nullable=False, default=False)


Mark = mark_model(db, "pr_marks")
rows = Rows(db, geneva, Mark)
fresh = rows.fresh
executions = rows.executions
marks = rows.marks
scheduled = rows.scheduled
run = rows.run
mark = rows.mark
count_marks = rows.count_marks


class Wait2h(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def step_one(self) -> None:
        mark(self, "step_one")

    @step(wait=timedelta(hours=2))
    def step_two(self) -> None:
        mark(self, "step_two")

    @step
    def step_three(self) -> None:
        mark(self, "step_three")


class Two(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def step_one(self) -> None:
        mark(self, "step_one")

    @step
    def step_two(self) -> None:
        mark(self, "step_two")


class Fail2(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def step_one(self) -> None:
        mark(self, "step_one")

    @step(on_exception="pause")
    def step_two(self) -> None:
        if self.hero.failing:
            raise RuntimeError("Intentional failure")
        mark(self, "step_two")

    @step
    def step_three(self) -> None:
        mark(self, "step_three")


class Gate(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def gate(self) -> None:
        mark(self, "gate")
        if count_marks(self, "gate") == 1:
            self.pause()

    @step
    def after_gate(self) -> None:
        mark(self, "after_gate")


# -- helpers ---------------------------------------------------------------------------


def account(failing: bool = False) -> Any:
    a = Account(failing=failing)
    db.session.add(a)
    db.session.commit()
    return a


def after_step_one(app: Flask) -> tuple[Any, Any]:
    wf = Wait2h.create()
    run(app, wf, "step_one")
    return wf, scheduled(wf, "step_two")


# -- pause keeps scheduled executions ------------------------------------------------------


def test_pause_keeps_a_future_scheduled_execution_untouched(app: Flask) -> None:
    wf, waiting = after_step_one(app)
    wf.pause()
    assert wf.state == "paused"
    assert close(wf.transitioned_at, clock.now())
    kept = scheduled(wf, "step_two")
    assert (kept.id, kept.scheduled_for, kept.outcome) == (waiting.id, waiting.scheduled_for, None)
    assert [e.state for e in executions(wf, "step_two")] == ["scheduled"]
    outcomes = {e.outcome for e in executions(wf)}
    assert outcomes <= {"success", None}  # no special "paused" outcome exists


def test_pause_keeps_an_overdue_scheduled_execution_untouched(app: Flask) -> None:
    wf, waiting = after_step_one(app)
    with travel(timedelta(hours=3)):
        wf.pause()
        assert scheduled(wf, "step_two").id == waiting.id
        assert waiting.scheduled_for < clock.now()


def test_pause_right_after_creation_keeps_the_first_step_scheduled(app: Flask) -> None:
    wf = Wait2h.create()
    first = scheduled(wf, "step_one")
    wf.pause()
    assert scheduled(wf, "step_one").id == first.id
    assert len(executions(wf)) == 1


def test_pause_keeps_an_immediately_due_execution_scheduled(app: Flask) -> None:
    wf = Two.create()
    run(app, wf, "step_one")
    due = scheduled(wf, "step_two")
    assert close(due.scheduled_for, clock.now())
    wf.pause()
    assert scheduled(wf, "step_two").id == due.id


# -- resume -------------------------------------------------------------------------------


def test_resume_before_the_due_time_reuses_the_execution_and_its_time(
    app: Flask, huey: Any
) -> None:
    wf, waiting = after_step_one(app)
    with travel(timedelta(minutes=30)):
        wf.pause()
    huey.flush()
    with travel(timedelta(minutes=45)):
        wf.resume()
        assert wf.state == "ready"
        assert close(wf.transitioned_at, clock.now())
        kept = scheduled(wf, "step_two")
        assert (kept.id, kept.scheduled_for) == (waiting.id, waiting.scheduled_for)
        (message,) = huey.pending()
        assert message.args == (waiting.id,)
        assert message.eta is not None  # still waits for its original time
        assert run(app, wf, "step_two").status == "deferred"
    assert len(executions(wf, "step_two")) == 1


def test_resume_after_the_due_time_triggers_the_same_execution_at_once(
    app: Flask, huey: Any
) -> None:
    wf, waiting = after_step_one(app)
    with travel(timedelta(hours=1)):
        wf.pause()
    huey.flush()
    with travel(timedelta(hours=3)):
        wf.resume()
        (message,) = huey.pending()
        assert message.args == (waiting.id,) and message.eta is None
        assert scheduled(wf, "step_two").scheduled_for < clock.now()
        assert run(app, wf, "step_two").status == "ran"
        assert scheduled(wf, "step_three") is not None
    assert marks(wf) == ["step_one", "step_two"]


def test_a_trigger_while_paused_cancels_its_execution_and_resume_creates_a_fresh_one(
    app: Flask,
) -> None:
    wf, waiting = after_step_one(app)
    with travel(timedelta(hours=1)):
        wf.pause()
    with travel(timedelta(hours=2)):
        report = execute(geneva, app.extensions["geneva"], waiting.id)
        assert report.status == "settled"
        canceled = fresh(waiting)
        assert (canceled.state, canceled.outcome) == ("canceled", "canceled")
        assert canceled.canceled_at == canceled.finished_at is not None
        assert fresh(wf).state == "paused"  # the workflow is left as it was
    with travel(timedelta(hours=3)):
        wf.resume()
        again = scheduled(wf, "step_two")
        assert again.id != waiting.id
        # Due now: the step's wait is not applied a second time.
        assert close(again.scheduled_for, clock.now())
        assert again.attempt == 2
    assert marks(wf) == ["step_one"]


def test_repeated_pause_and_resume_never_duplicate_executions(app: Flask, huey: Any) -> None:
    wf, waiting = after_step_one(app)
    huey.flush()
    for _ in range(3):
        wf.pause()
        wf.resume()
    assert [e.id for e in executions(wf, "step_two")] == [waiting.id]
    # Each resume sent a trigger; all of them name the one execution, so the extra
    # ones are no-ops once it has run.
    assert {m.args for m in huey.pending()} == {(waiting.id,)}
    state = app.extensions["geneva"]
    with travel(timedelta(hours=2, seconds=1)):
        statuses = [execute(geneva, state, m.args[0]).status for m in huey.pending()]
    assert statuses == ["ran", "noop", "noop"]
    assert marks(wf) == ["step_one", "step_two"]


def test_resume_is_refused_while_a_step_runs(app: Flask) -> None:
    wf = Two.create()
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == wf.id).values(state="performing"))
    with pytest.raises(InvalidStateError, match="^Cannot resume a performing workflow$"):
        wf.resume()


def test_a_paused_and_resumed_workflow_runs_to_completion(app: Flask) -> None:
    wf = Wait2h.create()
    run(app, wf, "step_one")
    wf.pause()
    wf.resume()
    run(app, wf, "step_two", ignore_schedule=True)
    run(app, wf, "step_three")
    assert wf.state == "finished"
    assert marks(wf) == ["step_one", "step_two", "step_three"]
    assert [e.state for e in executions(wf)] == ["completed"] * 3


def test_resume_after_a_failure_retries_the_failed_step_with_a_new_execution(
    app: Flask,
) -> None:
    hero = account(failing=True)
    wf = Fail2.create(hero=hero)
    run(app, wf, "step_one")
    run(app, wf, "step_two")
    assert wf.state == "paused"
    (failed,) = executions(wf, "step_two")
    assert (failed.state, failed.outcome, failed.attempt) == ("failed", "failed", 1)
    assert failed.error_class == "RuntimeError"
    assert failed.error_message == "Intentional failure"
    assert "raise RuntimeError" in failed.error_traceback

    hero.failing = False
    db.session.commit()
    wf.resume()
    assert wf.state == "ready"
    retry = scheduled(wf, "step_two")
    assert retry.id != failed.id and retry.attempt == 2
    assert close(retry.scheduled_for, clock.now())
    run(app, wf, "step_two")
    assert scheduled(wf, "step_three") is not None
    # The failed execution keeps its error after the retry succeeded.
    assert fresh(failed).error_message == "Intentional failure"


def test_retrying_a_failing_step_several_times_and_then_skipping_it(app: Flask) -> None:
    wf = Fail2.create(hero=account(failing=True))
    run(app, wf, "step_one")
    for attempt in (1, 2, 3):
        run(app, wf, "step_two")
        assert wf.state == "paused"
        assert [e.attempt for e in executions(wf, "step_two")] == list(range(1, attempt + 1))
        if attempt < 3:
            wf.resume()
    wf.skip()
    assert wf.state == "ready"
    assert [e.state for e in executions(wf, "step_two")] == ["failed"] * 3 + ["skipped"]
    run(app, wf, "step_three")
    assert wf.state == "finished"
    assert marks(wf) == ["step_one", "step_three"]


def test_a_step_that_pauses_itself_runs_again_on_resume(app: Flask) -> None:
    wf = Gate.create()
    run(app, wf, "gate")
    assert wf.state == "paused"
    (paused,) = executions(wf)
    assert (paused.state, paused.outcome) == ("canceled", "canceled")
    wf.resume()
    again = scheduled(wf, "gate")
    assert again.id != paused.id
    run(app, wf, "gate")
    run(app, wf, "after_gate")
    assert wf.state == "finished"
    assert marks(wf) == ["gate", "gate", "after_gate"]
