"""The "0.2 operator console" revision: the trace column, the wider executions index and,
on PostgreSQL, the error-text trigram index; and back."""

from __future__ import annotations

import warnings
from pathlib import Path

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import apply_revision

from flask_geneva import Geneva
from flask_geneva import WorkflowFilter
from flask_geneva import error_search
from flask_geneva import step
from flask_geneva.migration import CONSOLE
from flask_geneva.migration import REVISIONS
from flask_geneva.migration import render_revision

db = SQLAlchemy()
geneva = Geneva(db)

REVISION_0_1 = Path(__file__).with_name("geneva_0_1_revision.py.txt")
OLD = "ix_geneva_step_executions_state_scheduled_for"
NEW = "ix_geneva_step_executions_state_due_workflow"


class Console(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        raise RuntimeError("gateway timed out")


def run(source: str, tmp_path: Path, direction: str) -> None:
    apply_revision(db.engine, source, tmp_path, direction)


def indexes() -> set[str]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
        found = sa.inspect(db.engine).get_indexes("geneva_step_executions")
    return {str(i["name"]) for i in found}


def columns() -> set[str]:
    return {c["name"] for c in sa.inspect(db.engine).get_columns("geneva_workflows")}


def test_the_console_revision_swaps_the_index_adds_the_column_and_goes_back(app, tmp_path):
    db.drop_all()
    run(REVISION_0_1.read_text(encoding="utf-8"), tmp_path, "upgrade")
    keys = [r.key for r in REVISIONS]
    sources = {
        key: render_revision(geneva, key, revision=f"r{n}", down_revision=None)
        for n, key in enumerate(keys[1:], start=1)
    }
    try:
        for key in keys[1 : keys.index(CONSOLE)]:
            run(sources[key], tmp_path, "upgrade")
        assert OLD in indexes() and NEW not in indexes()
        assert "traceparent" not in columns()

        run(sources[CONSOLE], tmp_path, "upgrade")
        postgresql = db.engine.dialect.name == "postgresql"
        assert NEW in indexes() and OLD not in indexes()
        assert (error_search.INDEX in indexes()) == postgresql
        assert "traceparent" in columns()
        # The upgraded tables serve the search.
        db.session.rollback()
        workflow = Console.create()
        e = geneva.tables.executions
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(e)
                .where(e.c.workflow_id == workflow.id)
                .values(state="failed", error_class="RuntimeError", error_message="timed out")
            )
        found = geneva.list_workflows(WorkflowFilter(error="TIMED OUT"), limit=5)
        assert [row["id"] for row in found] == [workflow.id]
        db.session.remove()

        run(sources[CONSOLE], tmp_path, "downgrade")
        assert OLD in indexes() and NEW not in indexes()
        assert error_search.INDEX not in indexes()
        assert "traceparent" not in columns()
    finally:
        db.session.remove()
        db.drop_all()
        db.create_all()
