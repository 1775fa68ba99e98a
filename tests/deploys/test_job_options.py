"""Per-workflow job options (SPEC 13): ``create(step_job_options=)``, on the three
databases and on both priority queues (SqliteHuey, PriorityRedisHuey), read as Huey
stores the messages (no consumer runs here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import mark_model
from helpers import queue_url

from flask_geneva import Geneva
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)

Mark = mark_model(db, "job_option_marks")
rows = Rows(db, geneva, Mark, ignore_schedule=True)


class Urgentable(geneva.Workflow):  # type: ignore[name-defined,misc]
    step_job_options = {"priority": 5}

    @step
    def first(self) -> None:
        rows.mark(self, "first")

    @step
    def second(self) -> None:
        rows.mark(self, "second")


@pytest.fixture(params=["sqlite", "redis"])
def huey_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return queue_url(request.param, tmp_path)


def priorities(app: Any) -> list[Any]:
    huey = app.extensions["geneva"].huey
    return [t.priority for t in huey.pending() if t.name == "geneva.perform_step"]


def test_a_workflow_s_own_priority_reaches_every_step_s_message(app, huey):
    huey.flush()
    Urgentable.create()
    urgent = Urgentable.create(step_job_options={"priority": 50})
    # The urgent workflow's message comes out first, though it was sent last.
    assert priorities(app) == [50, 5]
    huey.flush()
    rows.run(app, urgent, "first")
    assert priorities(app) == [50]  # its next step keeps its own priority
    assert urgent.job_options == {"priority": 50}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": "fast"}, r"unknown step_job_options \['queue'\]"),
        ({"priority": "high"}, "priority"),
        ("urgent", "must be a dict"),
    ],
)
def test_bad_job_options_are_refused_and_nothing_is_created(app, options, message):
    with pytest.raises(ValueError, match=message):
        Urgentable.create(step_job_options=options)
    w = geneva.tables.workflows
    with geneva.engine().connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(w)).scalar_one() == 0
