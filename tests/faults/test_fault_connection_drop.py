"""The database connection dropped between claim and finalize (PostgreSQL backends terminated).

While a step body runs, a separate admin connection terminates every other backend of
the database (``pg_terminate_backend``), as a failover, a restart or an idle-connection
killer would. The worker's pooled connections are now dead. Whatever happens next, the
step must not be lost and must not be recorded twice:

* the finalize retries its short transaction on a fresh connection and records the
  outcome at once (a dead connection counts as retryable in ``run_locked``);
* a body's writes commit with its outcome, so a body whose transaction was on a killed
  connection lost both; it runs again at once (a dead connection is retryable) and its
  writes commit once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.executor import execute

db = SQLAlchemy()
geneva = Geneva(db)

#: Set by the ``drop`` fixture: terminates the app's connections when called.
terminate: list[Any] = []
#: External side effects (appended before anything commits), one per body run.
external: list[tuple[int, str]] = []


DropEffect = mark_model(db, "fault_drop_effects")
committed = Committed(geneva, DropEffect)
history = committed.history
workflow_state = committed.state
effects = committed.marks


class DropAfterBodyWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The connections die after the body's own work, before finalize."""

    @step
    def charge(self) -> None:
        external.append((self.id, "charge"))
        if len(external) == 1:
            terminate[0]()

    @step
    def receipt(self) -> None:
        external.append((self.id, "receipt"))


class DropInBodyWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The body's own transaction is on a connection that dies before its commit."""

    @step
    def charge(self) -> None:
        external.append((self.id, "charge"))
        db.session.add(DropEffect(workflow_id=self.id, name="charge"))
        db.session.flush()  # the session now holds a connection
        if len(external) == 1:
            terminate[0]()

    @step
    def receipt(self) -> None:
        external.append((self.id, "receipt"))
        db.session.add(DropEffect(workflow_id=self.id, name="receipt"))


@pytest.fixture
def drop(app: Flask) -> Iterator[None]:
    """Arm ``terminate``: kill every backend of the test database but the admin's own."""
    admin = sa.create_engine(
        app.config["SQLALCHEMY_DATABASE_URI"],
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    killed: list[int] = []

    def kill() -> None:
        with admin.connect() as conn:
            killed.extend(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalars()
            )

    terminate[:] = [kill]
    external.clear()
    db.session.commit()
    db.session.close()  # the test holds no connection: only the worker's die
    try:
        yield
    finally:
        assert killed and all(killed), "no backend was terminated"
        terminate.clear()
        admin.dispose()


def due(workflow_id: int) -> int:
    """The id of the workflow's one scheduled execution."""
    (execution_id,) = committed.scheduled(workflow_id).values()
    return execution_id


def run_trigger(app: Flask, execution_id: int) -> BaseException | None:
    """Run a trigger as the Huey task does; return what escaped (a worker only logs it)."""
    db.session.remove()  # a worker's task starts with a fresh session (its own app context)
    try:
        execute(geneva, app.extensions["geneva"], execution_id)
    except Exception as error:
        return error
    finally:
        db.session.remove()
    return None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_connections_killed_before_finalize_lose_nothing_and_record_the_step_once(
    app: Flask, drop: None
) -> None:
    workflow_id = DropAfterBodyWorkflow.create().id
    charge = due(workflow_id)
    escaped = run_trigger(app, charge)

    # The finalize's first attempt meets a dead pooled connection; SQLAlchemy
    # invalidates the pool and run_locked retries on a fresh connection, so the
    # outcome is recorded at once instead of waiting an hour for housekeeping.
    assert escaped is None
    assert history(workflow_id)[0] == ("charge", "completed", "success")
    assert run_trigger(app, due(workflow_id)) is None  # receipt
    assert workflow_state(workflow_id) == "finished"

    completed = [(s, o) for s, st, o in history(workflow_id) if st == "completed"]
    assert completed == [("charge", "success"), ("receipt", "success")]
    assert external.count((workflow_id, "charge")) == 1
    assert external.count((workflow_id, "receipt")) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_body_whose_connection_is_killed_before_its_commit_runs_again_and_writes_once(
    app: Flask, drop: None
) -> None:
    workflow_id = DropInBodyWorkflow.create().id
    assert run_trigger(app, due(workflow_id)) is None  # the worker does not crash

    # The body's writes ride in the finalize transaction: the dead connection lost both
    # the write and the outcome, so the body ran again at once and both committed once.
    assert history(workflow_id) == [
        ("charge", "completed", "success"),
        ("receipt", "scheduled", None),
    ]
    assert external == [(workflow_id, "charge"), (workflow_id, "charge")]
    assert effects(workflow_id) == ["charge"]

    assert run_trigger(app, due(workflow_id)) is None
    assert workflow_state(workflow_id) == "finished"
    assert effects(workflow_id) == ["charge", "receipt"]
