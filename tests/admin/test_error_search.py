"""The error-text search: what it matches, and PostgreSQL's trigram index behind it."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import DATABASE_URLS
from helpers import connect_args
from helpers import require

from flask_geneva import Geneva
from flask_geneva import WorkflowFilter
from flask_geneva import clock
from flask_geneva import error_search
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)


class Charge(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def charge(self) -> None: ...


def add_execution(
    workflow_id: int,
    state: str,
    error_class: str | None,
    message: str | None,
    *,
    superseded: bool = False,
    ext: Geneva = geneva,
    step_name: str = "charge",
) -> None:
    e = ext.tables.executions
    now = clock.now()
    with ext.engine().begin() as conn:
        conn.execute(
            sa.insert(e).values(
                workflow_id=workflow_id,
                step_name=step_name,
                state=state,
                scheduled_for=now,
                created_at=now,
                updated_at=now,
                failed_at=now if state == "failed" else None,
                error_class=error_class,
                error_message=message,
                superseded_at=now if superseded else None,
            )
        )


def found(text: str) -> set[int]:
    return {row["id"] for row in geneva.list_workflows(WorkflowFilter(error=text), limit=100)}


def test_the_search_matches_class_or_message_as_text_and_only_current_failures(app):
    gateway, declined, old, reattempted, weird = (Charge.create().id for _ in range(5))
    add_execution(gateway, "failed", "billing.GatewayTimeout", "upstream took 31 s")
    add_execution(declined, "failed", "billing.CardDeclined", "Insufficient funds")
    add_execution(old, "failed", "billing.GatewayTimeout", "gone", superseded=True)
    add_execution(reattempted, "completed", "billing.GatewayTimeout", "then it worked")
    add_execution(weird, "failed", None, "100% of 5_000 items at C:/tmp")

    assert found("gatewaytimeout") == {gateway}  # case-insensitive, superseded left out
    assert found("INSUFFICIENT") == {declined}
    assert found("billing.") == {gateway, declined}
    assert found("timeout upstream") == {gateway}  # class and message, joined by a space
    assert found("100%") == {weird} and found("5_0") == {weird} and found("c:/tmp") == {weird}
    assert found("%") == {weird} and found("_") == {weird}  # wildcards match themselves
    assert found("no such error") == set()
    combined = WorkflowFilter(error="billing", states=("ready",), workflow_type="Charge")
    assert geneva.count_workflows(combined) == 2


# The trigram index is PostgreSQL's; elsewhere the search is the bounded scan above.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_create_all_builds_the_trigram_index_and_the_search_uses_it(app):
    with geneva.engine().connect() as conn:
        definition = conn.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
            {"name": error_search.INDEX},
        ).scalar_one()
    assert "gin_trgm_ops" in definition and "WHERE" in definition
    # Enough failed rows, among many more others, that the plan matters.
    w, e = geneva.tables.workflows, geneva.tables.executions
    now = clock.now()
    workflows = [
        dict(
            id=i, type="Charge", state="paused", allow_multiple=True, created_at=now, updated_at=now
        )
        for i in range(1, 20_001)
    ]
    executions = [
        dict(
            workflow_id=i,
            step_name="charge",
            state="failed" if i % 4 == 0 else "completed",
            scheduled_for=now - timedelta(seconds=i),
            created_at=now,
            updated_at=now,
            error_class="billing.GatewayTimeout" if i % 1000 else "billing.CardDeclined",
            error_message=f"attempt {i} timed out",
        )
        for i in range(1, 20_001)
    ]
    with geneva.engine().begin() as conn:
        conn.execute(sa.insert(w), workflows)
        conn.execute(sa.insert(e), executions)
        conn.execute(sa.text("ANALYZE"))
    assert found("carddeclined") == set(range(1000, 20_001, 1000))  # failed: i % 4 == 0
    query = error_search.failed_matching(geneva, "carddeclined")
    compiled = query.compile(geneva.engine(), compile_kwargs={"literal_binds": True})
    with geneva.engine().connect() as conn:
        plan = "\n".join(conn.execute(sa.text(f"EXPLAIN {compiled}")).scalars())
    assert error_search.INDEX in plan, plan


def test_where_pg_trgm_cannot_be_had_the_tables_are_made_and_the_search_still_works(
    caplog: pytest.LogCaptureFixture,
):
    # A role that may create tables in its schema but not extensions in the database,
    # on a database where pg_trgm is not installed.
    require("postgresql")
    server = sa.make_url(DATABASE_URLS["postgresql"])
    token = uuid.uuid4().hex[:8]
    database, role = f"geneva_notrgm_{token}", f"geneva_plain_{token}"
    admin = sa.create_engine(
        server, isolation_level="AUTOCOMMIT", connect_args=connect_args("postgresql")
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    owner = sa.create_engine(server.set(database=database), isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(sa.text(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}"))
    owner.dispose()
    plain = sa.create_engine(server.set(database=database, username=role))
    try:
        other_db = SQLAlchemy()
        other = Geneva(other_db)

        class Lone(other.Workflow):  # type: ignore[name-defined,misc]
            @step
            def only(self) -> None:
                raise RuntimeError("disk full")

        app = Flask(__name__)
        app.config.update(
            SQLALCHEMY_DATABASE_URI=plain.url.render_as_string(hide_password=False),
            GENEVA_HUEY="memory://",
        )
        other_db.init_app(app)
        other.init_app(app)
        with app.app_context(), caplog.at_level(logging.WARNING, "flask_geneva.error_search"):
            other_db.create_all()
            assert error_search.NO_INDEX in caplog.text
            workflow = Lone.create()
            add_execution(
                workflow.id, "failed", "RuntimeError", "disk full", ext=other, step_name="only"
            )
            rows = other.list_workflows(WorkflowFilter(error="DISK"), limit=10)
            assert [r["id"] for r in rows] == [workflow.id]
            other_db.session.remove()
            other_db.drop_all()
            for engine in other_db.engines.values():
                engine.dispose()
    finally:
        plain.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
