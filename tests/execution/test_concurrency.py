"""Racing workers on real threads: a body runs once, a join is created once, SQLite copes.

Every race starts at a ``threading.Barrier`` so the threads really collide, and every
claim about "once" is checked on rows the step bodies wrote and committed themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import Geneva
from flask_geneva import executor
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)

TIMEOUT = 30


class Tally(db.Model):  # type: ignore[name-defined,misc]
    """Counts, per workflow, how many times each step body ran (written by the bodies)."""

    __tablename__ = "conc_tallies"
    id = sa.Column(sa.Integer, primary_key=True)
    first = sa.Column(sa.Integer, nullable=False, default=0)
    second = sa.Column(sa.Integer, nullable=False, default=0)
    third = sa.Column(sa.Integer, nullable=False, default=0)


def bump(workflow: Any, column: str) -> None:
    """Increment the hero's counter in SQL (no lost updates between threads)."""
    db.session.execute(
        sa.update(Tally)
        .where(Tally.id == int(workflow.hero_id))
        .values({column: Tally.__table__.c[column] + 1})
    )


class CountedWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        bump(self, "first")

    @step
    def second(self) -> None:
        bump(self, "second")

    @step
    def third(self) -> None:
        bump(self, "third")


class OrmCountedWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Bodies that read their hero through the ORM and write it back (read, then write)."""

    @step
    def first(self) -> None:
        self.hero.first += 1

    @step
    def second(self) -> None:
        self.hero.second += 1

    @step
    def third(self) -> None:
        self.hero.third += 1


class SkippingWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(skip_if=True)
    def optional(self) -> None:
        bump(self, "first")

    @step
    def after(self) -> None:
        bump(self, "second")


#: Set by a test: the two join predecessors wait here so they finish together.
JOIN_BARRIER: list[threading.Barrier] = []


class JoinWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def start(self) -> None:
        pass

    # The branches write nothing: a write would hold a lock (on SQLite, the database's)
    # until the body returns, and the other branch would queue behind it instead of
    # finalizing at the same moment.
    @step(after="start")
    def left(self) -> None:
        JOIN_BARRIER[0].wait()

    @step(after="start")
    def right(self) -> None:
        JOIN_BARRIER[0].wait()

    @step(after=["left", "right"])
    def join(self) -> None:
        bump(self, "third")


# -- helpers ---------------------------------------------------------------------------


def run_together(app: Flask, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call on a thread of its own with an app context, released at once.

    Returns the results; fails the test if any thread raised or did not end in time.
    """
    barrier = threading.Barrier(len(calls), timeout=TIMEOUT)
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                results[index] = calls[index]()
        except BaseException as error:  # reported to the test below
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish in time"
    assert not errors, f"worker threads raised: {errors!r}"
    return results


def execute_call(app: Flask, execution_id: int) -> Callable[[], Any]:
    state = app.extensions["geneva"]
    return lambda: executor.execute(geneva, state, execution_id)


committed = Committed(geneva)
scheduled = committed.scheduled
workflow_state = committed.state


def step_rows(workflow_id: int, step_name: str) -> list[tuple[str, str | None]]:
    """(state, outcome) of each execution of one step, as committed."""
    return [(state, outcome) for _, state, outcome in committed.history(workflow_id, step_name)]


def tally(tally_id: int) -> tuple[int, int, int]:
    t = Tally.__table__
    with geneva.engine().connect() as conn:
        row = conn.execute(
            sa.select(t.c.first, t.c.second, t.c.third).where(t.c.id == tally_id)
        ).one()
        return (row[0], row[1], row[2])


def new_tally() -> Tally:
    hero = Tally(first=0, second=0, third=0)
    db.session.add(hero)
    db.session.commit()
    return hero


# -- tests -----------------------------------------------------------------------------


def test_racing_workers_on_one_execution_run_its_body_exactly_once(app):
    racers = 6
    for _ in range(3):
        hero = new_tally()
        workflow_id = CountedWorkflow.create(hero=hero).id
        for step_name in ("first", "second", "third"):
            execution_id = scheduled(workflow_id)[step_name]
            reports = run_together(app, [execute_call(app, execution_id)] * racers)
            ran = [r for r in reports if r is not None and r.status == "ran"]
            assert len(ran) == 1, [r.status for r in reports]
            assert sorted(r.status for r in reports) == ["noop"] * (racers - 1) + ["ran"], [
                (r.status, r.action) for r in reports
            ]
        assert tally(hero.id) == (1, 1, 1)
        assert workflow_state(workflow_id) == "finished"
        for step_name in ("first", "second", "third"):
            assert step_rows(workflow_id, step_name) == [("completed", "success")]


def test_a_join_whose_predecessors_finish_together_on_two_threads_is_created_once(app):
    for _ in range(4):
        JOIN_BARRIER[:] = [threading.Barrier(2, timeout=TIMEOUT)]
        hero = new_tally()
        workflow_id = JoinWorkflow.create(hero=hero).id
        executor.execute(geneva, app.extensions["geneva"], scheduled(workflow_id)["start"])
        branches = scheduled(workflow_id)
        run_together(
            app, [execute_call(app, branches["left"]), execute_call(app, branches["right"])]
        )

        assert step_rows(workflow_id, "join") == [("scheduled", None)]
        executor.execute(geneva, app.extensions["geneva"], scheduled(workflow_id)["join"])
        assert tally(hero.id) == (0, 0, 1)
        assert workflow_state(workflow_id) == "finished"


def test_many_workers_finalizing_different_workflows_at_once_never_hit_a_locked_database(
    app, caplog
):
    caplog.set_level(logging.DEBUG, logger="flask_geneva")
    workers = 8
    heroes = [new_tally() for _ in range(workers)]
    workflow_ids = [OrmCountedWorkflow.create(hero=hero).id for hero in heroes]
    for step_name in ("first", "second", "third"):
        calls = [execute_call(app, scheduled(wid)[step_name]) for wid in workflow_ids]
        reports = run_together(app, calls)
        assert all(r is not None and r.status == "ran" and r.error is None for r in reports)
    assert all(workflow_state(wid) == "finished" for wid in workflow_ids)
    assert all(tally(hero.id) == (1, 1, 1) for hero in heroes)
    # Not even a retried transaction: BEGIN IMMEDIATE and the busy timeout queue writers.
    assert not [r for r in caplog.records if "locked" in r.getMessage()]


def test_racing_workers_on_a_step_that_skips_record_one_skip_and_schedule_one_successor(app):
    hero = new_tally()
    workflow_id = SkippingWorkflow.create(hero=hero).id
    execution_id = scheduled(workflow_id)["optional"]
    reports = run_together(app, [execute_call(app, execution_id)] * 6)

    assert sorted(r.status for r in reports) == ["noop"] * 5 + ["settled"]
    assert step_rows(workflow_id, "optional") == [("skipped", "skipped")]
    assert step_rows(workflow_id, "after") == [("scheduled", None)]
    assert tally(hero.id) == (0, 0, 0)
