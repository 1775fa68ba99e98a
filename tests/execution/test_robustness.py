"""Run-time references that no longer resolve (SPEC 2.1): a renamed class, a removed
step, a hero model gone. Each pauses the workflow with an error naming what is missing,
never raises out of the executor, and never loops.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import GenevaError
from flask_geneva import StepExecutionError
from flask_geneva import step
from flask_geneva.executor import execute
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "rb_orders"
    id = sa.Column(sa.Integer, primary_key=True)


Mark = mark_model(db, "rb_marks")
rows = Rows(db, geneva, Mark)
executions = rows.executions  # by workflow id: some workflows here cannot be loaded
marks = rows.marks
mark = rows.mark


class Fulfilment(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def pack(self) -> None:
        mark(self, "pack")

    @step
    def ship(self) -> None:
        mark(self, "ship")


class Billing(geneva.Workflow):  # type: ignore[name-defined,misc]
    # Pinned: renaming the class later keeps its stored rows resolvable.
    __geneva_type__ = "legacy.Invoicing"

    @step
    def invoice(self) -> None:
        mark(self, "invoice")


def _factory() -> type:
    class Local(geneva.Workflow):  # type: ignore[name-defined,misc]
        __geneva_type__ = "rb.Local"

        @step
        def only(self) -> None:
            mark(self, "only")

    return Local


#: A class defined inside a function still registers and resolves.
LocalWorkflow = _factory()


# -- helpers ---------------------------------------------------------------------------


def workflow_row(workflow_id: int) -> Any:
    w = geneva.tables.workflows
    with geneva.engine().connect() as conn:
        return conn.execute(sa.select(w).where(w.c.id == workflow_id)).one()


def change(table: sa.Table, row_id: int, **values: Any) -> None:
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))


def execute_twice(app: Flask, execution_id: int) -> StepExecutionError:
    """Run a trigger, as a test helper would (raise_errors), then deliver it again.

    The missing reference is raised to the caller, after the pause committed.
    """
    state = app.extensions["geneva"]
    with pytest.raises(StepExecutionError) as raised:
        execute(geneva, state, execution_id, raise_errors=True)
    assert raised.value.execution_id == execution_id
    again = execute(geneva, state, execution_id)
    assert again is not None and again.status == "noop"  # delivered again: nothing
    return raised.value


def order() -> Any:
    o = Order()
    db.session.add(o)
    db.session.commit()
    return o


# -- a type with no class ----------------------------------------------------------------


def test_a_row_whose_type_names_no_class_is_paused_with_an_error_naming_the_type(
    app: Flask, huey: Any
) -> None:
    wf = Fulfilment.create(hero=order())
    wf_id = wf.id
    first_id = executions(wf_id)[0].id
    change(geneva.tables.workflows, wf_id, type="RenamedAway")
    db.session.commit()
    db.session.expunge_all()
    huey.flush()

    error = execute_twice(app, first_id)
    assert "'RenamedAway' names no workflow class" in str(error)
    assert workflow_row(wf_id).state == "paused"
    (failed,) = executions(wf_id)
    assert (failed.state, failed.outcome) == ("failed", "failed")
    assert "'RenamedAway'" in failed.error_message
    assert "names no workflow class" in failed.error_message
    assert failed.error_class == "flask_geneva.errors.UnresolvedReferenceError"
    assert huey.pending_count() == 0  # nothing re-triggers it: no loop
    assert marks(wf_id) == []

    # The row still loads (as the base class), and the operator's tools say what to do.
    loaded = db.session.get(geneva.Workflow, wf_id)
    assert type(loaded) is geneva.Workflow and loaded.type == "RenamedAway"
    with pytest.raises(GenevaError, match="names no workflow class.*cancel is still possible"):
        loaded.resume()

    # Deploying the class back (here: restoring the name) and resuming recovers it.
    change(geneva.tables.workflows, wf_id, type="Fulfilment")
    db.session.commit()
    db.session.expunge_all()
    restored = db.session.get(geneva.Workflow, wf_id)
    assert isinstance(restored, Fulfilment)
    restored.resume()
    speedrun(restored)
    assert restored.state == "finished"
    assert marks(wf_id) == ["pack", "ship"]


def test_a_workflow_whose_class_is_gone_can_still_be_canceled(app: Flask) -> None:
    wf = Fulfilment.create()
    wf_id = wf.id
    change(geneva.tables.workflows, wf_id, type="RenamedAway")
    db.session.commit()
    db.session.expunge_all()
    loaded = db.session.get(geneva.Workflow, wf_id)
    loaded.cancel()
    assert workflow_row(wf_id).state == "canceled"
    assert [e.state for e in executions(wf_id)] == ["canceled"]


# -- a step no longer defined ------------------------------------------------------------


def test_a_step_removed_by_a_deploy_pauses_with_step_not_defined(app: Flask, huey: Any) -> None:
    wf = Fulfilment.create(hero=order())
    (first,) = executions(wf.id)
    change(geneva.tables.executions, first.id, step_name="x")
    huey.flush()

    error = execute_twice(app, first.id)
    assert error.workflow_id == first.workflow_id
    assert workflow_row(wf.id).state == "paused"
    failed, *waiting = executions(wf.id)
    # The class's own first step was never started: it waits, untriggered, for resume.
    assert [(e.step_name, e.state) for e in waiting] == [("pack", "scheduled")]
    assert (failed.state, failed.outcome) == ("failed", "failed")
    assert failed.error_message == "Step 'x' is not defined in Fulfilment; workflow paused"
    assert failed.error_class == "flask_geneva.errors.StepNotDefinedError"
    assert failed.failed_at == failed.finished_at is not None
    assert huey.pending_count() == 0

    # Resume carries on with the steps the class does define.
    wf.resume()
    speedrun(wf)
    assert wf.state == "finished"
    assert marks(wf.id) == ["pack", "ship"]


# -- a hero model gone -------------------------------------------------------------------


def test_a_hero_type_with_no_model_pauses_with_an_error_naming_it(app: Flask, huey: Any) -> None:
    wf = Fulfilment.create(hero=order())
    (first,) = executions(wf.id)
    change(geneva.tables.workflows, wf.id, hero_type="GoneModel")
    huey.flush()

    error = execute_twice(app, first.id)
    assert error.workflow_id == first.workflow_id
    assert workflow_row(wf.id).state == "paused"
    (failed,) = executions(wf.id)
    assert (failed.state, failed.outcome) == ("failed", "failed")
    assert "'GoneModel'" in failed.error_message and "paused" in failed.error_message
    assert huey.pending_count() == 0
    assert marks(wf.id) == []


# -- class identity -----------------------------------------------------------------------


def test_a_pinned_identity_is_what_the_type_column_stores(app: Flask) -> None:
    wf_id = Billing.create().id
    assert workflow_row(wf_id).type == "legacy.Invoicing"
    db.session.commit()
    db.session.expunge_all()
    loaded = db.session.get(geneva.Workflow, wf_id)
    assert isinstance(loaded, Billing)
    speedrun(loaded)
    assert loaded.state == "finished"


def test_a_class_defined_inside_a_function_runs(app: Flask) -> None:
    wf = LocalWorkflow.create()
    speedrun(wf)
    assert wf.state == "finished"
    assert marks(wf.id) == ["only"]
    assert geneva.registry["rb.Local"] is LocalWorkflow
