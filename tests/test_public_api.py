"""The public surface of docs/api.md: the exports of ``flask_geneva`` and the methods of
``Geneva`` that stand in for the internal modules."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_geneva
from flask_geneva import ExceptionPolicy
from flask_geneva import ExecutionReport
from flask_geneva import Geneva
from flask_geneva import GenevaError
from flask_geneva import HousekeepingSummary
from flask_geneva import InvalidStateError
from flask_geneva import OperationResult
from flask_geneva import WorkflowFilter
from flask_geneva import WorkflowNotFoundError
from flask_geneva import step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

APP_CONFIG = {"GENEVA_STUCK_RECOVERY": "cancel"}


class Letter(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "api_letters"
    id = sa.Column(sa.Integer, primary_key=True)


class Mailing(geneva.Workflow):  # type: ignore[name-defined,misc]
    on_exception = ExceptionPolicy("cancel", exceptions=[KeyError])

    @step
    def write(self) -> None:
        pass

    @step(wait=timedelta(hours=1), on_exception="skip")
    def post(self) -> None:
        pass


def _scheduled_id(workflow: Any) -> int:
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        return int(
            conn.execute(
                sa.select(e.c.id).where(e.c.workflow_id == workflow.id, e.c.state == "scheduled")
            ).scalar_one()
        )


def test_the_package_exports_exactly_the_documented_names() -> None:
    assert set(flask_geneva.__all__) == {
        "ConfigurationError",
        "DefinitionError",
        "ExceptionPolicy",
        "ExecutionReport",
        "Geneva",
        "GenevaError",
        "HousekeepingSummary",
        "InvalidStateError",
        "OperationResult",
        "OutputError",
        "RerunPlan",
        "Signal",
        "SignalError",
        "StepExecutionError",
        "StepNotDefinedError",
        "UnresolvedReferenceError",
        "WorkflowExistsError",
        "WorkflowFilter",
        "WorkflowNotFoundError",
        "step",
    }
    for name in flask_geneva.__all__:
        assert getattr(flask_geneva, name) is not None
    assert issubclass(WorkflowNotFoundError, GenevaError)
    assert issubclass(WorkflowNotFoundError, LookupError)


def test_config_is_the_current_apps_parsed_settings(app: Flask) -> None:
    assert geneva.config.stuck_recovery == "cancel"
    assert geneva.config.stuck_in_progress_after == timedelta(hours=1)


def test_execute_runs_an_execution_as_a_worker_does(app: Flask) -> None:
    mailing = Mailing.create()
    report = geneva.execute(_scheduled_id(mailing))
    assert isinstance(report, ExecutionReport) and report.status == "ran"
    post = _scheduled_id(mailing)
    deferred = geneva.execute(post)
    assert deferred is not None and deferred.status == "deferred"
    with travel(timedelta(hours=1, seconds=1)):
        ran = geneva.execute(post)
    assert ran is not None and ran.status == "ran"
    again = geneva.execute(post)
    assert again is not None and again.status == "noop"
    assert geneva.execute(10**9) is None


def test_housekeeping_returns_its_summary(app: Flask) -> None:
    speedrun(Mailing.create())
    with travel(timedelta(days=31)):
        summary = geneva.housekeeping()
    assert isinstance(summary, HousekeepingSummary)
    assert (summary.workflows_deleted, summary.executions_deleted) == (1, 2)


def test_make_consumer_uses_the_current_apps_huey_and_the_latency_defaults(app: Flask) -> None:
    consumer = geneva.make_consumer(workers=2, max_delay=1.0)
    assert consumer.huey is geneva.huey
    assert consumer.workers == 2
    assert consumer.max_delay == 1.0
    assert consumer.default_delay == 0.01


def test_perform_acts_by_id_and_by_filter(app: Flask) -> None:
    letters = [Letter() for _ in range(3)]
    db.session.add_all(letters)
    db.session.commit()
    mailings = [Mailing.create(hero=letter) for letter in letters]
    ids = [m.id for m in mailings]

    paused = geneva.perform("pause", [ids[0]])
    assert isinstance(paused, OperationResult) and paused.done == [ids[0]]
    with pytest.raises(InvalidStateError, match="Cannot pause a paused workflow"):
        geneva.perform("pause", [ids[0]])

    everything = geneva.perform("pause", WorkflowFilter(), raise_errors=False)
    assert sorted(everything.done) == ids[1:]
    assert everything.errors == {ids[0]: "Cannot pause a paused workflow"}

    resumed = geneva.perform("resume", WorkflowFilter(workflow_type="Mailing", states=("paused",)))
    assert sorted(resumed.done) == ids
    assert geneva.counts_by_state("Mailing")["ready"] == 3


def test_perform_reports_an_unknown_id(app: Flask) -> None:
    result = geneva.perform("cancel", [10**9], raise_errors=False)
    assert result.done == [] and list(result.errors) == [10**9]


def test_the_queries_list_count_and_walk_workflows_newest_first(app: Flask) -> None:
    ids = [Mailing.create(allow_multiple=True).id for _ in range(5)]
    newest_first = sorted(ids, reverse=True)
    page = geneva.list_workflows(limit=2)
    assert [row["id"] for row in page] == newest_first[:2]
    older = geneva.list_workflows(limit=10, before_id=page[-1]["id"])
    assert [row["id"] for row in older] == newest_first[2:]
    assert list(geneva.iter_ids(batch_size=2)) == [newest_first[:2], newest_first[2:4], [ids[0]]]
    assert geneva.count_workflows() == 5
    assert geneva.count_workflows(WorkflowFilter(states=("paused",))) == 0
    assert geneva.count_workflows(cap=3) == 3
    counts = geneva.counts_by_state()
    assert counts["ready"] == 5 and counts["finished"] == 0


def test_policy_for_resolves_like_the_executor() -> None:
    assert geneva.policy_for(Mailing, "post", KeyError()).action == "skip"
    assert geneva.policy_for(Mailing, "write", KeyError()).action == "cancel"
    assert geneva.policy_for(Mailing, "write", ValueError()).action == "pause"
    with pytest.raises(ValueError, match="Mailing has no step 'send'"):
        geneva.policy_for(Mailing, "send", KeyError())


def test_write_migration_says_when_there_is_no_migrations_folder(
    app: Flask, tmp_path: Path
) -> None:
    with pytest.raises(GenevaError, match="run 'flask db init' first"):
        geneva.write_migration(tmp_path / "migrations")
