"""The "needs a look" filters: running but failing, overdue, waiting too long."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from admin_helpers import PREFIX
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import WorkflowFilter
from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class Busy(Exception):
    pass


class Flaky(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception=ExceptionPolicy("reattempt", wait=600, max_reattempts=5))
    def call(self) -> None:
        raise Busy("busy")


class Plain(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        pass


class Waits(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait_for="approved")
    def approve(self) -> None:
        pass


def ids(attention: str, **extra: object) -> set[int]:
    found = geneva.list_workflows(WorkflowFilter(attention=attention, **extra), limit=100)
    return {row["id"] for row in found}


def test_each_filter_finds_exactly_the_workflows_that_need_that_look(app, admin):
    flaky = Flaky.create()
    with pytest.raises(Busy):
        perform_next_step(flaky)  # its next attempt is scheduled in 10 min
    due = Plain.create()  # due now, and no worker runs here
    paused = Plain.create()
    paused.pause()  # its due step waits for resume: not overdue
    waiting = speedrun(Waits.create())
    assert ids("reattempting") == {flaky.id}
    assert ids("overdue") == set()  # due 0 s ago: not late yet
    assert ids("waiting") == set()
    with travel(timedelta(hours=2)):
        # Two hours on, the reattempt is overdue too; the paused workflow's step is not.
        assert ids("overdue") == {due.id, flaky.id}
        assert ids("waiting") == {waiting.id}
        assert ids("waiting", waiting_over=timedelta(hours=3)) == set()
        page = admin.get(f"{PREFIX}/workflows?attention=waiting&waiting_over=90").text
        assert re.findall(r'name="ids" value="(\d+)"', page) == [str(waiting.id)]
        assert '<option value="waiting" selected>' in page and 'value="90"' in page


def test_an_unknown_attention_filter_is_a_400(admin):
    response = admin.get(f"{PREFIX}/workflows?attention=sick")
    assert response.status_code == 400 and "unknown attention filter" in response.text.lower()
    with pytest.raises(ValueError, match="unknown attention filter"):
        WorkflowFilter(attention="sick")
