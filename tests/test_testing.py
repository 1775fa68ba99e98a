"""The public test helpers in flask_geneva.testing, tested like any other API (TH-01..09)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import clock
from flask_geneva import step
from flask_geneva.testing import abandon_next_step
from flask_geneva.testing import assert_step_executed
from flask_geneva.testing import assert_workflow_state
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import perform_step_inline
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


Run = mark_model(db, "th_runs")
rows = Rows(db, geneva, Run)
record = rows.mark
runs = rows.marks


def run_count(workflow: Any) -> int:
    return len(runs(workflow))


class Three(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def step_one(self) -> None:
        record(self, "step_one")

    @step(wait=timedelta(hours=2))
    def step_two(self) -> None:
        record(self, "step_two")

    @step(wait=timedelta(days=3))
    def step_three(self) -> None:
        record(self, "step_three")


class PausesFirst(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def gate(self) -> None:
        record(self, "gate")
        self.pause()

    @step
    def after_gate(self) -> None:
        record(self, "after_gate")


class Forever(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def poll(self) -> None:
        record(self, "poll")
        self.reattempt()


class Boom(Exception):
    pass


class Raises(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def explode(self) -> None:
        record(self, "explode")
        raise Boom("kaboom")


class SkipsMiddle(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        record(self, "first")

    @step(skip_if=True)
    def skipped(self) -> None:
        record(self, "skipped")

    @step
    def last(self) -> None:
        record(self, "last")


# -- speedrun ---------------------------------------------------------------------------


def test_speedrun_runs_a_workflow_to_the_end_ignoring_waits(app: Flask) -> None:
    wf = Three.create()
    returned = speedrun(wf)
    assert returned is wf
    assert wf.state == "finished"
    assert runs(wf) == ["step_one", "step_two", "step_three"]
    states = db.session.scalars(
        sa.select(geneva.StepExecution.state).where(geneva.StepExecution.workflow_id == wf.id)
    ).all()
    assert states == ["completed"] * 3


def test_speedrun_stops_when_a_step_pauses_the_workflow(app: Flask) -> None:
    wf = PausesFirst.create()
    speedrun(wf)
    assert wf.state == "paused"
    assert runs(wf) == ["gate"]
    assert_step_executed(wf, "gate", state="canceled")


def test_speedrun_gives_up_after_max_steps_with_a_helpful_message(app: Flask) -> None:
    wf = Forever.create()
    with pytest.raises(RuntimeError) as caught:
        speedrun(wf, max_steps=5)
    message = str(caught.value)
    assert "max_steps=5" in message and "Forever" in message and "'ready'" in message
    assert run_count(wf) == 5


def test_speedrun_lets_a_step_exception_propagate_after_recording_it(app: Flask) -> None:
    wf = Raises.create()
    with pytest.raises(Boom, match="kaboom"):
        speedrun(wf)
    assert_workflow_state(wf, "paused")
    assert_step_executed(wf, "explode", state="failed")


# -- perform_next_step ------------------------------------------------------------------


def test_perform_next_step_runs_exactly_one_step_and_returns_its_execution(app: Flask) -> None:
    wf = Three.create()
    execution = perform_next_step(wf)
    assert execution.step_name == "step_one" and execution.state == "completed"
    assert wf.state == "ready"  # the workflow passed in is reloaded
    assert runs(wf) == ["step_one"]
    # The next one is hours away; the helper runs it now anyway.
    execution = perform_next_step(wf)
    assert execution.step_name == "step_two" and execution.outcome == "success"
    perform_next_step(wf)
    assert wf.state == "finished"
    assert perform_next_step(wf) is None


def test_perform_next_step_propagates_the_step_exception_after_recording_it(app: Flask) -> None:
    wf = Raises.create()
    with pytest.raises(Boom, match="kaboom"):
        perform_next_step(wf)
    assert wf.state == "paused"
    failed = db.session.scalars(
        sa.select(geneva.StepExecution).where(geneva.StepExecution.workflow_id == wf.id)
    ).one()
    assert (failed.state, failed.outcome, failed.error_message) == ("failed", "failed", "kaboom")


def test_perform_next_step_runs_nothing_on_a_paused_workflow(app: Flask) -> None:
    wf = Three.create()
    wf.pause()
    assert perform_next_step(wf) is None
    assert runs(wf) == []
    # The scheduled execution is kept for resume, not canceled by the helper.
    assert_step_executed(wf, "step_one", state="scheduled")
    wf.resume()
    assert perform_next_step(wf).step_name == "step_one"


def test_perform_next_step_commits_the_tests_pending_setup_first(app: Flask) -> None:
    wf = Three.create()
    db.session.add(Run(workflow_id=wf.id, name="setup"))
    perform_next_step(wf)
    assert runs(wf) == ["setup", "step_one"]


# -- perform_step_inline ----------------------------------------------------------------


def test_perform_step_inline_runs_the_named_step(app: Flask) -> None:
    wf = Three.create()
    execution = perform_step_inline(wf, "step_three")
    assert (execution.step_name, execution.state) == ("step_three", "completed")
    assert runs(wf) == ["step_three"]
    # step_one is still scheduled; running it continues the normal sequence.
    assert perform_step_inline(wf).step_name == "step_one"
    assert runs(wf) == ["step_three", "step_one"]


def test_perform_step_inline_names_the_available_steps_for_an_unknown_step(app: Flask) -> None:
    wf = Three.create()
    with pytest.raises(ValueError) as caught:
        perform_step_inline(wf, "nonexistent_step")
    message = str(caught.value)
    assert "Step 'nonexistent_step' is not defined in Three" in message
    assert "Available steps: step_one, step_two, step_three" in message


def test_perform_step_inline_can_run_the_same_step_twice(app: Flask) -> None:
    wf = Three.create()
    first = perform_step_inline(wf, "step_one")
    second = perform_step_inline(wf, "step_one")
    assert first.id != second.id
    assert (first.state, second.state) == ("completed", "completed")
    assert (first.attempt, second.attempt) == (1, 2)
    assert runs(wf) == ["step_one", "step_one"]


def test_perform_step_inline_refuses_a_paused_workflow(app: Flask) -> None:
    wf = Three.create()
    wf.pause()
    with pytest.raises(InvalidStateError, match="paused workflow; resume it first"):
        perform_step_inline(wf, "step_two")
    assert runs(wf) == []


# -- assertions -------------------------------------------------------------------------


def test_assert_step_executed_passes_for_completed_and_skipped_steps(app: Flask) -> None:
    wf = SkipsMiddle.create()
    speedrun(wf)
    assert_step_executed(wf, "first")
    assert_step_executed(wf, "skipped", state="skipped")
    assert_step_executed(wf, "last", state="completed")
    assert runs(wf) == ["first", "last"]


def test_assert_step_executed_fails_with_what_it_found(app: Flask) -> None:
    wf = SkipsMiddle.create()
    speedrun(wf)
    with pytest.raises(AssertionError) as caught:
        assert_step_executed(wf, "skipped")
    message = str(caught.value)
    assert "'skipped'" in message and "'completed'" in message and "found ['skipped']" in message
    with pytest.raises(AssertionError, match="found no executions"):
        fresh = SkipsMiddle.create(allow_multiple=True)
        assert_step_executed(fresh, "last")
    with pytest.raises(AssertionError, match="Available steps: first, skipped, last"):
        assert_step_executed(wf, "typo")


def test_assert_workflow_state_reloads_and_compares(app: Flask) -> None:
    wf = Three.create()
    assert_workflow_state(wf, "ready")
    speedrun(wf)
    assert_workflow_state(wf, "finished")
    with pytest.raises(AssertionError) as caught:
        assert_workflow_state(wf, "paused")
    assert str(caught.value) == (f"expected Three id={wf.id} to be 'paused', but it is 'finished'")


def test_assert_workflow_state_sees_a_change_made_elsewhere(app: Flask) -> None:
    wf = Three.create()
    assert wf.state == "ready"
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == wf.id).values(state="paused"))
    assert_workflow_state(wf, "paused")


# -- travel -----------------------------------------------------------------------------


def test_travel_moves_the_clock_inside_the_block_only(app: Flask) -> None:
    before = clock.now()
    with travel(timedelta(days=2)):
        inside = clock.now()
        assert timedelta(days=2) <= inside - before < timedelta(days=2, seconds=5)
    assert clock.now() - before < timedelta(seconds=5)


def test_travel_makes_a_waiting_step_due_for_a_real_trigger(app: Flask) -> None:
    from flask_geneva.executor import execute

    wf = Three.create()
    perform_next_step(wf)
    waiting = db.session.scalars(
        sa.select(geneva.StepExecution.id).where(
            geneva.StepExecution.workflow_id == wf.id,
            geneva.StepExecution.state == "scheduled",
        )
    ).one()
    state = app.extensions["geneva"]
    assert execute(geneva, state, waiting).status == "deferred"
    with travel(timedelta(hours=2, seconds=1)):
        assert execute(geneva, state, waiting).status == "ran"
    assert runs(wf) == ["step_one", "step_two"]


def test_abandon_next_step_leaves_what_a_killed_worker_leaves(app: Flask) -> None:
    wf = Three.create()
    lost = abandon_next_step(wf)
    assert (lost.step_name, lost.state, lost.started_at is not None) == (
        "step_one",
        "in_progress",
        True,
    )
    assert_workflow_state(wf, "performing")
    assert run_count(wf) == 0  # the claim only: no body ran, nothing of it was written
    with travel(timedelta(hours=2)):
        assert geneva.housekeeping().stuck_reattempted == 1
    speedrun(wf)
    assert_workflow_state(wf, "finished")
    assert run_count(wf) == 3


def test_abandon_next_step_refuses_a_workflow_with_nothing_scheduled(app: Flask) -> None:
    wf = PausesFirst.create()
    perform_next_step(wf)
    with pytest.raises(InvalidStateError, match="no scheduled step to abandon"):
        abandon_next_step(wf)
