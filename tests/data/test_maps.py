"""Map steps (SPEC 11): one execution per item, max_parallel, the join, the list output.

Every test runs on SQLite, PostgreSQL and MariaDB with the real executor.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import mark_model

from flask_geneva import DefinitionError
from flask_geneva import Geneva
from flask_geneva import OutputError
from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)
APP_CONFIG = {"GENEVA_MAX_MAP_ITEMS": 50}

Mark = mark_model(db, "map_marks", note=sa.Column(sa.String(500), nullable=True))


def mark(workflow: Any, name: str, note: Any = None) -> None:
    db.session.add(Mark(workflow_id=workflow.id, name=name, note=repr(note)))


def marks(workflow: Any) -> list[tuple[str, str]]:
    rows = db.session.execute(
        sa.select(Mark).where(Mark.workflow_id == workflow.id).order_by(Mark.id)
    ).scalars()
    return [(m.name, m.note) for m in rows]


def executions(workflow: Any) -> list[tuple[Any, ...]]:
    e = geneva.tables.executions
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.c.step_name, e.c.item_index, e.c.state, e.c.output)
            .where(e.c.workflow_id == workflow.id)
            .order_by(e.c.id)
        ).all()
    return [tuple(r) for r in rows]


class Pages(geneva.Workflow):  # type: ignore[name-defined,misc]
    pages: Any = ["one", "two", "three"]

    @step
    def split(self) -> Any:
        return Pages.pages

    @step(for_each="split", max_parallel=2)
    def summarise(self) -> str:
        mark(self, "summarise", (self.item_index, self.item))
        return self.item.upper()

    @step
    def join(self, summarise: list[str]) -> str:
        mark(self, "join", summarise)
        return " ".join(summarise)


def test_each_item_runs_once_and_the_join_gets_their_outputs_in_order(app):
    Pages.pages = ["one", "two", "three"]
    wf = Pages.create()
    speedrun(wf)
    assert wf.state == "finished"
    assert marks(wf) == [
        ("summarise", repr((0, "one"))),
        ("summarise", repr((1, "two"))),
        ("summarise", repr((2, "three"))),
        ("join", repr(["ONE", "TWO", "THREE"])),
    ]
    assert wf.output_of("summarise") == ["ONE", "TWO", "THREE"]
    assert wf.output_of("join") == "ONE TWO THREE"


def test_max_parallel_releases_the_next_item_as_one_ends(app):
    Pages.pages = ["a", "b", "c", "d", "e"]
    wf = Pages.create()
    perform_next_step(wf)  # split
    seen = []
    while True:
        rows = executions(wf)
        active = [r for r in rows if r[0] == "summarise" and r[2] == "scheduled"]
        seen.append(len(active))
        if perform_next_step(wf) is None:
            break
    assert max(seen) == 2
    assert wf.state == "finished"
    items = [r[1] for r in executions(wf) if r[0] == "summarise"]
    assert items == [0, 1, 2, 3, 4]


def test_an_empty_list_completes_the_map_step_at_once_with_an_empty_list(app):
    Pages.pages = []
    wf = Pages.create()
    speedrun(wf)
    assert wf.state == "finished"
    assert executions(wf) == [
        ("split", None, "completed", []),
        ("summarise", None, "completed", []),
        ("join", None, "completed", ""),
    ]
    assert marks(wf) == [("join", "[]")]


@pytest.mark.parametrize(
    ("pages", "message"),
    [
        ({"not": "a list"}, "returned dict, but map step 'summarise' runs over its output"),
        (None, "returned NoneType, but map step 'summarise'"),
        (list(range(51)), "returned 51 items, over GENEVA_MAX_MAP_ITEMS=50"),
    ],
)
def test_a_producer_that_returns_no_list_or_too_many_items_fails_clearly(app, pages, message):
    Pages.pages = pages
    wf = Pages.create()
    with pytest.raises(OutputError, match=message):
        perform_next_step(wf)
    assert wf.state == "paused"
    assert executions(wf) == [("split", None, "failed", None)]


def test_a_map_step_needs_an_ancestor_producer_and_a_positive_max_parallel():
    with pytest.raises(DefinitionError, match="for_each='nope' is not a step"):

        class NoProducer(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step(for_each="nope")
            def each(self) -> None: ...

    with pytest.raises(DefinitionError, match="for_each='other' is not an ancestor"):

        class Sideways(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step
            def split(self) -> list[int]:
                return []

            @step(after=[])
            def other(self) -> list[int]:
                return []

            @step(for_each="other", after="split")
            def each(self) -> None: ...

    with pytest.raises(DefinitionError, match="max_parallel= must be a positive"):

        class Zero(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step
            def split(self) -> list[int]:
                return []

            @step(for_each="split", max_parallel=0)
            def each(self) -> None: ...

    with pytest.raises(DefinitionError, match="max_parallel= applies only to a map step"):

        class NotAMap(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step(max_parallel=2)
            def each(self) -> None: ...
