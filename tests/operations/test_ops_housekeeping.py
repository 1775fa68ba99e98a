"""Housekeeping on every database: retention, lost workers, lost triggers, batches, races."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import ConfigurationError
from flask_geneva import Geneva
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.testing import abandon_next_step
from flask_geneva.testing import assert_workflow_state
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


#: Set by a test to make TwoSteps.first block ("entered", "release").
_hold: dict[str, Any] = {}


class OneStep(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        pass


class TwoSteps(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        if "release" in _hold:
            _hold["entered"].set()
            _hold["release"].wait(10)

    @step
    def second(self) -> None:
        pass


def configure(app: Flask, **changes: Any) -> None:
    """Change the app's housekeeping settings for one test."""
    state = app.extensions["geneva"]
    state.config = dataclasses.replace(state.config, **changes)


def count(table: sa.Table, *where: Any) -> int:
    with geneva.engine().connect() as conn:
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return int(conn.execute(query).scalar_one())


def executions_of(workflow: Any) -> list[Any]:
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        return list(
            conn.execute(sa.select(e).where(e.c.workflow_id == workflow.id).order_by(e.c.id))
        )


def finished_workflow(cls: type = OneStep) -> Any:
    workflow = cls.create(allow_multiple=True)
    speedrun(workflow)
    assert_workflow_state(workflow, "finished")
    return workflow


def test_old_finished_and_canceled_workflows_are_deleted_with_their_executions(app):
    old_finished = finished_workflow(TwoSteps)
    old_canceled = TwoSteps.create(allow_multiple=True)
    old_canceled.cancel()
    ongoing = TwoSteps.create(allow_multiple=True)
    ongoing.pause()
    with travel(timedelta(days=29)):
        recent = finished_workflow()
    old_finished_id, old_canceled_id = old_finished.id, old_canceled.id
    ongoing_id, recent_id = ongoing.id, recent.id
    db.session.expunge_all()
    with travel(timedelta(days=31)):
        summary = housekeeping.run(geneva)

    assert (summary.workflows_deleted, summary.executions_deleted) == (2, 3)
    w, e = geneva.tables.workflows, geneva.tables.executions
    with geneva.engine().connect() as conn:
        remaining = {row[0] for row in conn.execute(sa.select(w.c.id))}
    assert remaining == {ongoing_id, recent_id}
    assert count(e, e.c.workflow_id.in_([old_finished_id, old_canceled_id])) == 0
    assert count(e, e.c.workflow_id == ongoing_id) == 1


def test_retention_of_none_keeps_finished_workflows_forever(app):
    configure(app, delete_finished_after=None)
    workflow = finished_workflow()
    with travel(timedelta(days=3650)):
        summary = housekeeping.run(geneva)
    assert summary.workflows_deleted == 0
    assert_workflow_state(workflow, "finished")


def test_deletion_works_through_more_rows_than_one_batch(app):
    configure(app, housekeeping_batch_size=3)
    for _ in range(8):
        finished_workflow()
    with travel(timedelta(days=31)):
        summary = housekeeping.run(geneva)
    assert (summary.workflows_deleted, summary.executions_deleted) == (8, 8)
    assert count(geneva.tables.workflows) == 0
    assert count(geneva.tables.executions) == 0


def test_a_step_in_progress_longer_than_the_threshold_is_failed_and_reattempted(app):
    workflow = TwoSteps.create()
    e = geneva.tables.executions
    claim_without_finishing(workflow)  # the worker died during 'first'
    with travel(timedelta(minutes=59)):
        assert housekeeping.run(geneva).stuck_reattempted == 0
    with travel(timedelta(minutes=61)):
        summary = housekeeping.run(geneva)
        assert (summary.stuck_reattempted, summary.stuck_canceled) == (1, 0)
        lost, fresh = executions_of(workflow)
        assert (lost.state, lost.outcome) == ("failed", "recovered")
        assert lost.error_message.startswith(
            "worker lost: execution in progress for more than 1:00:00"
        )
        assert lost.finished_at is not None and lost.failed_at is not None
        assert (fresh.step_name, fresh.state, fresh.attempt) == ("first", "scheduled", 2)
        assert_workflow_state(workflow, "ready")
        speedrun(workflow)
    assert_workflow_state(workflow, "finished")
    assert count(e, e.c.workflow_id == workflow.id, e.c.state == "completed") == 2


def test_a_lost_worker_cancels_the_workflow_when_recovery_is_cancel(app):
    configure(app, stuck_recovery="cancel")
    workflow = TwoSteps.create()
    claim_without_finishing(workflow)
    with travel(timedelta(hours=2)):
        summary = housekeeping.run(geneva)
    assert (summary.stuck_reattempted, summary.stuck_canceled) == (0, 1)
    (lost,) = executions_of(workflow)
    assert (lost.state, lost.outcome) == ("failed", "recovered")
    assert_workflow_state(workflow, "canceled")


def test_a_slow_worker_thought_lost_cannot_overwrite_the_recovery(app):
    workflow = TwoSteps.create()
    entered, release = threading.Event(), threading.Event()
    _hold.update(entered=entered, release=release)
    reports: list[Any] = []

    def worker() -> None:
        with app.app_context():
            reports.append(perform_next_step(db.session.get(TwoSteps, workflow.id)))

    with travel(timedelta(hours=2)):
        thread = threading.Thread(target=worker)
        thread.start()
        assert entered.wait(10)
        # While the body still runs, its execution looks lost to housekeeping (the clock
        # says it started two hours ago for the next run below).
        with travel(timedelta(hours=2)):
            assert housekeeping.run(geneva).stuck_reattempted == 1
            release.set()
            thread.join(10)
    _hold.clear()
    lost, fresh = executions_of(workflow)
    assert (lost.state, lost.outcome) == ("failed", "recovered")
    assert (fresh.state, fresh.step_name) == ("scheduled", "first")
    assert_workflow_state(workflow, "ready")
    speedrun(workflow)
    assert_workflow_state(workflow, "finished")


def test_an_overdue_scheduled_step_is_triggered_again_but_only_once_per_threshold(app, huey):
    workflow = TwoSteps.create()
    (execution,) = executions_of(workflow)
    huey.flush()  # the trigger is lost
    with travel(timedelta(minutes=14)):
        assert housekeeping.run(geneva).retriggered == 0
    assert huey.pending_count() == 0
    with travel(timedelta(minutes=16)):
        assert housekeeping.run(geneva).retriggered == 1
        assert housekeeping.run(geneva).retriggered == 0  # a second run right after
    assert [task.args for task in huey.pending()] == [(execution.id,)]
    with travel(timedelta(minutes=32)):
        assert housekeeping.run(geneva).retriggered == 1  # still not run: sent again
    assert huey.pending_count() == 2


def test_a_paused_workflows_overdue_step_waits_for_resume(app, huey):
    workflow = TwoSteps.create()
    workflow.pause()
    huey.flush()
    with travel(timedelta(days=2)):
        assert housekeeping.run(geneva).retriggered == 0
        assert huey.pending_count() == 0
        workflow.resume()
        assert huey.pending_count() == 1


def test_concurrent_housekeeping_runs_act_on_each_row_once(app, huey):
    configure(app, housekeeping_batch_size=3)
    for _ in range(10):
        finished_workflow()
    stuck = [TwoSteps.create(allow_multiple=True) for _ in range(4)]
    for workflow in stuck:
        claim_without_finishing(workflow)
    overdue = [OneStep.create(allow_multiple=True) for _ in range(4)]
    huey.flush()

    summaries: list[housekeeping.HousekeepingSummary] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            with app.app_context():
                barrier.wait()
                summaries.append(housekeeping.run(geneva))
        except BaseException as error:  # reported below
            errors.append(error)

    with travel(timedelta(days=31)):
        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors
    assert sum(s.workflows_deleted for s in summaries) == 10
    assert sum(s.executions_deleted for s in summaries) == 10
    assert sum(s.stuck_reattempted for s in summaries) == 4
    assert sum(s.retriggered for s in summaries) == 4  # the fresh reattempts are not overdue
    e = geneva.tables.executions
    for workflow in stuck:
        assert [(x.state, x.outcome) for x in executions_of(workflow)] == [
            ("failed", "recovered"),
            ("scheduled", None),
        ]
    assert count(e, e.c.workflow_id.in_([w.id for w in overdue]), e.c.state == "scheduled") == 4
    assert sorted(t.args[0] for t in huey.pending()) == sorted(
        x.id for w in stuck + overdue for x in executions_of(w) if x.state == "scheduled"
    )


def test_housekeeping_with_nothing_to_do_reports_zeros(app):
    summary = housekeeping.run(geneva)
    assert summary.as_dict() | {"seconds": 0} == {
        "workflows_deleted": 0,
        "executions_deleted": 0,
        "stuck_reattempted": 0,
        "stuck_canceled": 0,
        "stuck_paused": 0,
        "retriggered": 0,
        "seconds": 0,
    }


def test_init_app_registers_the_periodic_housekeeping_task_that_runs_it(app, huey):
    task = app.extensions["geneva"].housekeeping_task
    assert task.name == "geneva.housekeeping"
    # Every 5 minutes by default: due on :05, not on :03.
    assert [t.name for t in huey.read_periodic(datetime(2026, 1, 1, 9, 5))] == [task.name]
    assert huey.read_periodic(datetime(2026, 1, 1, 9, 3)) == []
    workflow_id = finished_workflow().id
    db.session.expunge_all()
    with travel(timedelta(days=31)):
        huey.execute(task.s())
    w = geneva.tables.workflows
    assert count(w, w.c.id == workflow_id) == 0


def claim_without_finishing(workflow: Any) -> int:
    """The worker running the next step is killed mid-body: it stays in_progress."""
    db.session.rollback()
    return int(abandon_next_step(workflow).id)


def make_app(tmp_path: Any, **config: Any) -> Flask:
    other_db = SQLAlchemy()
    app = Flask("interval", instance_path=str(tmp_path))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/other.db", GENEVA_HUEY="memory://", **config
    )
    other_db.init_app(app)
    Geneva(other_db).init_app(app)
    return app


def test_an_interval_of_none_registers_no_periodic_task(tmp_path):
    app = make_app(tmp_path, GENEVA_HOUSEKEEPING_INTERVAL=None)
    state = app.extensions["geneva"]
    assert state.housekeeping_task is None
    assert state.huey.read_periodic(datetime(2026, 1, 1, 9, 5)) == []


def test_an_interval_that_is_not_whole_minutes_is_refused_at_init_app(tmp_path):
    with pytest.raises(ConfigurationError, match="must be a whole number of minutes"):
        make_app(tmp_path, GENEVA_HOUSEKEEPING_INTERVAL=90)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (timedelta(days=10**6), "at most 100 years"),
        (1e12, "at most 100 years"),
        (-5, "must be positive|non-negative"),
        ("1h", "timedelta or seconds"),
    ],
)
def test_a_threshold_no_date_can_hold_is_refused_at_init_app(
    tmp_path: Any, value: Any, message: str
) -> None:
    # now - threshold must be a date: a huge one would crash every housekeeping run.
    with pytest.raises(ConfigurationError, match=f"GENEVA_STUCK_IN_PROGRESS_AFTER.*({message})"):
        make_app(tmp_path, GENEVA_STUCK_IN_PROGRESS_AFTER=value)
