"""Outputs and parameters (SPEC 11): a step's return value, read by its descendants.

Every test runs on SQLite, PostgreSQL and MariaDB with the real executor, through the
testing helpers (which run the same executor as a worker).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import mark_model

from flask_geneva import DefinitionError
from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import OutputError
from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)
APP_CONFIG = {"GENEVA_MAX_OUTPUT_BYTES": 2000}

Mark = mark_model(db, "out_marks", note=sa.Column(sa.String(500), nullable=True))


def mark(workflow: Any, name: str, note: Any = None) -> None:
    db.session.add(Mark(workflow_id=workflow.id, name=name, note=repr(note)))


def notes(workflow: Any) -> dict[str, str]:
    rows = db.session.execute(sa.select(Mark).where(Mark.workflow_id == workflow.id)).scalars()
    return {m.name: m.note for m in rows}


def outputs(workflow: Any) -> list[tuple[str, Any]]:
    e = geneva.tables.executions
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.c.step_name, e.c.output)
            .where(e.c.workflow_id == workflow.id)
            .order_by(e.c.id)
        ).all()
    return [tuple(r) for r in rows]


class Pipeline(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def extract(self) -> dict[str, Any]:
        return {"pages": ["a", "b"], "title": "Ünïcode ✓"}

    @step
    def count(self, extract: dict[str, Any]) -> int:
        mark(self, "count", extract)
        return len(extract["pages"])

    @step(after="extract")
    def side(self) -> None:
        mark(self, "side", self.output_of("extract")["title"])

    @step(after=["count", "side"])
    def report(self, count: int, extract: dict[str, Any], side: Any) -> str:
        mark(self, "report", (count, extract["title"], side))
        return f"{count} pages"


def test_return_values_are_stored_and_reach_descendants_as_parameters(app):
    wf = Pipeline.create()
    speedrun(wf)
    assert wf.state == "finished"
    assert dict(outputs(wf)) == {
        "extract": {"pages": ["a", "b"], "title": "Ünïcode ✓"},
        "count": 2,
        "side": None,
        "report": "2 pages",
    }
    seen = notes(wf)
    assert seen["count"] == repr({"pages": ["a", "b"], "title": "Ünïcode ✓"})
    assert seen["side"] == repr("Ünïcode ✓")
    assert seen["report"] == repr((2, "Ünïcode ✓", None))
    # Outside a body any step may be read.
    assert wf.output_of("report") == "2 pages"
    with pytest.raises(ValueError, match="no step 'nope'"):
        wf.output_of("nope")


class Branches(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def start(self) -> int:
        return 1

    @step(after="start")
    def left(self) -> int:
        return 2

    @step(after="start")
    def right(self) -> Any:
        try:
            return self.output_of("left")
        except ValueError as error:
            mark(self, "right", str(error))
        try:
            return self.output_of("right")
        except ValueError as error:
            mark(self, "self", str(error))
        return None


def test_output_of_refuses_a_parallel_branch_and_itself_naming_both_steps(app):
    wf = Branches.create()
    speedrun(wf)
    seen = notes(wf)
    assert "step 'right' cannot read the output of 'left'" in seen["right"]
    assert "not an ancestor" in seen["right"]
    assert "is the running step itself" in seen["self"]
    assert wf.state == "finished"


def test_a_parameter_naming_no_ancestor_fails_at_import():
    with pytest.raises(DefinitionError, match=r"Bad.second: parameter 'third' names no ancestor"):

        class Bad(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step
            def first(self) -> None: ...

            @step
            def second(self, third: Any) -> None: ...

            @step
            def third(self) -> None: ...

    with pytest.raises(DefinitionError, match="not \\*args"):

        class Star(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step
            def first(self, *args: Any) -> None: ...


class Unstorable(geneva.Workflow):  # type: ignore[name-defined,misc]
    kind = "object"

    @step
    def produce(self) -> Any:
        mark(self, "produce")  # rolled back with the failed output
        if Unstorable.kind == "object":
            return object()
        if Unstorable.kind == "nan":
            return float("nan")
        if Unstorable.kind == "nul":
            return {"name": "bad\x00byte"}
        return "x" * 3000


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("object", "cannot be stored as its output"),
        ("nan", "Out of range float values are not JSON compliant"),
        ("big", "over GENEVA_MAX_OUTPUT_BYTES=2,000"),
        ("nul", "holding a NUL character, which PostgreSQL's JSON cannot store"),
    ],
)
def test_an_output_that_cannot_be_stored_fails_the_step_naming_it_and_the_limit(app, kind, message):
    Unstorable.kind = kind
    wf = Unstorable.create()
    with pytest.raises(OutputError):
        perform_next_step(wf)
    execution = wf.executions[-1]
    assert (wf.state, execution.state) == ("paused", "failed")
    assert execution.error_class == "flask_geneva.errors.OutputError"
    assert "step 'produce'" in execution.error_message
    assert "GENEVA_MAX_OUTPUT_BYTES=2,000" in execution.error_message
    assert message in execution.error_message
    assert execution.output is None
    assert notes(wf) == {}


class Retried(geneva.Workflow):  # type: ignore[name-defined,misc]
    runs = 0

    @step(on_exception=ExceptionPolicy("reattempt", exceptions=(OutputError,)))
    def produce(self) -> Any:
        Retried.runs += 1
        return object() if Retried.runs == 1 else {"ok": True}


def test_the_steps_policy_applies_to_an_unstorable_output(app):
    Retried.runs = 0
    wf = Retried.create()
    with pytest.raises(OutputError):
        perform_next_step(wf)
    speedrun(wf)
    assert [(e.state, e.outcome) for e in wf.executions] == [
        ("completed", "reattempted"),
        ("completed", "success"),
    ]
    assert wf.output_of("produce") == {"ok": True}


class Skipping(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(skip_if=True)
    def maybe(self) -> int:
        return 5

    @step
    def after_it(self, maybe: Any) -> None:
        mark(self, "after", maybe)


def test_a_skipped_ancestor_gives_none(app):
    wf = Skipping.create()
    speedrun(wf)
    assert notes(wf) == {"after": "None"}
