"""The generated Alembic revision installs and removes the tables on every database."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate
from flask_migrate import downgrade
from flask_migrate import init
from flask_migrate import upgrade
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)


class MigratedWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        pass


@pytest.fixture
def migrations(app: Flask, tmp_path: Path) -> Iterator[str]:
    """A Flask-Migrate folder for the app, with the tables left to the migration.

    Alembic's env.py reconfigures logging from alembic.ini (disabling other loggers);
    that is put back afterwards so later tests still see flask-geneva's log lines.
    """
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    disabled = {
        name: log.disabled
        for name, log in logging.Logger.manager.loggerDict.items()
        if isinstance(log, logging.Logger)
    }
    directory = str(tmp_path / "migrations")
    db.drop_all()
    Migrate(app, db, directory=directory)
    init(directory)
    try:
        yield directory
    finally:
        root.handlers[:], root.level = saved
        for name, value in disabled.items():
            logging.getLogger(name).disabled = value
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        db.create_all()  # what the app fixture's teardown expects to drop


def table_names() -> set[str]:
    return {n for n in sa.inspect(db.engine).get_table_names() if n.startswith("geneva_")}


def insert_workflow(conn: Any, *, state: str = "ready", allow_multiple: bool = False) -> int:
    w = geneva.tables.workflows
    now = datetime(2026, 1, 1)
    result = conn.execute(
        sa.insert(w).values(
            type="MigratedWorkflow",
            hero_type="Hero",
            hero_id="1",
            state=state,
            allow_multiple=allow_multiple,
            created_at=now,
            updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0])


def insert_execution(conn: Any, workflow_id: int, state: str) -> None:
    e = geneva.tables.executions
    now = datetime(2026, 1, 1)
    conn.execute(
        sa.insert(e).values(
            workflow_id=workflow_id,
            step_name="only",
            state=state,
            scheduled_for=now,
            created_at=now,
            updated_at=now,
        )
    )


def rejected(work: Any) -> bool:
    try:
        with db.engine.begin() as conn:
            work(conn)
    except sa.exc.IntegrityError:
        return True
    return False


# Flask-Migrate's own env.py template calls the deprecated db.get_engine() first.
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_the_revision_upgrades_downgrades_and_upgrades_again(app, migrations):
    result = app.test_cli_runner().invoke(args=["geneva", "migration"])
    assert result.exit_code == 0, result.output

    upgrade(migrations)
    assert table_names() == {"geneva_workflows", "geneva_step_executions"}
    downgrade(migrations, "base")
    assert table_names() == set()
    upgrade(migrations)
    assert table_names() == {"geneva_workflows", "geneva_step_executions"}

    indexes = {i["name"] for i in sa.inspect(db.engine).get_indexes("geneva_workflows")}
    assert {"ix_geneva_workflows_type_state_id", "uq_geneva_workflows_ongoing"} <= indexes

    # One ongoing workflow per (type, hero) unless allow_multiple.
    with db.engine.begin() as conn:
        first = insert_workflow(conn)
        insert_workflow(conn, state="finished")
        insert_workflow(conn, allow_multiple=True)
    assert rejected(lambda conn: insert_workflow(conn, state="paused"))

    # One active (scheduled or in progress) execution per (workflow, step).
    with db.engine.begin() as conn:
        insert_execution(conn, first, "completed")
        insert_execution(conn, first, "failed")
        insert_execution(conn, first, "scheduled")
    assert rejected(lambda conn: insert_execution(conn, first, "in_progress"))

    # The tables behave like create_all's: a workflow runs to the end on them.
    from flask_geneva.testing import speedrun

    db.session.rollback()
    workflow = MigratedWorkflow.create()
    speedrun(workflow)
    assert workflow.state == "finished"
