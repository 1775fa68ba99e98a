"""The queue flushed in the middle of a run (Redis FLUSHDB, the SqliteHuey file reset).

A real consumer runs several workflows whose second step waits two seconds, so its
trigger sits in Huey's schedule. The queue is flushed while those waits are pending:
every trigger is gone, the steps stay ``scheduled`` in the database and nothing runs.
Once they are overdue by ``GENEVA_STUCK_SCHEDULED_AFTER``, housekeeping re-sends one
trigger per execution and everything finishes, each body once.

(``tests/operations/test_ops_lost_trigger.py`` covers one lost trigger of a workflow
that had not started; this is the mid-run case, on both queue storages.)
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import mark_model
from helpers import queue_url
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import Geneva
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

WORKFLOWS = 4

#: A real consumer, and two seconds of waits that must pass with nothing running.
pytestmark = pytest.mark.slow


FlushMark = mark_model(db, "fault_flush_marks")
mark = Rows(db, geneva, FlushMark).mark


class FlushedWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def start(self) -> None:
        mark(self, "start")

    @step(wait=timedelta(seconds=2))  # long enough to flush before it is due
    def follow_up(self) -> None:
        mark(self, "follow_up")

    @step(after="start")  # a parallel branch with no wait
    def notify(self) -> None:
        mark(self, "notify")

    @step(after=["follow_up", "notify"])
    def close(self) -> None:
        mark(self, "close")


@pytest.fixture
def huey_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return queue_url(getattr(request, "param", "memory"), tmp_path)


def step_states(workflow_ids: list[int]) -> dict[str, set[str]]:
    e = geneva.tables.executions
    query = sa.select(e.c.step_name, e.c.state).where(e.c.workflow_id.in_(workflow_ids))
    with geneva.engine().connect() as conn:
        found: dict[str, set[str]] = {}
        for name, state in conn.execute(query):
            found.setdefault(name, set()).add(state)
        return found


def workflow_states(workflow_ids: list[int]) -> set[str]:
    w = geneva.tables.workflows
    with geneva.engine().connect() as conn:
        return set(conn.execute(sa.select(w.c.state).where(w.c.id.in_(workflow_ids))).scalars())


def marks() -> list[tuple[int, str]]:
    t = FlushMark.__table__
    with geneva.engine().connect() as conn:
        return sorted((r.workflow_id, r.name) for r in conn.execute(sa.select(t)))


@pytest.mark.parametrize(
    ("db_url", "huey_url"),
    [("sqlite", "sqlite"), ("postgresql", "redis"), ("mariadb", "redis")],
    indirect=True,
)
def test_a_queue_flushed_mid_run_loses_nothing_once_housekeeping_re_sends_the_triggers(
    app: Flask, huey: Any
) -> None:
    # Without the periodic housekeeping: the test runs it when it means to.
    with running_consumer(huey, workers=3, periodic=False):
        ids = [FlushedWorkflow.create().id for _ in range(WORKFLOWS)]
        # Mid-run: the first steps and the parallel branch are done, the waits pending.
        wait_until(
            lambda: (
                step_states(ids).get("notify") == {"completed"}
                and step_states(ids).get("follow_up") == {"scheduled"}
            ),
            timeout=20,
        )
        huey.flush()  # every trigger, queued or scheduled, is gone
        time.sleep(2.2)  # the waits are over: nothing runs, their triggers are lost
        assert step_states(ids)["follow_up"] == {"scheduled"}
        assert "close" not in step_states(ids)
        assert workflow_states(ids) == {"ready"}

        with travel(timedelta(minutes=16)):  # past GENEVA_STUCK_SCHEDULED_AFTER
            summary = housekeeping.run(geneva)
            assert summary.retriggered == WORKFLOWS
            wait_until(lambda: workflow_states(ids) == {"finished"}, timeout=20)
            # Run again at once: nothing is overdue any more, nothing is sent twice.
            assert housekeeping.run(geneva).retriggered == 0

    assert marks() == sorted(
        (wid, name) for wid in ids for name in ("start", "follow_up", "notify", "close")
    )
    assert step_states(ids) == {
        name: {"completed"} for name in ("start", "follow_up", "notify", "close")
    }
