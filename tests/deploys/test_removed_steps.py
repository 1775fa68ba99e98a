"""Removed steps (SPEC 13), on the three databases.

A deploy is played as the tests' ``deploy`` helper plays it: the workflow's row is
pointed at the next version of its class (another class in this process), and the
worker then runs the execution it had scheduled before the deploy.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import Rows
from helpers import deploy
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)

Mark = mark_model(db, "removed_marks")
rows = Rows(db, geneva, Mark, ignore_schedule=True)
committed = Committed(geneva, Mark)


class Order(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def reserve(self) -> None:
        rows.mark(self, "reserve")

    @step
    def notify_warehouse(self) -> None:
        rows.mark(self, "notify_warehouse")

    @step
    def ship(self) -> None:
        rows.mark(self, "ship")


class OrderWithoutNotify(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The next version: the warehouse is told by another system now."""

    removed_steps = ("notify_warehouse",)

    @step
    def reserve(self) -> None:
        rows.mark(self, "reserve")

    @step
    def ship(self) -> None:
        rows.mark(self, "ship")


class OrderLenient(geneva.Workflow):  # type: ignore[name-defined,misc]
    skip_undefined_steps = True

    @step
    def reserve(self) -> None:
        rows.mark(self, "reserve")

    @step
    def ship(self) -> None:
        rows.mark(self, "ship")


class OrderCareless(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The step was removed and nothing says what to do with workflows on it."""

    @step
    def reserve(self) -> None:
        rows.mark(self, "reserve")

    @step
    def ship(self) -> None:
        rows.mark(self, "ship")


def on_notify_then_deploy(app: Any, cls: type[Any]) -> Any:
    """An order whose ``notify_warehouse`` is scheduled when ``cls`` is deployed."""
    wf = Order.create()
    rows.run(app, wf, "reserve")
    assert committed.scheduled(wf).keys() == {"notify_warehouse"}
    return deploy(geneva, wf, cls)


@pytest.mark.parametrize("cls", [OrderWithoutNotify, OrderLenient])
def test_an_execution_of_a_removed_step_is_skipped_and_the_workflow_carries_on(app, cls):
    wf = on_notify_then_deploy(app, cls)
    rows.run(app, wf, "notify_warehouse")
    e = geneva.tables.executions
    query = sa.select(e.c.state, e.c.outcome, e.c.metadata).where(
        e.c.workflow_id == wf.id, e.c.step_name == "notify_warehouse"
    )
    with geneva.engine().connect() as conn:
        found = [tuple(r) for r in conn.execute(query)]
    assert found == [("skipped", "skipped", {"skip_reason": "removed_step"})]
    assert committed.scheduled(wf).keys() == {"ship"}
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert committed.marks(wf) == ["reserve", "ship"]


def test_removed_steps_in_flight_counts_the_executions_on_removed_steps(app):
    wf = on_notify_then_deploy(app, OrderWithoutNotify)
    assert OrderWithoutNotify.removed_steps_in_flight() == {"notify_warehouse": 1}
    rows.run(app, wf, "notify_warehouse")
    assert OrderWithoutNotify.removed_steps_in_flight() == {}


def test_an_undefined_step_that_is_not_removed_pauses_the_workflow(app):
    wf = on_notify_then_deploy(app, OrderCareless)
    rows.run(app, wf, "notify_warehouse")
    assert committed.state(wf) == "paused"
    assert ("notify_warehouse", "failed", "failed") in committed.history(wf)
    # The current graph's next step waits, scheduled, for an operator's decision.
    rows.run(app, wf, "ship")
    assert committed.marks(wf) == ["reserve"]
    assert wf.resume_at("ship") == []
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert committed.marks(wf) == ["reserve", "ship"]


def test_resume_after_an_undefined_step_paused_goes_on_with_the_current_graph(app):
    wf = on_notify_then_deploy(app, OrderCareless)
    rows.run(app, wf, "notify_warehouse")
    assert committed.state(wf) == "paused"
    wf.resume(actor="ops", reason="the warehouse is told elsewhere now")
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert committed.marks(wf) == ["reserve", "ship"]
    # The vanished step was not run again: its one execution is the failed one.
    assert [h for h in committed.history(wf) if h[0] == "notify_warehouse"] == [
        ("notify_warehouse", "failed", "failed")
    ]
