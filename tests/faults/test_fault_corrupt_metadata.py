"""Hostile input: an execution row whose ``metadata`` column holds text that is not JSON.

SQLite stores JSON as plain text, so a hand-edited row, a restore from a bad dump or a
half-applied script can leave invalid JSON behind. The executor, housekeeping, the admin
detail page and ``flask geneva show`` must keep working on that workflow. PostgreSQL
and MariaDB refuse such a value at write time (a ``json`` type, a ``JSON_VALID`` check),
which the test proves too, since that is why the fault cannot arise there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import Geneva
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.cli import geneva_cli
from flask_geneva.executor import execute
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

CORRUPT = '{"reattempt_reason": "exception_policy", "exception": {'  # cut short

PREFIX = "/admin/workflows"


class FaultMetaWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        pass

    @step
    def second(self) -> None:
        pass


def _corrupt(execution_id: int) -> None:
    e = geneva.tables.executions
    with geneva.engine().begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {e.name} SET metadata = :m WHERE id = :id"),
            {"m": CORRUPT, "id": execution_id},
        )


def _executions(workflow_id: int) -> list[Any]:
    e = geneva.tables.executions
    columns = [c for c in e.c if c.name != "metadata"]
    with geneva.engine().connect() as conn:
        return list(
            conn.execute(sa.select(*columns).where(e.c.workflow_id == workflow_id).order_by(e.c.id))
        )


_workflow_state = Committed(geneva).state


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_workflow_with_invalid_json_metadata_still_runs_and_every_view_renders(
    app: Flask, huey: Any
) -> None:
    workflow_id = FaultMetaWorkflow.create().id
    (first,) = _executions(workflow_id)
    _corrupt(first.id)
    state = app.extensions["geneva"]

    # The executor never reads metadata: the corrupt execution runs and its successor is
    # scheduled and runs too.
    report = execute(geneva, state, first.id)
    assert report is not None and report.status == "ran"
    second = _executions(workflow_id)[1]
    _corrupt(second.id)
    with travel(timedelta(hours=2)):
        # Housekeeping reads these rows too; it must neither crash nor skip the others.
        housekeeping.run(geneva)
    report = execute(geneva, state, second.id)
    assert report is not None and report.status == "ran"
    assert _workflow_state(workflow_id) == "finished"
    assert [(x.step_name, x.state) for x in _executions(workflow_id)] == [
        ("first", "completed"),
        ("second", "completed"),
    ]

    # The admin detail page renders the workflow.
    app.register_blueprint(geneva.admin_blueprint, url_prefix=PREFIX)
    page = app.test_client().get(f"{PREFIX}/workflows/{workflow_id}")
    assert page.status_code == 200, page.text[:2000]
    assert "second" in page.text

    # flask geneva show renders it.
    result = app.test_cli_runner().invoke(geneva_cli, ["show", str(workflow_id)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"{workflow_id}: finished" in result.output


@pytest.mark.parametrize("db_url", ["postgresql", "mariadb"], indirect=True)
def test_postgresql_and_mariadb_refuse_to_store_invalid_json_metadata(app: Flask) -> None:
    workflow_id = FaultMetaWorkflow.create().id
    (first,) = _executions(workflow_id)
    with pytest.raises(sa.exc.DBAPIError):
        _corrupt(first.id)
    report = execute(geneva, app.extensions["geneva"], first.id)
    assert report is not None and report.status == "ran"
