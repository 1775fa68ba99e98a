"""Exactly-once database effects: a body's writes commit with its outcome, or not at all.

On every database: what a step body writes through ``db.session`` is committed in the
finalize transaction, so the write and the outcome are both there or neither is; a
body that raises leaves none of its writes; a commit refused by the database is the
step's exception. And ``self.idempotency_key``, the key for effects outside the
database: the same on every run of a step (reattempt, recovery, resume), another for
another step or workflow.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import mark_model

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import StepNotDefinedError
from flask_geneva import WorkflowNotFoundError
from flask_geneva import housekeeping
from flask_geneva import operations
from flask_geneva import step
from flask_geneva.testing import abandon_next_step
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

#: What bodies saw, outside the database (a list survives a rollback).
seen: list[tuple[int, str, Any]] = []


Effect = mark_model(db, "exactly_once_effects")
committed = Committed(geneva, Effect)
effects = committed.marks
history = committed.history
workflow_state = committed.state


class Parent(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "exactly_once_parents"
    id = sa.Column(sa.Integer, primary_key=True)


class Child(db.Model):  # type: ignore[name-defined,misc]
    """Its foreign key is checked at COMMIT (PostgreSQL and SQLite), not at the INSERT."""

    __tablename__ = "exactly_once_children"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["parent_id"], [Parent.id], deferrable=True, initially="DEFERRED"
        ).ddl_if(dialect=("postgresql", "sqlite")),  # type: ignore[arg-type]
    )
    id = sa.Column(sa.Integer, primary_key=True)
    parent_id = sa.Column(sa.Integer, nullable=False)


def effect(workflow: Any, name: str) -> None:
    db.session.add(Effect(workflow_id=workflow.id, name=name))


class Writes(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def write(self) -> None:
        effect(self, "write")
        seen.append((self.id, "write", self.idempotency_key))

    @step
    def then(self) -> None:
        effect(self, "then")
        seen.append((self.id, "then", self.idempotency_key))


class WritesAndRaises(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def write(self) -> None:
        effect(self, "write")
        db.session.flush()  # the row reached the database inside the open transaction
        raise ValueError("after writing")


class CommitRefused(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def orphan(self) -> None:
        effect(self, "orphan")
        db.session.add(Child(parent_id=10_000))  # no such parent: refused at COMMIT


class Transient(Exception):
    pass


class Flaky(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Fails once (reattempted), pauses once (resumed), then runs; a test kills it between."""

    @step(on_exception=ExceptionPolicy("reattempt", exceptions=(Transient,)))
    def charge(self) -> None:
        runs = [s for s in seen if s[:2] == (self.id, "charge")]
        seen.append((self.id, "charge", self.idempotency_key))
        effect(self, "charge")
        if len(runs) == 0:
            raise Transient("gateway timeout")
        if len(runs) == 1:
            self.pause()


class KillsItsWorker(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def crash(self) -> None:
        effect(self, "crash")


class LooksAtItself(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def look(self) -> None:
        e = geneva.tables.executions
        state = db.session.execute(
            sa.select(e.c.state).where(e.c.workflow_id == self.id, e.c.step_name == "look")
        ).scalar_one()
        seen.append((self.id, "look", state))


@pytest.fixture(autouse=True)
def _clean() -> Any:
    seen.clear()
    yield
    seen.clear()


def die_in(workflow: Any) -> None:
    """The worker running the next step is killed mid-body: its execution stays in progress."""
    db.session.rollback()
    abandon_next_step(workflow)


def test_a_bodys_writes_commit_with_its_outcome(app: Flask) -> None:
    wf = Writes.create()
    perform_next_step(wf)
    assert effects(wf.id) == ["write"]
    assert history(wf.id) == [("write", "completed", "success"), ("then", "scheduled", None)]
    perform_next_step(wf)
    assert effects(wf.id) == ["write", "then"]
    assert workflow_state(wf.id) == "finished"


def test_a_body_that_raises_leaves_none_of_its_writes(app: Flask) -> None:
    wf = WritesAndRaises.create()
    with pytest.raises(ValueError, match="after writing"):
        perform_next_step(wf)
    assert effects(wf.id) == []
    assert history(wf.id) == [("write", "failed", "failed")]
    assert workflow_state(wf.id) == "paused"


def test_a_commit_the_database_refuses_leaves_neither_writes_nor_success(app: Flask) -> None:
    dialect = geneva.engine().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        pytest.skip(f"{dialect} checks foreign keys at the INSERT: no commit-time refusal")
    wf = CommitRefused.create()
    with pytest.raises(sa.exc.IntegrityError):
        perform_next_step(wf)
    # The refusal is the step's exception (default policy: pause), recorded in a
    # transaction of its own; the body's other write went with the refused commit.
    assert history(wf.id) == [("orphan", "failed", "failed")]
    assert workflow_state(wf.id) == "paused"
    assert effects(wf.id) == []
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        error_class = conn.execute(
            sa.select(e.c.error_class).where(e.c.workflow_id == wf.id)
        ).scalar_one()
    assert "IntegrityError" in error_class


def test_a_worker_killed_mid_body_leaves_no_write_and_the_recovery_writes_once(
    app: Flask,
) -> None:
    wf = Flaky.create()
    with pytest.raises(Transient):
        perform_next_step(wf)  # run 1: raises, rolled back, reattempted
    die_in(wf)  # the worker of the second attempt is killed before its finalize
    assert effects(wf.id) == []
    with travel(timedelta(hours=2)):
        summary = housekeeping.run(geneva)
    assert summary.stuck_reattempted == 1
    perform_next_step(wf)  # run 2: pauses (in-step), its write goes with the outcome
    assert workflow_state(wf.id) == "paused"
    db.session.get(geneva.Workflow, wf.id).resume()
    perform_next_step(wf)  # run 3: completes
    assert workflow_state(wf.id) == "finished"
    assert [s[1] for s in seen] == ["charge"] * 3
    # Run 2 paused by flow control: its write committed with that outcome. Run 3 wrote
    # once more. Run 1 (raised) and the killed attempt left nothing.
    assert effects(wf.id) == ["charge", "charge"]
    assert [(x[1], x[2]) for x in history(wf.id)] == [
        ("completed", "reattempted"),
        ("failed", "recovered"),
        ("canceled", "canceled"),
        ("completed", "success"),
    ]


def test_the_idempotency_key_is_the_same_for_every_run_of_a_step(app: Flask) -> None:
    wf = Flaky.create()
    with pytest.raises(Transient):
        perform_next_step(wf)
    die_in(wf)
    with travel(timedelta(hours=2)):
        housekeeping.run(geneva)
    perform_next_step(wf)
    db.session.get(geneva.Workflow, wf.id).resume()
    perform_next_step(wf)
    keys = {key for _, _, key in seen}
    assert len(seen) == 3 and len(keys) == 1  # reattempt, recovery and resume: one key
    (key,) = keys
    assert isinstance(key, str) and 0 < len(key) <= 64


def test_the_idempotency_key_differs_between_steps_and_between_workflows(app: Flask) -> None:
    first, second = Writes.create(), Writes.create()
    speedrun(first)
    speedrun(second)
    keys = [key for _, _, key in seen]
    assert len(keys) == 4 and len(set(keys)) == 4
    # Outside the step, the same key is found by name (to look a call up later).
    loaded = db.session.get(geneva.Workflow, first.id)
    assert [loaded.idempotency_key_for(name) for name in ("write", "then")] == keys[:2]


def test_the_idempotency_key_is_refused_outside_a_step(app: Flask) -> None:
    wf = Writes.create()
    with pytest.raises(InvalidStateError, match="inside a step"):
        wf.idempotency_key  # noqa: B018
    with pytest.raises(ValueError, match="takes a step name"):
        wf.idempotency_key_for("")


def test_a_body_reads_its_own_execution_as_in_progress_through_the_session(app: Flask) -> None:
    # MariaDB's REPEATABLE READ keeps a transaction's first snapshot: the body's reads
    # must start after its claim committed, not before.
    db.session.execute(sa.select(1))  # the test's session holds a transaction
    wf = LooksAtItself.create()
    perform_next_step(wf)
    assert seen == [(wf.id, "look", "in_progress")]


def test_a_step_that_keeps_killing_its_worker_pauses_past_the_recovery_limit(
    app: Flask,
) -> None:
    state = app.extensions["geneva"]
    state.config = dataclasses.replace(state.config, max_recoveries=2)
    wf = KillsItsWorker.create()
    for hours in (2, 4):
        die_in(wf)
        with travel(timedelta(hours=hours)):
            assert housekeeping.run(geneva).stuck_reattempted == 1
        assert workflow_state(wf.id) == "ready"
    die_in(wf)
    with travel(timedelta(hours=6)):
        summary = housekeeping.run(geneva)
    assert (summary.stuck_reattempted, summary.stuck_paused) == (0, 1)
    assert workflow_state(wf.id) == "paused"
    assert [x[2] for x in history(wf.id)] == ["recovered"] * 3
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        message = conn.execute(
            sa.select(e.c.error_message).where(e.c.workflow_id == wf.id).order_by(e.c.id.desc())
        ).first()[0]  # type: ignore[index]
    assert "kept killing its worker" in message and "3 times in a row" in message
    assert "GENEVA_MAX_RECOVERIES=2" in message


def test_a_step_no_longer_defined_raises_step_not_defined_after_the_pause_commits(
    app: Flask,
) -> None:
    wf = Writes.create()
    e = geneva.tables.executions
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(e).where(e.c.workflow_id == wf.id).values(step_name="renamed"))
    with pytest.raises(StepNotDefinedError) as raised:
        perform_next_step(wf)
    assert raised.value.workflow_id == wf.id and raised.value.execution_id is not None
    assert workflow_state(wf.id) == "paused"  # committed before the error was raised


def test_an_operation_on_a_missing_workflow_raises_workflow_not_found(app: Flask) -> None:
    with pytest.raises(WorkflowNotFoundError, match="workflow 424242 does not exist"):
        operations.perform(geneva, "pause", [424242])
    result = operations.perform(geneva, "cancel", [424242], raise_errors=False)
    assert result.errors == {424242: "workflow 424242 does not exist"}
