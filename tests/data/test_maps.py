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


class Flaky(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Items whose value is in ``fail`` raise; the policy is the default (pause)."""

    fail: set[str] = set()
    items: list[str] = ["a", "b", "c", "d"]

    @step
    def split(self) -> list[str]:
        return Flaky.items

    @step(for_each="split", max_parallel=2)
    def each(self) -> str:
        mark(self, "each", self.item)
        if self.item in Flaky.fail:
            raise RuntimeError(f"item {self.item} broke")
        return self.item * 2

    @step
    def join(self, each: list[Any]) -> None:
        mark(self, "join", each)


def item_rows(workflow: Any, step_name: str = "each") -> list[tuple[Any, ...]]:
    """(item index, state) of the map step's items (not its own row)."""
    return [(r[1], r[2]) for r in executions(workflow) if r[0] == step_name and r[1] is not None]


def test_a_failed_item_pauses_and_resume_runs_only_the_failed_item_again(app):
    Flaky.fail, Flaky.items = {"b"}, ["a", "b", "c", "d"]
    wf = Flaky.create()
    perform_next_step(wf)
    perform_next_step(wf)  # a
    with pytest.raises(RuntimeError, match="item b broke"):
        perform_next_step(wf)
    assert wf.state == "paused"
    assert speedrun(wf).state == "paused"  # nothing runs while paused
    Flaky.fail = set()
    wf.resume()
    speedrun(wf)
    assert wf.state == "finished"
    # The failed run's writes were rolled back: every item wrote once.
    assert sorted(m[1] for m in marks(wf) if m[0] == "each") == ["'a'", "'b'", "'c'", "'d'"]
    assert sorted(item_rows(wf)) == [
        (0, "completed"),
        (1, "completed"),
        (1, "failed"),
        (2, "completed"),
        (3, "completed"),
    ]
    assert marks(wf)[-1] == ("join", repr(["aa", "bb", "cc", "dd"]))
    e = geneva.tables.executions
    with db.engine.connect() as conn:
        attempts = conn.execute(
            sa.select(e.c.attempt).where(e.c.workflow_id == wf.id, e.c.item_index == 1)
        ).scalars()
        assert sorted(attempts) == [1, 2]


def test_reattempt_of_a_map_step_reruns_only_its_failed_items(app):
    Flaky.fail, Flaky.items = {"a", "c"}, ["a", "b", "c"]
    wf = Flaky.create()
    perform_next_step(wf)
    with pytest.raises(RuntimeError):
        perform_next_step(wf)  # a fails: paused, b is scheduled
    Flaky.fail = {"c"}
    wf.reattempt(step="each")
    with pytest.raises(RuntimeError, match="item c broke"):
        speedrun(wf)
    Flaky.fail = set()
    wf.reattempt()  # the map step is the one failed step: no name needed
    speedrun(wf)
    assert wf.state == "finished"
    assert sorted(m[1] for m in marks(wf) if m[0] == "each") == ["'a'", "'b'", "'c'"]
    assert sorted(item_rows(wf)) == [
        (0, "completed"),
        (0, "failed"),
        (1, "completed"),
        (2, "completed"),
        (2, "failed"),
    ]


def test_skip_of_a_map_step_cancels_its_scheduled_items_and_the_join_gets_none(app):
    Flaky.fail, Flaky.items = {"a"}, ["a", "b", "c"]
    wf = Flaky.create()
    perform_next_step(wf)
    with pytest.raises(RuntimeError):
        perform_next_step(wf)
    wf.skip(step="each")
    speedrun(wf)
    assert wf.state == "finished"
    assert sorted(item_rows(wf)) == [(0, "failed"), (1, "canceled")]
    assert [r[2] for r in executions(wf) if r[0] == "each" and r[1] is None] == ["skipped"]
    assert marks(wf)[-1] == ("join", "None")


def test_cancel_cancels_every_scheduled_item(app):
    Flaky.fail, Flaky.items = set(), ["a", "b", "c"]
    wf = Flaky.create()
    perform_next_step(wf)
    wf.cancel()
    assert wf.state == "canceled"
    assert item_rows(wf) == [(0, "canceled"), (1, "canceled")]


class Skipped(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(skip_if=True)
    def split(self) -> list[int]:
        return [1]

    @step(for_each="split")
    def each(self) -> None:
        mark(self, "each", self.item)

    @step
    def join(self, each: Any) -> None:
        mark(self, "join", each)


def test_a_skipped_producer_skips_the_map_step(app):
    wf = Skipped.create()
    speedrun(wf)
    assert wf.state == "finished"
    assert [(r[0], r[2]) for r in executions(wf)] == [
        ("split", "skipped"),
        ("each", "skipped"),
        ("join", "completed"),
    ]
    assert marks(wf) == [("join", "None")]


class Keys(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def split(self) -> list[int]:
        return [10, 20]

    @step(for_each="split")
    def each(self) -> str:
        return self.idempotency_key


def test_each_item_has_its_own_idempotency_key(app):
    wf = Keys.create()
    speedrun(wf)
    first, second = wf.output_of("each")
    assert first != second


def test_a_map_step_cannot_wait_for_a_signal():
    with pytest.raises(DefinitionError, match="a map step cannot wait for a signal"):

        class Waits(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step
            def split(self) -> list[int]:
                return []

            @step(for_each="split", wait_for="go")
            def each(self) -> None: ...


def test_one_active_execution_per_workflow_step_and_item(app):
    Pages.pages = ["x", "y"]
    wf = Pages.create()
    perform_next_step(wf)
    e = geneva.tables.executions
    row = dict(
        workflow_id=wf.id,
        step_name="summarise",
        state="scheduled",
        scheduled_for=wf.created_at,
        created_at=wf.created_at,
        updated_at=wf.created_at,
    )
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.insert(e).values(**row, item_index=1))
    with db.engine.begin() as conn:  # another item, and the step's own row, are allowed
        conn.execute(sa.insert(e).values(**row, item_index=7))
        conn.execute(sa.insert(e).values(row))
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.insert(e).values(row))
