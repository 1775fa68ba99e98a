"""The generated Alembic revisions install, upgrade and remove the tables on every database.

``geneva_0_1_revision.py.txt`` is the revision file 0.1's ``flask geneva migration``
wrote, kept byte for byte (stored as text so linters leave it alone): databases
created by it are what 0.2's chain of revisions upgrades.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Iterator
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import helpers
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import Migrate
from flask_migrate import downgrade
from flask_migrate import init
from flask_migrate import revision as app_revision
from flask_migrate import upgrade
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.migration import REVISIONS
from flask_geneva.migration import MigrationError
from flask_geneva.migration import render_revision
from flask_geneva.migration import write_revisions
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class MigratedWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        pass


class SignalledWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait_for="confirmed")
    def confirm(self) -> None:
        pass


class MappedWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def split(self) -> list[int]:
        return [1, 2, 3]

    @step(for_each="split", max_parallel=2)
    def double(self) -> int:
        return int(self.item) * 2

    @step
    def total(self, double: list[int]) -> int:
        return sum(double)


class UpgradedWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        pass

    @step
    def second(self) -> None:
        pass


#: What 0.1's ``flask geneva migration`` wrote (revision fb359109cc33).
REVISION_0_1 = Path(__file__).with_name("geneva_0_1_revision.py.txt")
REVISION_0_1_ID = "fb359109cc33"


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


#: The tables the whole chain of revisions creates.
ALL_TABLES = {
    "geneva_workflows",
    "geneva_step_executions",
    "geneva_schedule_ticks",
    "geneva_operator_actions",
    "geneva_signals",
}


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
    assert table_names() == ALL_TABLES
    downgrade(migrations, "base")
    assert table_names() == set()
    upgrade(migrations)
    assert table_names() == ALL_TABLES

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
    db.session.rollback()
    workflow = MigratedWorkflow.create()
    speedrun(workflow)
    assert workflow.state == "finished"


# -- the chain of revisions, and upgrading a 0.1 database ----------------------------------


def apply_revision(source: str, tmp_path: Path, direction: str = "upgrade") -> None:
    """Run one revision file's upgrade() or downgrade() on the app's database."""
    helpers.apply_revision(db.engine, source, tmp_path, direction)


def schema() -> dict[str, Any]:
    """The geneva tables as the database reports them: columns, indexes, foreign keys."""
    inspector = sa.inspect(db.engine)
    found: dict[str, Any] = {}
    present = set(inspector.get_table_names())
    for table in ("geneva_workflows", "geneva_step_executions", "geneva_signals"):
        if table not in present:
            continue
        columns = {
            c["name"]: (repr(c["type"]), c["nullable"], str(c.get("default")))
            for c in inspector.get_columns(table)
        }
        with warnings.catch_warnings():
            # SQLite's reflection skips the expression index of the active rule (its
            # rows are checked by the tests that insert them).
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            reflected = inspector.get_indexes(table)
        indexes = {
            i["name"]: (
                tuple(i["column_names"]),
                tuple(i.get("expressions") or ()),
                bool(i["unique"]),
            )
            for i in reflected
        }
        keys = sorted(
            (tuple(k["constrained_columns"]), k["referred_table"])
            for k in inspector.get_foreign_keys(table)
        )
        found[table] = {"columns": columns, "indexes": indexes, "foreign_keys": keys}
    return found


def test_the_revision_that_creates_the_tables_is_still_the_0_1_schema(app, tmp_path):
    db.drop_all()
    apply_revision(REVISION_0_1.read_text(encoding="utf-8"), tmp_path)
    created_by_0_1 = schema()
    apply_revision(REVISION_0_1.read_text(encoding="utf-8"), tmp_path, "downgrade")
    rendered = render_revision(geneva, REVISIONS[0].key, revision="a1", down_revision=None)
    apply_revision(rendered, tmp_path)
    try:
        assert schema() == created_by_0_1
        assert "heartbeat_at" not in created_by_0_1["geneva_step_executions"]["columns"]
    finally:
        apply_revision(rendered, tmp_path, "downgrade")
        db.create_all()


def test_the_0_1_revision_plus_the_later_ones_give_create_alls_schema(app, tmp_path):
    fresh = schema()  # the app fixture made the tables with create_all
    db.drop_all()
    apply_revision(REVISION_0_1.read_text(encoding="utf-8"), tmp_path)
    for later in REVISIONS[1:]:
        apply_revision(
            render_revision(geneva, later.key, revision="b1", down_revision="a1"), tmp_path
        )
    try:
        assert schema() == fresh
        assert "heartbeat_at" in fresh["geneva_step_executions"]["columns"]
    finally:
        db.drop_all()
        db.create_all()


def test_the_revisions_follow_the_apps_head_and_are_written_only_once(app, migrations):
    app_revision(migrations, message="the app's own table")
    script = ScriptDirectory(migrations)
    (app_head,) = script.get_heads()
    tables, *later = write_revisions(geneva, migrations)
    script = ScriptDirectory(migrations)
    chain = [p.name.split("_")[0] for p in (tables, *later)]
    assert script.get_heads() == [chain[-1]]
    for down, up in zip(chain, chain[1:], strict=False):
        assert script.get_revision(up).down_revision == down
    assert script.get_revision(tables.name.split("_")[0]).down_revision == app_head
    with pytest.raises(MigrationError, match="already holds every flask-geneva revision"):
        write_revisions(geneva, migrations)
    tables.unlink()
    with pytest.raises(MigrationError, match="is there but not the revision before it"):
        write_revisions(geneva, migrations)


def insert_0_1_rows(now: datetime) -> dict[str, int]:
    """Workflows in each state as 0.1 left them, written to the tables 0.1 created."""
    metadata = sa.MetaData()
    w = sa.Table("geneva_workflows", metadata, autoload_with=db.engine)
    e = sa.Table("geneva_step_executions", metadata, autoload_with=db.engine)
    assert "heartbeat_at" not in e.c
    ids: dict[str, int] = {}
    hour_ago = now - timedelta(hours=2)
    with db.engine.begin() as conn:

        def workflow(name: str, state: str, started: datetime | None) -> int:
            ids[name] = int(
                conn.execute(
                    sa.insert(w).values(
                        type="UpgradedWorkflow",
                        hero_type=None,
                        hero_id=None,
                        state=state,
                        allow_multiple=True,
                        created_at=hour_ago,
                        updated_at=hour_ago,
                        started_at=started,
                        transitioned_at=hour_ago,
                    )
                ).inserted_primary_key[0]
            )
            return ids[name]

        def execution(workflow_id: int, step_name: str, state: str, **values: Any) -> None:
            conn.execute(
                sa.insert(e).values(
                    workflow_id=workflow_id,
                    step_name=step_name,
                    state=state,
                    scheduled_for=values.pop("scheduled_for", now),
                    created_at=hour_ago,
                    updated_at=values.pop("updated_at", now),
                    **values,
                )
            )

        execution(workflow("ready", "ready", None), "first", "scheduled")
        # Its worker died two hours ago, under 0.1: no heartbeat column then.
        execution(
            workflow("performing", "performing", hour_ago),
            "first",
            "in_progress",
            scheduled_for=hour_ago,
            started_at=hour_ago,
            updated_at=hour_ago,
        )
        execution(workflow("paused", "paused", None), "first", "scheduled")
        finished = workflow("finished", "finished", hour_ago)
        for name in ("first", "second"):
            execution(
                finished,
                name,
                "completed",
                outcome="success",
                started_at=hour_ago,
                finished_at=hour_ago,
                completed_at=hour_ago,
            )
    return ids


def count_rows() -> tuple[int, int]:
    with db.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one())
            for t in ("geneva_workflows", "geneva_step_executions")
        )


@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_a_0_1_database_with_live_workflows_upgrades_runs_them_and_downgrades(app, migrations):
    versions = Path(migrations) / "versions"
    shutil.copy(REVISION_0_1, versions / f"{REVISION_0_1_ID}_add_flask_geneva_tables.py")
    upgrade(migrations)
    ids = insert_0_1_rows(clock.now())

    result = app.test_cli_runner().invoke(args=["geneva", "migration"])
    assert result.exit_code == 0, result.output
    new = [p for p in versions.glob("*.py") if not p.name.startswith(REVISION_0_1_ID)]
    assert len(new) == len(REVISIONS) - 1
    written = Path(result.output.splitlines()[0].removeprefix("wrote "))
    assert written in new
    assert f"down_revision = {REVISION_0_1_ID!r}" in written.read_text()
    upgrade(migrations)
    columns = schema()["geneva_step_executions"]["columns"]
    assert {"heartbeat_at", "output", "item_index", "cursor", "continues_id"} <= set(columns)
    assert {"fingerprint", "traceparent"} <= set(schema()["geneva_workflows"]["columns"])
    assert table_names() == ALL_TABLES

    # The execution a 0.1 worker left in progress two hours ago has no heartbeat: its
    # start is its last sign of life, past the one-hour lease.
    summary = housekeeping.run(geneva)
    assert (summary.stuck_reattempted, summary.retriggered) == (1, 0)
    workflows = {name: db.session.get(UpgradedWorkflow, ident) for name, ident in ids.items()}
    workflows["paused"].resume()
    for name in ("ready", "performing", "paused"):
        speedrun(workflows[name])
    db.session.commit()
    states = {name: db.session.get(UpgradedWorkflow, i).state for name, i in ids.items()}
    assert states == dict.fromkeys(ids, "finished")
    e = geneva.tables.executions
    with db.engine.connect() as conn:
        history = conn.execute(
            sa.select(e.c.step_name, e.c.state, e.c.outcome)
            .where(e.c.workflow_id == ids["performing"])
            .order_by(e.c.id)
        ).all()
    assert [tuple(r) for r in history] == [
        ("first", "failed", "recovered"),
        ("first", "completed", "success"),
        ("second", "completed", "success"),
    ]

    # On the upgraded tables a step waits for a signal, and a waiting execution holds
    # its step's slot (the active-execution rule was rebuilt to include it).
    waits = SignalledWorkflow.create()
    speedrun(waits)
    assert [e.state for e in waits.executions] == ["waiting"]
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(
            sa.insert(e).values(
                workflow_id=waits.id,
                step_name="confirm",
                state="scheduled",
                scheduled_for=clock.now(),
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
    assert waits.signal("confirmed", payload={"ok": True}).consumed_step == "confirm"
    speedrun(waits)
    assert waits.state == "finished"

    # On the upgraded tables a step returns data and a map step runs one execution per
    # item, with two of them active at once (the active rule is per item now).
    mapped = MappedWorkflow.create()
    perform_next_step(mapped)
    with db.engine.connect() as conn:
        active = conn.execute(
            sa.select(e.c.item_index).where(
                e.c.workflow_id == mapped.id, e.c.step_name == "double", e.c.state == "scheduled"
            )
        ).scalars()
        assert sorted(active) == [0, 1]
    speedrun(mapped)
    assert (mapped.state, mapped.output_of("total")) == ("finished", 12)
    assert mapped.output_of("double") == [2, 4, 6]
    db.session.execute(sa.delete(geneva.Workflow).where(geneva.Workflow.id == mapped.id))
    db.session.commit()

    # Deploy safety on the upgraded tables: 0.1's rows have no fingerprint (check counts
    # them apart), new ones have their class's; a 0.1 workflow can be rerun, and the
    # action is recorded.
    w = geneva.tables.workflows
    with db.engine.connect() as conn:
        prints = dict(conn.execute(sa.select(w.c.id, w.c.fingerprint)).all())
    assert all(prints[i] is None for i in ids.values())
    assert prints[waits.id] == SignalledWorkflow.step_graph().fingerprint
    finished = db.session.get(UpgradedWorkflow, ids["ready"])
    assert finished.rerun_from("second", actor="ops", reason="after the upgrade") == ("second",)
    speedrun(finished)
    assert finished.state == "finished"
    with db.engine.connect() as conn:
        superseded = conn.execute(
            sa.select(e.c.step_name).where(
                e.c.workflow_id == finished.id, e.c.superseded_at.is_not(None)
            )
        ).scalars()
        assert list(superseded) == ["second"]
        a = geneva.tables.actions
        noted = conn.execute(sa.select(a.c.action, a.c.actor).order_by(a.c.id)).all()
        assert [tuple(r) for r in noted] == [("resume", None), ("rerun_from", "ops")]
    before = count_rows()
    db.session.remove()

    downgrade(migrations, "-1")  # the operator console's revision, to deploy safety
    columns = schema()["geneva_workflows"]["columns"]
    assert "traceparent" not in columns and "fingerprint" in columns
    downgrade(migrations, REVISION_0_1_ID)
    assert "heartbeat_at" not in schema()["geneva_step_executions"]["columns"]
    assert "output" not in schema()["geneva_step_executions"]["columns"]
    assert "geneva_schedule_ticks" not in table_names()
    assert "geneva_signals" not in schema()
    assert "geneva_operator_actions" not in table_names()
    assert "superseded_at" not in schema()["geneva_step_executions"]["columns"]
    assert "fingerprint" not in schema()["geneva_workflows"]["columns"]
    assert count_rows() == before == (5, 11)
    downgrade(migrations, "base")


def test_the_schedule_ticks_revision_adds_the_table_with_its_unique_key_and_removes_it(
    app, tmp_path
):
    fresh = ticks_schema()  # create_all's
    geneva.schedule_ticks.drop(db.engine)
    source = render_revision(geneva, "0.2 schedule ticks", revision="c1", down_revision="b1")
    apply_revision(source, tmp_path)
    try:
        assert ticks_schema() == fresh
        row = dict(
            type="MigratedWorkflow",
            hero_type="",
            hero_id="",
            tick=datetime(2031, 1, 1, 12, 0),
            outcome="started",
            created_at=datetime(2031, 1, 1, 12, 0, 1),
        )
        with db.engine.begin() as conn:
            conn.execute(sa.insert(geneva.schedule_ticks).values(row))
        # The key that starts a (class, hero, tick) once, "no hero" included.
        assert rejected(lambda conn: conn.execute(sa.insert(geneva.schedule_ticks).values(row)))
        apply_revision(source, tmp_path, "downgrade")
        assert "geneva_schedule_ticks" not in table_names()
    finally:
        db.drop_all()
        db.create_all()


def ticks_schema() -> dict[str, Any]:
    inspector = sa.inspect(db.engine)
    return {
        "columns": {
            c["name"]: (repr(c["type"]), c["nullable"])
            for c in inspector.get_columns("geneva_schedule_ticks")
        },
        "indexes": {
            i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes("geneva_schedule_ticks")
        },
    }
