"""``flask geneva check`` and ``removed_steps_in_flight`` (SPEC 13), on the three databases.

A deploy is played as the ``deploy`` helper plays it: the workflow's row is pointed at
the next version of its class (another class in this process).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import Rows
from helpers import deploy

from flask_geneva import Geneva
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)
rows = Rows(db, geneva, ignore_schedule=True)
committed = Committed(geneva)


class Order(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def reserve(self) -> None:
        pass

    @step
    def notify_warehouse(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass


class OrderCareless(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The next version dropped a step, and nothing says what to do with workflows on it."""

    @step
    def reserve(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass


class OrderWithoutNotify(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The same, done right."""

    removed_steps = ("notify_warehouse",)

    @step
    def reserve(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass


class OrderLenient(geneva.Workflow):  # type: ignore[name-defined,misc]
    skip_undefined_steps = True

    @step
    def reserve(self) -> None:
        pass


class OrderWithInvoice(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The next version added a step at the end: a safe change."""

    @step
    def reserve(self) -> None:
        pass

    @step
    def notify_warehouse(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass

    @step
    def invoice(self) -> None:
        pass


def check(app: Any, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=["geneva", "check", *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def check_json(app: Any) -> tuple[int, dict[str, Any]]:
    result = check(app, "--format", "json")
    return result.exit_code, json.loads(result.output)


def by_type(report: dict[str, Any], stored_type: str) -> dict[str, Any]:
    return next(t for t in report["types"] if t["type"] == stored_type)


def on_notify(app: Any, cls: type[Any] | None = None) -> Any:
    """An order whose ``notify_warehouse`` is scheduled, moved to ``cls`` if given."""
    wf = Order.create()
    rows.run(app, wf, "reserve")
    assert committed.scheduled(wf).keys() == {"notify_warehouse"}
    return deploy(geneva, wf, cls) if cls is not None else wf


def test_a_clean_database_passes(app):
    Order.create()
    result = check(app)
    assert result.exit_code == 0, result.output
    assert "check passed" in result.output
    assert "Order: 1 ongoing" in result.output
    assert "OrderCareless: 0 ongoing" in result.output


def test_a_scheduled_step_the_class_no_longer_defines_fails_until_it_is_removed(app):
    wf = on_notify(app, OrderCareless)
    result = check(app)
    assert result.exit_code == 1, result.output
    assert "STRANDED OrderCareless: 1 ongoing" in result.output
    assert "step 'notify_warehouse' (not defined, STRANDED): 1 scheduled" in result.output
    assert "add it to OrderCareless.removed_steps" in result.output
    assert "check failed: 1 problem(s)" in result.output

    deploy(geneva, wf, OrderWithoutNotify)  # the fixed version
    result = check(app)
    assert result.exit_code == 0, result.output
    assert "(not defined, skipped by removed_steps): 1 scheduled" in result.output


def test_skip_undefined_steps_makes_every_undefined_step_safe(app):
    wf = on_notify(app, OrderLenient)
    code, report = check_json(app)
    assert code == 0
    (undefined,) = by_type(report, "OrderLenient")["undefined_steps"]
    assert (undefined["step"], undefined["skipped_by"], undefined["stranded"]) == (
        "notify_warehouse",
        "skip_undefined_steps",
        False,
    )
    assert committed.state(wf) == "ready"


def test_a_type_with_no_class_fails_with_the_fix(app):
    wf = Order.create()
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == wf.id).values(type="RetiredOrder"))
    result = check(app)
    assert result.exit_code == 1, result.output
    assert "STRANDED type 'RetiredOrder' (no class): 1 ongoing" in result.output
    assert "pin __geneva_type__ = 'RetiredOrder'" in result.output


def test_a_type_with_no_class_and_no_ongoing_workflow_is_not_listed(app):
    wf = Order.create()
    wf.cancel()
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == wf.id).values(type="RetiredOrder"))
    code, report = check_json(app)
    assert code == 0
    assert "RetiredOrder" not in [t["type"] for t in report["types"]]


def test_the_json_report_has_the_counts_and_the_fixes(app):
    on_notify(app, OrderCareless)
    on_notify(app, OrderCareless)
    OrderCareless.create()
    code, report = check_json(app)
    assert code == 1
    assert report["stranded"] is True
    careless = by_type(report, "OrderCareless")
    assert (careless["class"], careless["ongoing"], careless["stranded"]) == (
        "OrderCareless",
        3,
        True,
    )
    (undefined,) = careless["undefined_steps"]
    assert {k: undefined[k] for k in ("step", "scheduled", "waiting", "in_progress", "total")} == {
        "step": "notify_warehouse",
        "scheduled": 2,
        "waiting": 0,
        "in_progress": 0,
        "total": 2,
    }
    assert undefined["skipped_by"] is None and "removed_steps" in undefined["fix"]
    assert report["fixes"] == [undefined["fix"]]
    # Two were created as Order (old graph), one as OrderCareless (its graph now).
    statuses = {(c["status"], c["fingerprint"]): c["count"] for c in careless["fingerprints"]}
    assert statuses == {
        ("old", Order.step_graph().fingerprint): 2,
        ("current", OrderCareless.step_graph().fingerprint): 1,
    }
    assert careless["current_fingerprint"] == OrderCareless.step_graph().fingerprint
    assert by_type(report, "Order") == {
        "type": "Order",
        "class": "Order",
        "stranded": False,
        "current_fingerprint": Order.step_graph().fingerprint,
        "ongoing": 0,
        "fingerprints": [],
        "undefined_steps": [],
        "paused": [],
        "fix": None,
    }


def test_old_and_unknown_fingerprints_are_reported_but_not_stranded(app):
    old = on_notify(app, OrderWithInvoice)  # every step it is on is still defined
    unknown = Order.create()
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:  # as a row created before 0.2
        conn.execute(sa.update(w).where(w.c.id == unknown.id).values(fingerprint=None))
    code, report = check_json(app)
    assert code == 0
    fingerprints = by_type(report, "OrderWithInvoice")["fingerprints"]
    assert [(c["state"], c["status"], c["count"]) for c in fingerprints] == [("ready", "old", 1)]
    assert [(c["status"], c["fingerprint"]) for c in by_type(report, "Order")["fingerprints"]] == [
        ("unknown", None)
    ]
    result = check(app)
    assert result.exit_code == 0
    assert Order.step_graph().fingerprint[:12] in result.output
    assert committed.state(old) == "ready"


def test_a_workflow_paused_on_an_undefined_step_needs_resume_at(app):
    wf = on_notify(app, OrderCareless)
    rows.run(app, wf, "notify_warehouse")  # fails: the class has no such step
    assert committed.state(wf) == "paused"
    # removed_steps does not run a failed step again: still stranded.
    wf = deploy(geneva, wf, OrderWithoutNotify)
    code, report = check_json(app)
    assert code == 1
    fixed = by_type(report, "OrderWithoutNotify")
    assert fixed["undefined_steps"] == []  # nothing scheduled on it any more
    (paused,) = fixed["paused"]
    assert (paused["step"], paused["count"], paused["first_id"]) == ("notify_warehouse", 1, wf.id)
    assert f"flask geneva resume-at {wf.id} STEP" in paused["fix"]

    wf.resume_at("ship", actor="ops", reason="notify removed")
    code, report = check_json(app)
    assert code == 0, report
    assert by_type(report, "OrderWithoutNotify")["paused"] == []


def test_a_paused_workflow_that_failed_on_a_defined_step_is_not_stranded(app):
    wf = Order.create()
    wf.pause()
    code, report = check_json(app)
    assert code == 0
    assert [(c["state"], c["count"]) for c in by_type(report, "Order")["fingerprints"]] == [
        ("paused", 1)
    ]


def test_removed_steps_in_flight_counts_only_ongoing_workflows(app):
    on_notify(app, OrderWithoutNotify)
    second = on_notify(app, OrderWithoutNotify)
    assert OrderWithoutNotify.removed_steps_in_flight() == {"notify_warehouse": 2}
    second.cancel()
    assert OrderWithoutNotify.removed_steps_in_flight() == {"notify_warehouse": 1}
    assert OrderCareless.removed_steps_in_flight() == {}  # lists none
    assert Order.removed_steps_in_flight() == {}


def test_a_workflow_taken_on_and_paused_again_is_not_stranded_by_its_old_failure(app):
    wf = on_notify(app, OrderCareless)
    rows.run(app, wf, "notify_warehouse")  # fails and pauses
    wf.resume_at("ship")
    wf.pause(reason="hold the parcel")  # its latest failure is still the vanished step
    assert committed.state(wf) == "paused"
    code, report = check_json(app)
    assert code == 0, report
    assert by_type(report, "OrderCareless")["paused"] == []


def test_an_empty_database_passes(app):
    result = check(app)
    assert result.exit_code == 0, result.output
    assert "check passed" in result.output
    code, report = check_json(app)
    assert (code, report["stranded"], report["fixes"]) == (0, False, [])
    assert {t["type"] for t in report["types"]} == set(geneva.registry)
