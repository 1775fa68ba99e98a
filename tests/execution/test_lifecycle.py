"""Lifecycle contract: creation, ordering, waits and early triggers, idempotent triggers,
create(commit=False), and one ongoing workflow per hero (Geneva Drive WF/EX/SE/HERO-04..06).

Every side effect is proven by rows: a step appends a ``lc_marks`` row in the same
session the executor commits after the body.
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
from flask_geneva import WorkflowExistsError
from flask_geneva import clock
from flask_geneva import step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class Customer(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "lc_customers"
    id = sa.Column(sa.Integer, primary_key=True)


Mark = mark_model(db, "lc_marks", seen=sa.Column(sa.String(100), nullable=True))
rows = Rows(db, geneva, Mark)
fresh = rows.fresh
executions = rows.executions
scheduled = rows.scheduled
marks = rows.marks
run = rows.execute  # by execution id: several tests run one execution more than once


def mark(workflow: Any, name: str, seen: str | None = None) -> None:
    rows.mark(workflow, name, seen=seen)


class Onboarding(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def welcome(self) -> None:
        mark(self, "welcome")

    @step
    def profile(self) -> None:
        mark(self, "profile")

    @step
    def survey(self) -> None:
        mark(self, "survey")


class Empty(geneva.Workflow):  # type: ignore[name-defined,misc]
    pass


class TwoRoots(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def now_root(self) -> None:
        mark(self, "now_root")

    @step(after=[], wait=timedelta(hours=1))
    def later_root(self) -> None:
        mark(self, "later_root")

    @step(after=["now_root", "later_root"])
    def join(self) -> None:
        mark(self, "join")


class Introspective(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def look(self) -> None:
        w, e = geneva.tables.workflows, geneva.tables.executions
        with geneva.engine().connect() as conn:
            wf_state = conn.execute(sa.select(w.c.state).where(w.c.id == self.id)).scalar()
            ex_state = conn.execute(
                sa.select(e.c.state).where(e.c.workflow_id == self.id, e.c.step_name == "look")
            ).scalar()
        mark(self, "look", seen=f"{wf_state}/{ex_state}")


class Reminder(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def remind(self) -> None:
        mark(self, "remind")


class OtherReminder(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def remind(self) -> None:
        mark(self, "remind")


# -- helpers ---------------------------------------------------------------------------


def new_customer() -> Any:
    customer = Customer()
    db.session.add(customer)
    db.session.commit()
    return customer


# -- creation --------------------------------------------------------------------------


def test_creating_a_workflow_schedules_each_root_step_at_now_plus_its_wait(
    app: Flask, huey: Any
) -> None:
    before = clock.now()
    wf = TwoRoots.create()
    rows = executions(wf)
    assert [(e.step_name, e.state, e.outcome) for e in rows] == [
        ("now_root", "scheduled", None),
        ("later_root", "scheduled", None),
    ]
    assert close(rows[0].scheduled_for, before)
    assert close(rows[1].scheduled_for, before + timedelta(hours=1))
    assert all(e.started_at is None and e.finished_at is None for e in rows)
    fresh(wf)
    assert wf.state == "ready"
    assert wf.started_at is None
    # One Huey message per root, carrying only the execution id, after the commit.
    messages = huey.pending()
    assert sorted(m.args for m in messages) == sorted((e.id,) for e in rows)


def test_a_workflow_class_without_steps_is_finished_at_creation(app: Flask, huey: Any) -> None:
    wf = Empty.create()
    fresh(wf)
    assert wf.state == "finished"
    assert wf.transitioned_at is not None
    assert executions(wf) == []
    assert huey.pending_count() == 0


def test_steps_run_in_order_and_the_last_step_finishes_the_workflow(app: Flask) -> None:
    wf = Onboarding.create()
    assert [e.step_name for e in executions(wf)] == ["welcome"]
    started_at = None
    for name, following in (("welcome", "profile"), ("profile", "survey"), ("survey", None)):
        execution = scheduled(wf, name)
        report = run(app, execution.id)
        assert report.status == "ran"
        fresh(wf)
        fresh(execution)
        assert execution.state == "completed" and execution.outcome == "success"
        assert execution.started_at is not None
        assert execution.finished_at == execution.completed_at
        assert execution.started_at <= execution.finished_at
        # started_at is the first claim and never moves afterwards.
        started_at = started_at or wf.started_at
        assert wf.started_at == started_at
        if following:
            assert wf.state == "ready"
            assert scheduled(wf, following).step_name == following
    assert marks(wf) == ["welcome", "profile", "survey"]
    assert wf.state == "finished"
    assert close(wf.transitioned_at, clock.now())
    assert all(e.state == "completed" for e in executions(wf))
    assert len(executions(wf)) == 3


def test_the_workflow_records_each_state_change_in_transitioned_at(app: Flask) -> None:
    wf = Onboarding.create()
    fresh(wf)
    assert wf.transitioned_at is None  # creation is not a transition
    with travel(timedelta(minutes=5)):
        run(app, scheduled(wf, "welcome").id)
        fresh(wf)
        assert wf.state == "ready"
        assert close(wf.transitioned_at, clock.now())
        assert close(wf.started_at, clock.now())
    with travel(timedelta(minutes=30)):
        wf.pause()
        assert wf.state == "paused"
        assert close(wf.transitioned_at, clock.now())
        assert not close(wf.started_at, clock.now(), seconds=60)


def test_a_running_step_sees_its_workflow_performing_and_its_execution_in_progress(
    app: Flask,
) -> None:
    wf = Introspective.create()
    run(app, scheduled(wf, "look").id)
    seen = db.session.scalar(sa.select(Mark.seen).where(Mark.workflow_id == wf.id))
    assert seen == "performing/in_progress"


# -- waits and early triggers ------------------------------------------------------------


def test_a_trigger_before_scheduled_for_runs_nothing_and_comes_back_when_due(
    app: Flask, huey: Any
) -> None:
    wf = TwoRoots.create()
    run(app, scheduled(wf, "now_root").id)
    later = scheduled(wf, "later_root")
    huey.flush()

    report = run(app, later.id)
    assert report.status == "deferred"
    fresh(later)
    assert later.state == "scheduled" and later.started_at is None
    assert "later_root" not in marks(wf)
    # It re-triggered itself for the due time instead of being lost.
    (message,) = huey.pending()
    assert message.args == (later.id,)
    assert message.eta is not None
    assert close(message.eta, later.scheduled_for.replace(tzinfo=message.eta.tzinfo), 60)

    with travel(timedelta(hours=1, seconds=1)):
        assert run(app, later.id).status == "ran"
        run(app, scheduled(wf, "join").id)
    assert sorted(marks(wf)) == ["join", "later_root", "now_root"]
    fresh(wf)
    assert wf.state == "finished"


def test_moving_scheduled_for_later_defers_a_step_that_was_due(app: Flask) -> None:
    wf = Onboarding.create()
    execution = scheduled(wf, "welcome")
    later = clock.now() + timedelta(days=1)
    db.session.execute(
        sa.update(geneva.StepExecution)
        .where(geneva.StepExecution.id == execution.id)
        .values(scheduled_for=later)
    )
    db.session.commit()
    assert run(app, execution.id).status == "deferred"
    assert marks(wf) == []
    # A test helper (or an operator's reattempt) may still run it early on purpose.
    assert run(app, execution.id, ignore_schedule=True).status == "ran"
    assert marks(wf) == ["welcome"]


# -- duplicate and stray triggers --------------------------------------------------------


def test_executing_the_same_execution_again_is_a_no_op(app: Flask) -> None:
    wf = Onboarding.create()
    first = scheduled(wf, "welcome")
    assert run(app, first.id).status == "ran"
    snapshot = [(e.id, e.state, e.outcome, e.finished_at) for e in executions(wf)]
    for _ in range(3):
        assert run(app, first.id).status == "noop"
    assert marks(wf) == ["welcome"]
    assert [(e.id, e.state, e.outcome, e.finished_at) for e in executions(wf)] == snapshot


def test_executing_an_unknown_or_deleted_execution_is_a_no_op(app: Flask) -> None:
    assert run(app, 987654321) is None
    wf = Onboarding.create()
    execution_id = scheduled(wf, "welcome").id
    db.session.delete(wf)
    db.session.commit()
    assert db.session.get(geneva.StepExecution, execution_id) is None  # cascaded
    assert run(app, execution_id) is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Mark)) == 0


# -- create(commit=False) ---------------------------------------------------------------


def test_create_without_commit_is_rolled_back_with_the_callers_transaction(
    app: Flask, huey: Any
) -> None:
    customer = Customer()
    db.session.add(customer)
    db.session.flush()
    wf = Reminder.create(hero=customer, commit=False)
    assert wf.id is not None
    db.session.rollback()
    count = db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow))
    assert count == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.StepExecution)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Customer)) == 0
    assert huey.pending_count() == 0


def test_create_without_commit_sends_its_trigger_when_the_caller_commits(
    app: Flask, huey: Any
) -> None:
    customer = Customer()
    db.session.add(customer)
    db.session.flush()
    wf = Reminder.create(hero=customer, commit=False)
    assert huey.pending_count() == 0  # nothing before the commit
    db.session.commit()
    (message,) = huey.pending()
    assert message.args == (scheduled(wf, "remind").id,)


# -- one ongoing workflow per hero -------------------------------------------------------


def test_a_second_ongoing_workflow_for_the_same_hero_is_refused(app: Flask) -> None:
    customer = new_customer()
    first = Reminder.create(hero=customer)
    with pytest.raises(WorkflowExistsError) as caught:
        Reminder.create(hero=customer)
    message = str(caught.value)
    assert f"id={first.id}" in message and f"Customer:{customer.id}" in message
    assert "allow_multiple=True" in message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 1


def test_allow_multiple_lets_workflows_of_one_class_share_a_hero(app: Flask) -> None:
    customer = new_customer()
    Reminder.create(hero=customer)
    Reminder.create(hero=customer, allow_multiple=True)
    Reminder.create(hero=customer, allow_multiple=True)
    OtherReminder.create(hero=customer)  # another class never collides
    states = db.session.scalars(sa.select(geneva.Workflow.state)).all()
    assert states == ["ready"] * 4


@pytest.mark.parametrize("ending", ["finish", "cancel"])
def test_finishing_or_canceling_a_workflow_frees_the_heros_slot(app: Flask, ending: str) -> None:
    customer = new_customer()
    first = Reminder.create(hero=customer)
    if ending == "finish":
        run(app, scheduled(first, "remind").id)
    else:
        first.cancel()
    fresh(first)
    assert first.state == ("finished" if ending == "finish" else "canceled")
    second = Reminder.create(hero=customer)
    assert second.id != first.id and second.state == "ready"


def test_a_paused_workflow_keeps_the_heros_slot(app: Flask) -> None:
    customer = new_customer()
    first = Reminder.create(hero=customer)
    first.pause()
    with pytest.raises(WorkflowExistsError):
        Reminder.create(hero=customer)


def _raw_workflow_row(customer: Any, **values: Any) -> dict[str, Any]:
    now = clock.now()
    row = dict(
        type="Reminder",
        hero_type="Customer",
        hero_id=str(customer.id),
        state="ready",
        allow_multiple=False,
        created_at=now,
        updated_at=now,
    )
    row.update(values)
    return row


def test_the_unique_index_itself_rejects_a_second_ongoing_row(app: Flask) -> None:
    customer = new_customer()
    Reminder.create(hero=customer)
    w = geneva.tables.workflows
    with pytest.raises(sa.exc.IntegrityError):
        with geneva.engine().begin() as conn:
            conn.execute(sa.insert(w).values(_raw_workflow_row(customer, state="paused")))
    # Rows the rule does not cover are accepted by the same index.
    with geneva.engine().begin() as conn:
        conn.execute(sa.insert(w).values(_raw_workflow_row(customer, state="finished")))
        conn.execute(sa.insert(w).values(_raw_workflow_row(customer, allow_multiple=True)))


def test_a_duplicate_committed_behind_the_pre_check_is_refused_by_the_database(
    app: Flask, huey: Any
) -> None:
    customer = new_customer()
    w = geneva.tables.workflows

    # Another process commits its workflow for the same hero between create()'s check
    # and its insert: the unique index is what stops the second row.
    raced: list[bool] = []

    def competitor(session: Any, context: Any, instances: Any) -> None:
        if not raced:
            raced.append(True)
            with geneva.engine().begin() as conn:
                conn.execute(sa.insert(w).values(_raw_workflow_row(customer)))

    sa.event.listen(db.session, "before_flush", competitor)
    try:
        with pytest.raises(WorkflowExistsError) as caught:
            Reminder.create(hero=customer)
    finally:
        sa.event.remove(db.session, "before_flush", competitor)
    assert raced
    assert "allow_multiple=True" in str(caught.value)
    rows = db.session.execute(sa.select(w.c.id, w.c.state)).all()
    assert len(rows) == 1  # only the competitor's
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.StepExecution)) == 0
    assert huey.pending_count() == 0
