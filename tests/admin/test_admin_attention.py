"""The "needs a look" filters: running but failing, overdue, waiting too long."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from admin_helpers import PREFIX
from flask_sqlalchemy import SQLAlchemy
from helpers import deploy

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import WorkflowFilter
from flask_geneva import queries
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


class Old(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        pass

    @step
    def gone(self) -> None:
        pass


class New(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The next version of Old: ``gone`` was removed, and nothing says so."""

    @step
    def first(self) -> None:
        pass


class NewFixed(geneva.Workflow):  # type: ignore[name-defined,misc]
    removed_steps = ("gone",)

    @step
    def first(self) -> None:
        pass


def test_stranded_finds_what_check_reports(app, admin):
    fine, orphan = Plain.create().id, Plain.create().id
    first, second = Old.create(), Old.create()
    perform_next_step(first)  # gone is scheduled
    perform_next_step(second)
    stranded, safe = first.id, second.id
    deploy(geneva, stranded, New)
    deploy(geneva, safe, NewFixed)  # gone is in removed_steps: it will be skipped
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == orphan).values(type="RenamedAway"))
    assert ids("stranded") == {stranded, orphan}
    assert fine not in ids("stranded") and safe not in ids("stranded")
    page = admin.get(f"{PREFIX}/workflows?attention=stranded").text
    assert sorted(re.findall(r'name="ids" value="(\d+)"', page)) == sorted(
        [str(stranded), str(orphan)]
    )


def test_error_text_search_finds_the_newest_failure_whatever_its_case(app, admin):
    flaky = Flaky.create()
    with pytest.raises(Busy):
        perform_next_step(flaky)  # reattempted: not a failure that stays
    broken = Broken_.create()
    with pytest.raises(RuntimeError):
        perform_next_step(broken)
    found = geneva.list_workflows(WorkflowFilter(error="DISK FULL"), limit=10)
    assert [row["id"] for row in found] == [broken.id]
    assert geneva.list_workflows(WorkflowFilter(error="100%_"), limit=10) == []
    page = admin.get(f"{PREFIX}/workflows?error=disk").text
    assert re.findall(r'name="ids" value="(\d+)"', page) == [str(broken.id)]
    assert 'name="error" value="disk"' in page


class Broken_(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def write(self) -> None:
        raise RuntimeError("disk full on /var")


def test_an_unknown_attention_filter_is_a_400(admin):
    response = admin.get(f"{PREFIX}/workflows?attention=sick")
    assert response.status_code == 400 and "unknown attention filter" in response.text.lower()
    with pytest.raises(ValueError, match="unknown attention filter"):
        WorkflowFilter(attention="sick")


@pytest.mark.parametrize("limit", [1, 1000])
def test_few_or_many_matches_the_filters_find_the_same_workflows(
    app, limit: int, monkeypatch: pytest.MonkeyPatch
):
    # Up to the limit the matching ids are handed to the database as a list; past it,
    # a subquery (attention) or a probe per workflow, newest first (error text).
    monkeypatch.setattr(queries, "STEP_CANDIDATES_LIMIT", limit)
    flaky, broken = [Flaky.create() for _ in range(3)], [Broken_.create() for _ in range(3)]
    waiting = Plain.create()  # its step is due now, and no worker takes it
    for workflow in flaky:
        with pytest.raises(Busy):
            perform_next_step(workflow)
    for workflow in broken:
        with pytest.raises(RuntimeError):
            perform_next_step(workflow)
    assert ids("reattempting") == {w.id for w in flaky}
    found = geneva.list_workflows(WorkflowFilter(error="disk full"), limit=2)
    assert [row["id"] for row in found] == sorted((w.id for w in broken), reverse=True)[:2]
    assert geneva.count_workflows(WorkflowFilter(error="DISK")) == 3
    assert geneva.count_workflows(WorkflowFilter(error="disk", states=("ready",))) == 0
    with travel(timedelta(minutes=11)):  # the reattempts were due, and no worker ran them
        assert ids("overdue") == {w.id for w in flaky} | {waiting.id}


class Picky(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def check(self) -> None:
        raise (KeyError if self.id % 2 else ValueError)("bad input")


def test_a_failure_group_links_to_its_own_error_class_on_a_shared_step(app, admin):
    # Two groups on one step: each count links to its own workflows, not both groups'.
    made = [Picky.create(allow_multiple=True) for _ in range(4)]
    keyed = [w for w in made if w.id % 2]
    valued = [w for w in made if not w.id % 2]
    for workflow in made:
        with pytest.raises((KeyError, ValueError)):
            perform_next_step(workflow)
    page = admin.get(f"{PREFIX}/").text
    links = dict(
        (m.group(2), m.group(1).replace("&amp;", "&"))
        for m in re.finditer(r'<a href="([^"]+)" class="failure-count">(\d+)</a>', page)
    )
    assert set(links) == {"2"}  # two groups of two
    links = {
        m.group(1): m.group(2).replace("&amp;", "&")
        for m in re.finditer(
            r'data-failure-group="Picky:check:(\w+)".*?<a href="([^"]+)"'
            r' class="failure-count">',
            page,
            re.S,
        )
    }
    assert "error_class=KeyError" in links["KeyError"]
    listed = admin.get(links["KeyError"]).text
    assert sorted(re.findall(r'name="ids" value="(\d+)"', listed)) == sorted(
        str(w.id) for w in keyed
    )
    assert 'name="error_class" value="KeyError"' in listed
    only = WorkflowFilter(error_class="ValueError")
    found = geneva.list_workflows(only, limit=10)
    assert sorted(r["id"] for r in found) == sorted(w.id for w in valued)
