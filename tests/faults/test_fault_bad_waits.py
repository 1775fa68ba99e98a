"""Hostile input: a wait that no date can hold, given to ``self.reattempt(wait=...)``.

``now + wait`` beyond the year 9999 (``timedelta(days=10**6)``, ``1e12`` seconds), an
infinite or NaN number of seconds, a negative wait: the body's call raises an ordinary
exception with a readable message, so the step's exception policy decides (by default
the workflow pauses) instead of the finalize crashing on the due time and housekeeping
running the body again and again. The same waits given to ``@step(wait=)`` or to an
``ExceptionPolicy`` fail when the class is created (tests/definition).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import Rows
from helpers import mark_model

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

Mark = mark_model(db, "fbw_marks")
rows = Rows(db, geneva, Mark, ignore_schedule=True)
committed = Committed(geneva, Mark)

#: Each hostile wait, and words its error message must contain. A timedelta holds
#: each of these, but ``now + wait`` does not (or the wait is negative): before, the
#: finalize raised OverflowError on the due time and the step ran again and again.
BAD_WAITS: dict[str, tuple[Any, str]] = {
    "ten_thousand_centuries": (timedelta(days=10**6), "at most 100 years"),
    "a_trillion_seconds": (1e12, "at most 100 years"),
    "two_hundred_years": (timedelta(days=200 * 366), "at most 100 years"),
    "negative": (timedelta(seconds=-1), "non-negative"),
    "negative_seconds": (-5, "non-negative"),
}
#: Numbers no timedelta holds: refused while the number is turned into a timedelta,
#: as an OverflowError or ValueError of the body; they pause too.
UNREPRESENTABLE_WAITS: dict[str, Any] = {
    "an_integer_too_large_for_a_timedelta": 10**30,
    "infinity": float("inf"),
    "nan": float("nan"),
}


class Choice(db.Model):  # type: ignore[name-defined,misc]
    """Which wait the step asks for (a key of BAD_WAITS)."""

    __tablename__ = "fbw_choices"
    id = sa.Column(sa.Integer, primary_key=True)
    wait = sa.Column(sa.String(50), nullable=False)


def outside_mark(workflow: Any, name: str) -> None:
    """Count a run on a connection of its own, so a rolled-back body is counted too."""
    with geneva.engine().begin() as conn:
        conn.execute(sa.insert(Mark).values(workflow_id=workflow.id, name=name))


class BadWaitWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def poll(self) -> None:
        outside_mark(self, "poll")
        wait = self.hero.wait
        self.reattempt(
            wait=BAD_WAITS[wait][0] if wait in BAD_WAITS else UNREPRESENTABLE_WAITS[wait]
        )

    @step
    def after_poll(self) -> None:
        outside_mark(self, "after_poll")


class BadWaitWithPolicy(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The step's own policy applies to the bad wait's error, as to any other."""

    @step(on_exception="skip")
    def poll(self) -> None:
        outside_mark(self, "poll")
        self.reattempt(wait=BAD_WAITS[self.hero.wait][0])

    @step
    def after_poll(self) -> None:
        outside_mark(self, "after_poll")


class BadWaitInHandler(geneva.Workflow):  # type: ignore[name-defined,misc]
    """A handler that asks for a bad wait pauses the workflow, like a handler that raises."""

    on_exception = ExceptionPolicy(
        handler=lambda workflow, error: workflow.reattempt(wait=timedelta(days=10**6))
    )

    @step
    def poll(self) -> None:
        outside_mark(self, "poll")
        raise ConnectionError("the service is down")


def _executions(workflow: Any) -> list[Any]:
    e = geneva.tables.executions
    query = sa.select(e).where(e.c.workflow_id == workflow.id).order_by(e.c.id)
    with geneva.engine().connect() as conn:
        return list(conn.execute(query))


def _housekeeping_changes_nothing(workflow: Any) -> None:
    """Long after the step ran, housekeeping finds nothing to recover or re-send."""
    before = [tuple(row) for row in _executions(workflow)]
    with travel(timedelta(days=2)):
        summary = housekeeping.run(geneva)
    assert summary.stuck_reattempted == summary.stuck_paused == summary.stuck_canceled == 0
    assert summary.retriggered == 0
    assert [tuple(row) for row in _executions(workflow)] == before


@pytest.mark.parametrize("wait", sorted(BAD_WAITS))
def test_reattempt_with_a_wait_no_date_can_hold_pauses_with_a_readable_error(
    app: Flask, wait: str
) -> None:
    hero = Choice(wait=wait)
    db.session.add(hero)
    db.session.commit()
    workflow = BadWaitWorkflow.create(hero=hero)

    report = rows.run(app, workflow, "poll")

    assert report is not None and report.status == "ran"
    assert committed.state(workflow) == "paused"
    (execution,) = _executions(workflow)
    assert (execution.state, execution.outcome) == ("failed", "failed")
    assert execution.error_class == "ValueError"
    assert execution.error_message.startswith("reattempt(wait=...) was given an invalid wait")
    assert BAD_WAITS[wait][1] in execution.error_message
    assert committed.marks(workflow) == ["poll"]
    _housekeeping_changes_nothing(workflow)
    assert committed.marks(workflow) == ["poll"]


@pytest.mark.parametrize("wait", sorted(UNREPRESENTABLE_WAITS))
def test_reattempt_with_a_number_no_timedelta_holds_pauses(app: Flask, wait: str) -> None:
    hero = Choice(wait=wait)
    db.session.add(hero)
    db.session.commit()
    workflow = BadWaitWorkflow.create(hero=hero)

    rows.run(app, workflow, "poll")

    assert committed.state(workflow) == "paused"
    (execution,) = _executions(workflow)
    assert (execution.state, execution.outcome) == ("failed", "failed")
    assert execution.error_class == "ValueError"
    assert "reattempt(wait=...) was given an invalid wait value" in execution.error_message
    _housekeeping_changes_nothing(workflow)
    assert committed.marks(workflow) == ["poll"]


def test_the_steps_exception_policy_applies_to_a_bad_reattempt_wait(app: Flask) -> None:
    hero = Choice(wait="ten_thousand_centuries")
    db.session.add(hero)
    db.session.commit()
    workflow = BadWaitWithPolicy.create(hero=hero)

    rows.run(app, workflow, "poll")
    rows.run(app, workflow, "after_poll")

    assert committed.state(workflow) == "finished"
    assert committed.history(workflow) == [
        ("poll", "skipped", "skipped"),
        ("after_poll", "completed", "success"),
    ]
    assert committed.marks(workflow) == ["poll", "after_poll"]


def test_a_handler_asking_for_a_bad_wait_pauses_the_workflow(app: Flask) -> None:
    workflow = BadWaitInHandler.create()

    rows.run(app, workflow, "poll")

    assert committed.state(workflow) == "paused"
    (execution,) = _executions(workflow)
    assert (execution.state, execution.outcome) == ("failed", "failed")
    # The step's own error is recorded; the handler's is logged.
    assert execution.error_class == "ConnectionError"
    _housekeeping_changes_nothing(workflow)
    assert committed.marks(workflow) == ["poll"]
