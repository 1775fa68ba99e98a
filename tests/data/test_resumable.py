"""Resumable steps (SPEC 12): the cursor, checkpoints, continuations and resuming from them.

Every test runs on SQLite, PostgreSQL and MariaDB with the real executor.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from typing import ClassVar

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import TIMEOUT
from helpers import Committed
from helpers import mark_model
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import DefinitionError
from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import OutputError
from flask_geneva import step
from flask_geneva.housekeeping import run as housekeeping
from flask_geneva.testing import abandon_next_step
from flask_geneva.testing import assert_cursor
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

Mark = mark_model(db, "resumable_marks", n=sa.Column(sa.Integer, nullable=True))
committed = Committed(geneva, Mark)


def mark(workflow: Any, name: str, n: int | None = None) -> None:
    db.session.add(Mark(workflow_id=workflow.id, name=name, n=n))


def rows(workflow: Any, name: str = "row") -> list[int]:
    """The committed ``n`` of the marks ``name``, in the order they committed."""
    t = Mark.__table__
    query = (
        sa.select(t.c.n).where(t.c.workflow_id == workflow.id, t.c.name == name).order_by(t.c.id)
    )
    with geneva.engine().connect() as conn:
        return list(conn.execute(query).scalars())


def executions(workflow: Any, step_name: str = "work") -> list[dict[str, Any]]:
    e = geneva.tables.executions
    query = (
        sa.select(
            e.c.id,
            e.c.state,
            e.c.outcome,
            e.c.cursor,
            e.c.iterations,
            e.c.continues_id,
            e.c.item_index,
            e.c.consecutive_reattempts,
        )
        .where(e.c.workflow_id == workflow.id, e.c.step_name == step_name)
        .order_by(e.c.id)
    )
    with geneva.engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


class Counting(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Writes one row per number up to ``total``, checkpointing after each."""

    total = 5
    #: Raise once, after checkpointing this number (None: never).
    fail_after: ClassVar[int | None] = None
    seen: ClassVar[list[Any]] = []

    @step(resumable=True, max_iterations=2)
    def work(self) -> str:
        Counting.seen.append(self.cursor)
        start = self.cursor or 0
        for n in range(start + 1, Counting.total + 1):
            mark(self, "row", n)
            self.checkpoint(n)
            if Counting.fail_after == n:
                Counting.fail_after = None
                mark(self, "row", -n)  # after the checkpoint: rolled back with the exception
                raise RuntimeError("boom")
        return "done"

    @step
    def after(self) -> None:
        mark(self, "after")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Counting.total, Counting.fail_after, Counting.seen = 5, None, []


def test_the_cursor_is_none_at_first_and_each_checkpoint_commits_its_rows(app):
    wf = Counting.create()
    execution = perform_next_step(wf)
    assert execution is not None
    assert Counting.seen == [None]
    # Checkpoint 1 committed by itself; checkpoint 2 reached max_iterations=2.
    assert (execution.state, execution.outcome) == ("completed", "continued")
    assert rows(wf) == [1, 2]
    assert_cursor(wf, "work", 2)


def test_max_iterations_ends_the_execution_continued_and_links_the_next_one(app):
    wf = Counting.create()
    speedrun(wf)
    assert committed.state(wf) == "finished"
    found = executions(wf)
    assert [(x["state"], x["outcome"]) for x in found] == [
        ("completed", "continued"),
        ("completed", "continued"),
        ("completed", "success"),
    ]
    assert [x["cursor"] for x in found] == [2, 4, 5]
    assert [x["iterations"] for x in found] == [2, 2, 1]
    assert [x["continues_id"] for x in found] == [None, found[0]["id"], found[1]["id"]]
    assert Counting.seen == [None, 2, 4]
    assert rows(wf) == [1, 2, 3, 4, 5]  # each exactly once
    assert rows(wf, "after") == [None]


def test_other_work_runs_between_continuations(app):
    first, second = Counting.create(), Counting.create()
    perform_next_step(first)
    # The continuation is a new execution due now: the other workflow's step runs
    # while it waits its turn.
    perform_next_step(second)
    assert [x["outcome"] for x in executions(first)] == ["continued", None]
    assert executions(first)[1]["state"] == "scheduled"
    assert rows(second) == [1, 2]


def test_an_exception_after_a_checkpoint_resumes_from_it_with_earlier_rows_kept_once(app):
    Counting.fail_after = 1
    wf = Counting.create()
    with pytest.raises(RuntimeError, match="boom"):
        perform_next_step(wf)
    assert committed.state(wf) == "paused"  # the default policy
    assert rows(wf) == [1]  # the row after the checkpoint was rolled back
    assert_cursor(wf, "work", 1)
    wf.resume()
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert Counting.seen[:2] == [None, 1]
    assert rows(wf) == [1, 2, 3, 4, 5]


class Reattempting(geneva.Workflow):  # type: ignore[name-defined,misc]
    failures = 0

    @step(resumable=True, max_iterations=3, on_exception="reattempt")
    def work(self) -> None:
        for n in range((self.cursor or 0) + 1, 9):
            mark(self, "row", n)
            self.checkpoint(n)
            if n == 4 and Reattempting.failures < 1:
                Reattempting.failures += 1
                raise ConnectionError("flaky")


def test_a_reattempt_resumes_from_the_checkpoint_and_continuations_do_not_count(app):
    Reattempting.failures = 0
    wf = Reattempting.create()
    with pytest.raises(ConnectionError):  # the helpers raise it, after recording it
        speedrun(wf)
    speedrun(wf)
    assert committed.state(wf) == "finished"
    found = executions(wf)
    assert [x["outcome"] for x in found] == ["continued", "reattempted", "continued", "success"]
    assert [x["cursor"] for x in found] == [3, 4, 7, 8]
    # One exception: the counter is 1 after it; continuations do not add to it.
    assert [x["consecutive_reattempts"] for x in found] == [0, 0, 1, 1]
    assert rows(wf) == [1, 2, 3, 4, 5, 6, 7, 8]


class Pausing(geneva.Workflow):  # type: ignore[name-defined,misc]
    pause_at: ClassVar[int | None] = 2

    @step(resumable=True)
    def work(self) -> None:
        for n in range((self.cursor or 0) + 1, 5):
            mark(self, "row", n)
            self.checkpoint(n)
            if n == Pausing.pause_at:
                Pausing.pause_at = None
                self.pause()


def test_a_pause_in_the_body_resumes_from_the_last_checkpoint(app):
    Pausing.pause_at = 2
    wf = Pausing.create()
    perform_next_step(wf)
    assert committed.state(wf) == "paused"
    assert rows(wf) == [1, 2]
    wf.resume()
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert rows(wf) == [1, 2, 3, 4]


def test_a_lost_worker_is_recovered_and_resumes_from_the_last_checkpoint(app):
    wf = Counting.create()
    perform_next_step(wf)  # continued at 2
    abandon_next_step(wf)  # the continuation's worker is lost mid-body
    stuck = app.config["GENEVA_STUCK_IN_PROGRESS_AFTER"]
    with travel(timedelta(seconds=getattr(stuck, "total_seconds", lambda: stuck)() + 60)):
        housekeeping(geneva)
    found = executions(wf)
    assert [(x["state"], x["outcome"]) for x in found] == [
        ("completed", "continued"),
        ("failed", "recovered"),
        ("scheduled", None),
    ]
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert Counting.seen == [None, 2, 4]
    assert rows(wf) == [1, 2, 3, 4, 5]


class Items(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def split(self) -> list[int]:
        return [3, 2]

    @step(for_each="split", resumable=True, max_iterations=2)
    def work(self) -> None:
        for n in range((self.cursor or 0) + 1, self.item + 1):
            mark(self, f"item{self.item_index}", n)
            self.checkpoint(n)


def test_a_map_items_cursor_is_its_own(app):
    wf = Items.create()
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert rows(wf, "item0") == [1, 2, 3]
    assert rows(wf, "item1") == [1, 2]
    assert_cursor(wf, "work", 3, item_index=0)
    assert_cursor(wf, "work", 2, item_index=1)
    by_item = {}
    for x in executions(wf):
        by_item.setdefault(x["item_index"], []).append(x["outcome"])
    assert by_item == {0: ["continued", "success"], 1: ["continued"] + ["success"]}


class Bad(geneva.Workflow):  # type: ignore[name-defined,misc]
    value: ClassVar[Any] = None

    @step(resumable=True)
    def work(self) -> None:
        self.checkpoint(Bad.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "cannot be told apart"),
        ({1, 2}, "cannot be stored as its cursor"),
        (float("nan"), "cannot be stored as its cursor"),
        ("x" * 300_000, "over GENEVA_MAX_OUTPUT_BYTES=262,144"),
        ("page\x00token", "holding a NUL character"),
    ],
)
def test_a_bad_checkpoint_value_fails_the_step_naming_it(app, value, message):
    Bad.value = value
    wf = Bad.create()
    with pytest.raises(OutputError, match=message) as raised:
        perform_next_step(wf)
    assert "'work'" in str(raised.value)
    assert committed.state(wf) == "paused"


class Plain(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def work(self) -> None:
        self.checkpoint(1)


def test_cursor_and_checkpoint_outside_a_resumable_step_raise_clearly(app):
    wf = Plain.create()
    with pytest.raises(InvalidStateError, match="step 'work' is not resumable"):
        perform_next_step(wf)
    with pytest.raises(InvalidStateError, match="only defined inside a step body"):
        wf.cursor  # noqa: B018
    with pytest.raises(InvalidStateError, match="only defined inside a step body"):
        wf.checkpoint(1)
    with pytest.raises(AssertionError, match="not resumable"):
        assert_cursor(wf, "work", None)
    with pytest.raises(AssertionError, match="Available steps: work"):
        assert_cursor(wf, "nope", None)


def test_assert_cursor_says_what_it_found(app):
    wf = Counting.create()
    assert_cursor(wf, "work", None)
    perform_next_step(wf)
    with pytest.raises(AssertionError, match=r"to be 3, but it is 2"):
        assert_cursor(wf, "work", 3)


class Slow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(resumable=True, max_runtime=timedelta(seconds=0.2))
    def work(self) -> None:
        for n in range((self.cursor or 0) + 1, 1000):
            mark(self, "row", n)
            threading.Event().wait(0.05)
            self.checkpoint(n)


def test_max_runtime_ends_the_execution_continued(app):
    wf = Slow.create()
    perform_next_step(wf)
    first = executions(wf)[0]
    assert first["outcome"] == "continued"
    assert 2 <= first["iterations"] <= 10
    assert rows(wf) == list(range(1, first["cursor"] + 1))
    perform_next_step(wf)
    second = executions(wf)[1]
    assert second["continues_id"] == first["id"]
    assert rows(wf) == list(range(1, second["cursor"] + 1))


class Endless(geneva.Workflow):  # type: ignore[name-defined,misc]
    started = threading.Event()

    @step(resumable=True)
    def work(self) -> None:
        for n in range((self.cursor or 0) + 1, 100_000):
            mark(self, "row", n)
            Endless.started.set()
            threading.Event().wait(0.02)
            self.checkpoint(n)


def test_a_graceful_shutdown_ends_the_step_continued_at_its_next_checkpoint(app):
    Endless.started.clear()
    wf = Endless.create()
    db.session.commit()
    huey = app.extensions["geneva"].huey
    with running_consumer(huey, workers=1, periodic=False) as consumer:
        wait_until(lambda: Endless.started.is_set(), timeout=TIMEOUT)
        consumer.stop(graceful=True)  # returns once the worker finished its task
    found = executions(wf)
    assert [(x["state"], x["outcome"]) for x in found] == [
        ("completed", "continued"),
        ("scheduled", None),
    ]
    assert found[1]["continues_id"] == found[0]["id"]
    assert rows(wf) == list(range(1, found[0]["cursor"] + 1))


class Recovered(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(resumable=True)
    def work(self) -> None:
        mark(self, "row", 1)
        self.checkpoint(1)
        e = geneva.tables.executions
        with geneva.engine().begin() as conn:  # what housekeeping's recovery leaves
            conn.execute(sa.update(e).where(e.c.workflow_id == self.id).values(state="failed"))
        mark(self, "row", 2)
        self.checkpoint(2)
        mark(self, "row", 3)


def test_a_checkpoint_after_a_recovery_stops_the_body_and_discards_its_writes(app):
    wf = Recovered.create()
    perform_next_step(wf)
    assert rows(wf) == [1]
    assert_cursor(wf, "work", 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resumable": "yes"}, "resumable= must be True or False"),
        ({"max_iterations": 3}, "applies only to a resumable step"),
        ({"resumable": True, "max_iterations": 0}, "max_iterations= must be a positive"),
        ({"resumable": True, "max_runtime": -1}, "max_runtime"),
    ],
)
def test_bad_resumable_options_are_definition_errors(options, message):
    with pytest.raises(DefinitionError, match=message):

        class Wrong(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step(**options)
            def work(self) -> None: ...
