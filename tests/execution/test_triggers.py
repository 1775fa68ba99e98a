"""Huey triggers: one message per ready execution, carrying only its id, sent after commit.

The queue is inspected as Huey stores it (MemoryHuey and SqliteHuey); no consumer runs
here, so every message a test expects is still waiting in the queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import queue_url
from huey import signals as huey_signals

from flask_geneva import Geneva
from flask_geneva import executor
from flask_geneva import step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

RAN: list[str] = []


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "trig_orders"
    id = sa.Column(sa.Integer, primary_key=True)
    note = sa.Column(sa.String(50), nullable=True)


class FanOutWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def charge(self) -> None:
        RAN.append("charge")

    @step(after=[])
    def reserve(self) -> None:
        RAN.append("reserve")

    @step(after=[])
    def notify(self) -> None:
        RAN.append("notify")

    @step(after=["charge", "reserve", "notify"])
    def ship(self) -> None:
        RAN.append("ship")


class WaitingWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait=timedelta(hours=1))
    def remind(self) -> None:
        RAN.append("remind")

    @step(wait=timedelta(minutes=10))
    def follow_up(self) -> None:
        RAN.append("follow_up")


class UrgentWaiting(geneva.Workflow):  # type: ignore[name-defined,misc]
    step_job_options = {"priority": 7}

    @step(wait=timedelta(hours=1))
    def remind(self) -> None:
        RAN.append("remind")


@pytest.fixture
def huey_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return queue_url(getattr(request, "param", "memory"), tmp_path)


#: The message format is checked on a stored queue too, not only in memory.
both_queues = pytest.mark.parametrize("huey_url", ["memory", "sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    RAN.clear()
    yield


# -- helpers ---------------------------------------------------------------------------


def messages(huey: Any) -> list[Any]:
    """The step messages waiting in the queue."""
    return [task for task in huey.pending() if task.name == "geneva.perform_step"]


def queued_ids(huey: Any) -> list[int]:
    return sorted(task.args[0] for task in messages(huey))


def scheduled(workflow_id: int) -> dict[str, Any]:
    """Step name → (id, scheduled_for, huey_task_id) of its scheduled execution."""
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        result = conn.execute(
            sa.select(e.c.step_name, e.c.id, e.c.scheduled_for, e.c.huey_task_id).where(
                e.c.workflow_id == workflow_id, e.c.state == "scheduled"
            )
        )
        return {r[0]: r[1:] for r in result}


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def watch_enqueues(app: Flask, huey: Any) -> list[tuple[int, str | None]]:
    """Record, for every step message as it is enqueued, the state of its execution as
    another connection sees it (None: the row is not committed yet)."""
    seen: list[tuple[int, str | None]] = []
    e = geneva.tables.executions
    engine = geneva.engine()

    @huey.signal(huey_signals.SIGNAL_ENQUEUED)  # type: ignore[untyped-decorator]
    def on_enqueued(signal: str, task: Any, *args: Any) -> None:
        if task.name != "geneva.perform_step":
            return
        with engine.connect() as conn:
            state = conn.execute(sa.select(e.c.state).where(e.c.id == task.args[0])).scalar()
        seen.append((task.args[0], state))

    return seen


# -- tests -----------------------------------------------------------------------------


@both_queues
def test_create_enqueues_one_message_per_root_carrying_only_the_execution_id(app, huey):
    workflow = FanOutWorkflow.create()
    roots = scheduled(workflow.id)
    assert sorted(roots) == ["charge", "notify", "reserve"]

    found = messages(huey)
    assert len(found) == 3
    assert sorted(t.args for t in found) == sorted((ident,) for ident, _, _ in roots.values())
    assert all(t.kwargs == {} for t in found)
    assert all(t.name == "geneva.perform_step" for t in found)
    # The message id is the task id stored on the execution (for tracing).
    assert {t.id for t in found} == {task_id for _, _, task_id in roots.values()}


def test_create_without_commit_enqueues_only_when_the_caller_commits(app, huey):
    order = Order()
    db.session.add(order)
    db.session.flush()
    workflow = FanOutWorkflow.create(hero=order, commit=False)
    assert messages(huey) == []
    order.note = "paid"
    db.session.commit()
    assert queued_ids(huey) == sorted(ident for ident, _, _ in scheduled(workflow.id).values())


def test_create_without_commit_enqueues_nothing_after_a_rollback(app, huey):
    order = Order()
    db.session.add(order)
    db.session.flush()
    FanOutWorkflow.create(hero=order, commit=False)
    db.session.rollback()
    assert messages(huey) == []
    # A later transaction of the same session does not send the discarded triggers.
    db.session.add(Order(note="other"))
    db.session.commit()
    assert messages(huey) == []
    w = geneva.tables.workflows
    assert db.session.execute(sa.select(sa.func.count()).select_from(w)).scalar() == 0


def test_every_trigger_is_sent_after_its_execution_is_committed(app, huey):
    seen = watch_enqueues(app, huey)
    workflow = FanOutWorkflow.create()
    for name in ("charge", "reserve", "notify"):
        executor.execute(geneva, app.extensions["geneva"], scheduled(workflow.id)[name][0])
    ship = scheduled(workflow.id)["ship"][0]

    assert len(seen) == 4
    assert seen[-1] == (ship, "scheduled")
    assert all(state == "scheduled" for _, state in seen)


@both_queues
def test_a_step_with_a_wait_is_enqueued_with_an_eta(app, huey):
    before = utc_now()
    workflow = WaitingWorkflow.create()
    (task,) = messages(huey)
    assert task.args == (scheduled(workflow.id)["remind"][0],)
    assert task.eta is not None
    assert before + timedelta(minutes=59) < task.eta < utc_now() + timedelta(minutes=61)


def test_a_successor_with_a_wait_is_enqueued_with_an_eta_after_finalize(app, huey):
    workflow = WaitingWorkflow.create()
    huey.flush()
    with travel(timedelta(hours=1)):
        executor.execute(geneva, app.extensions["geneva"], scheduled(workflow.id)["remind"][0])
    (task,) = messages(huey)
    follow_up_id, due, _ = scheduled(workflow.id)["follow_up"]
    assert task.args == (follow_up_id,)
    # The clock moved an hour for flask-geneva only: the delay Huey gets is the wait.
    assert utc_now() + timedelta(minutes=9) < task.eta < utc_now() + timedelta(minutes=11)
    assert RAN == ["remind"]


@both_queues
def test_an_early_trigger_runs_nothing_and_re_enqueues_itself_for_the_due_time(app, huey):
    workflow = WaitingWorkflow.create()
    remind_id = scheduled(workflow.id)["remind"][0]
    huey.flush()

    report = executor.execute(geneva, app.extensions["geneva"], remind_id)
    assert report is not None and report.status == "deferred"
    assert RAN == []
    (task,) = messages(huey)
    assert task.args == (remind_id,)
    assert utc_now() + timedelta(minutes=59) < task.eta < utc_now() + timedelta(minutes=61)

    # When it is due, the same id runs the step.
    with travel(timedelta(hours=1)):
        executor.execute(geneva, app.extensions["geneva"], remind_id)
    assert RAN == ["remind"]


@pytest.mark.parametrize("huey_url", ["memory", "redis"], indirect=True)
def test_an_early_trigger_is_re_sent_under_its_stored_task_id_with_the_class_priority(app, huey):
    workflow = UrgentWaiting.create()
    remind_id, _, task_id = scheduled(workflow.id)["remind"]
    huey.flush()

    report = executor.execute(geneva, app.extensions["geneva"], remind_id)
    assert report is not None and report.status == "deferred"
    (task,) = messages(huey)
    assert task.id == task_id  # the id stored on the row, as docs/huey.md says
    assert task.priority == (7 if huey.storage.priority else None)


def test_an_execution_moved_later_by_an_operator_is_deferred_again_not_lost(app, huey):
    workflow = WaitingWorkflow.create()
    remind_id, due, _ = scheduled(workflow.id)["remind"]
    e = geneva.tables.executions
    with geneva.engine().begin() as conn:
        conn.execute(
            sa.update(e).where(e.c.id == remind_id).values(scheduled_for=due + timedelta(days=1))
        )
    huey.flush()
    with travel(timedelta(hours=1)):
        report = executor.execute(geneva, app.extensions["geneva"], remind_id)
        assert report is not None and report.status == "deferred"
    assert RAN == []
    (task,) = messages(huey)
    assert utc_now() + timedelta(hours=23, minutes=59) < task.eta < utc_now() + timedelta(hours=24)


def test_resume_re_enqueues_the_scheduled_executions_of_a_paused_workflow(app, huey):
    seen = watch_enqueues(app, huey)
    workflow = FanOutWorkflow.create()
    workflow.pause()
    huey.flush()
    seen.clear()

    workflow.resume()
    roots = scheduled(workflow.id)
    assert queued_ids(huey) == sorted(ident for ident, _, _ in roots.values())
    assert {t.id for t in messages(huey)} == {task_id for _, _, task_id in roots.values()}
    assert sorted(seen) == sorted((ident, "scheduled") for ident, _, _ in roots.values())


def test_a_duplicate_trigger_for_a_finished_execution_enqueues_nothing(app, huey):
    workflow = FanOutWorkflow.create()
    charge = scheduled(workflow.id)["charge"][0]
    state = app.extensions["geneva"]
    executor.execute(geneva, state, charge)
    huey.flush()
    report = executor.execute(geneva, state, charge)
    assert report is not None and report.status == "noop"
    assert messages(huey) == []
    assert RAN == ["charge"]


def test_a_trigger_for_a_deleted_execution_is_a_no_op(app, huey):
    workflow = FanOutWorkflow.create()
    charge = scheduled(workflow.id)["charge"][0]
    db.session.delete(workflow)
    db.session.commit()
    huey.flush()
    assert executor.execute(geneva, app.extensions["geneva"], charge) is None
    assert messages(huey) == []
    assert RAN == []
