"""``flask geneva rerun``, ``resume-at`` and the audit options, through Click's runner.

On the three databases; every command's effect is read back from the tables.
"""

from __future__ import annotations

import getpass
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import Rows
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)

Mark = mark_model(db, "rerun_cli_marks")
rows = Rows(db, geneva, Mark, ignore_schedule=True)
committed = Committed(geneva, Mark)


class Report(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def gather(self) -> int:
        rows.mark(self, "gather")
        return 2

    @step
    def render(self, gather: int) -> int:
        rows.mark(self, "render")
        return gather * 2

    @step
    def mail(self) -> None:
        rows.mark(self, "mail")


def invoke(app: Any, *args: str, input: str | None = None) -> Any:
    result = app.test_cli_runner().invoke(args=["geneva", *args], input=input)
    assert "Traceback" not in result.output, result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), result.exception
    return result


def actions(workflow: Any) -> list[tuple[Any, ...]]:
    a = geneva.tables.actions
    query = (
        sa.select(a.c.action, a.c.step_name, a.c.actor, a.c.reason)
        .where(a.c.workflow_id == workflow.id)
        .order_by(a.c.id)
    )
    with geneva.engine().connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def test_rerun_by_id_runs_the_step_and_its_descendants_and_records_who(app):
    wf = speedrun(Report.create())
    result = invoke(
        app,
        "rerun",
        str(wf.id),
        "--from",
        "render",
        "--actor",
        "ops@example.com",
        "--reason",
        "template fixed",
    )
    assert result.exit_code == 0, result.output
    assert result.output == "rerun 1 workflow(s) from render\n"
    assert committed.state(wf) == "ready"
    speedrun(wf)
    assert Counter(committed.marks(wf)) == Counter(gather=1, render=2, mail=2)
    assert actions(wf) == [("rerun_from", "render", "ops@example.com", "template fixed")]


def test_the_actor_defaults_to_the_operating_system_user(app):
    wf = Report.create()
    assert invoke(app, "pause", str(wf.id), "--reason", "looking").exit_code == 0
    assert actions(wf) == [("pause", None, getpass.getuser(), "looking")]


def test_rerun_by_filter_asks_with_a_count_and_reruns_only_the_rerunnable(app):
    done = [speedrun(Report.create()) for _ in range(3)]
    going = Report.create()  # ready: not rerunnable, and not counted
    result = invoke(app, "rerun", "--from", "mail", "--class", "Report", input="n\n")
    assert "Rerun 3 workflow(s)?" in result.output and result.exit_code == 1
    assert all(committed.state(wf) == "finished" for wf in done)
    result = invoke(app, "rerun", "--from", "mail", "--class", "Report", "--yes")
    assert result.output == "rerun 3 workflow(s) from mail\n"
    assert all(committed.state(wf) == "ready" for wf in done)
    assert committed.state(going) == "ready" and actions(going) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "mail"], "give workflow ids, or --class"),
        (["1", "--from", "mail", "--class", "Report"], "not both"),
        (["1", "--from", "nope"], "no step 'nope'"),
    ],
)
def test_rerun_mistakes_end_as_one_error_line(app, args, message):
    speedrun(Report.create())
    result = invoke(app, "rerun", *args)
    assert result.exit_code == 1 and message in result.output


def test_a_rerun_of_a_ready_workflow_is_refused_and_says_why(app):
    wf = Report.create()
    result = invoke(app, "rerun", str(wf.id), "--from", "gather")
    assert result.exit_code == 1
    assert "pause it first" in result.output and "1 workflow(s) not rerun" in result.output
    assert actions(wf) == []


def test_resume_at_goes_on_from_the_step_and_skips_the_earlier_ones(app):
    wf = Report.create()
    wf.pause()
    result = invoke(app, "resume-at", str(wf.id), "mail", "--actor", "ops", "--reason", "manual")
    assert result.output == "resumed 1 workflow(s) at mail\n"
    speedrun(wf)
    assert committed.state(wf) == "finished" and committed.marks(wf) == ["mail"]
    assert actions(wf)[-1] == ("resume_at", "mail", "ops", "manual")


def test_an_overlong_actor_is_a_usage_error_and_changes_nothing(app):
    wf = Report.create()
    result = invoke(app, "pause", str(wf.id), "--actor", "x" * 300)
    assert result.exit_code == 2 and "at most 191" in result.output  # a usage error
    assert committed.state(wf) == "ready"
