"""A signal an operator sends is an operator action (SPEC 13): who, when and why.

``wf.signal(actor=, reason=)``, ``signal_for`` and ``flask geneva signal`` record a
``signal`` row in ``geneva_operator_actions`` in the signal's own transaction; a
duplicate, a refused signal or a webhook's signal without an actor records nothing.
On SQLite, PostgreSQL and MariaDB; every effect is read back from the tables.
"""

from __future__ import annotations

import getpass
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import SignalError
from flask_geneva import queries
from flask_geneva import step
from flask_geneva.testing import assert_waiting_for
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)
APP_CONFIG = {"GENEVA_MAX_SIGNAL_PAYLOAD": 1000}
committed = Committed(geneva)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "sigaudit_orders"
    id = sa.Column(sa.Integer, primary_key=True)
    note = sa.Column(sa.String(50), nullable=True)


class Approval(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def ask(self) -> None:
        pass

    @step(wait_for="approved")
    def record(self) -> None:
        pass


def order() -> Any:
    found = Order()
    db.session.add(found)
    db.session.commit()
    return found


def waiting(hero: Any = None) -> Any:
    workflow = Approval.create(hero=hero)
    speedrun(workflow)
    assert_waiting_for(workflow, "approved")
    return workflow


def actions(workflow: Any) -> list[dict[str, Any]]:
    a = geneva.tables.actions
    query = sa.select(a).where(a.c.workflow_id == workflow.id).order_by(a.c.id)
    with geneva.engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def noted(workflow: Any) -> list[tuple[Any, ...]]:
    return [(a["action"], a["step_name"], a["actor"], a["reason"]) for a in actions(workflow)]


def signal_count(workflow: Any) -> int:
    s = geneva.tables.signals
    with geneva.engine().connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(s).where(s.c.workflow_id == workflow.id)
            ).scalar_one()
        )


def received_at(workflow: Any) -> Any:
    s = geneva.tables.signals
    with geneva.engine().connect() as conn:
        return conn.execute(
            sa.select(s.c.received_at).where(s.c.workflow_id == workflow.id)
        ).scalar_one()


# -- the Python API ------------------------------------------------------------------------


def test_a_signal_with_an_actor_records_who_when_why_and_the_step_it_woke(app):
    workflow = waiting()
    signal = workflow.signal(
        "approved",
        {"by": "legal"},
        idempotency_key="k-1",
        actor=" ops@example.com ",
        reason="approved on the phone",
    )
    assert signal.consumed_step == "record"
    (action,) = actions(workflow)
    assert (action["action"], action["step_name"], action["actor"], action["reason"]) == (
        "signal",
        "record",
        "ops@example.com",  # stripped, as every operator call's
        "approved on the phone",
    )
    assert action["detail"] == {"signal": "approved", "idempotency_key": "k-1"}
    assert action["created_at"] == received_at(workflow)  # one change, one clock
    speedrun(workflow)
    assert committed.state(workflow) == "finished"


def test_a_pending_signal_records_no_step_and_a_reason_alone_is_enough(app):
    workflow = Approval.create()  # 'record' does not wait yet
    workflow.signal("approved", reason="sent early")
    assert noted(workflow) == [("signal", None, None, "sent early")]
    assert actions(workflow)[0]["detail"] == {"signal": "approved"}


def test_a_signal_without_actor_or_reason_records_nothing(app):
    workflow = waiting()
    workflow.signal("approved", {"by": "webhook"})
    assert signal_count(workflow) == 1 and actions(workflow) == []


def test_the_action_is_in_the_signals_transaction_a_rollback_keeps_neither(app):
    workflow = waiting()
    db.session.add(Order(note="rolled back"))
    workflow.signal("approved", commit=False, actor="ops", reason="by hand")
    db.session.rollback()
    assert signal_count(workflow) == 0 and actions(workflow) == []
    assert_waiting_for(workflow, "approved")

    db.session.add(Order(note="kept"))
    workflow.signal("approved", commit=False, actor="ops", reason="by hand")
    # Not committed yet: another connection sees neither the signal nor the action.
    assert signal_count(workflow) == 0 and actions(workflow) == []
    db.session.commit()
    assert signal_count(workflow) == 1
    assert noted(workflow) == [("signal", "record", "ops", "by hand")]


def test_a_duplicate_records_nothing_new(app):
    workflow = waiting()
    workflow.signal("approved", idempotency_key="k-1", actor="ops", reason="first")
    again = workflow.signal("approved", idempotency_key="k-1", actor="ops", reason="again")
    assert again.duplicate is True
    assert noted(workflow) == [("signal", "record", "ops", "first")]


def test_a_refused_signal_records_nothing(app):
    workflow = waiting()
    workflow.signal("approved")
    speedrun(workflow)
    with pytest.raises(InvalidStateError, match="finished workflow"):
        workflow.signal("approved", actor="ops", reason="too late")
    waiting_one = waiting()
    with pytest.raises(SignalError, match="GENEVA_MAX_SIGNAL_PAYLOAD"):
        waiting_one.signal("approved", "x" * 2000, actor="ops")
    assert actions(workflow) == [] and actions(waiting_one) == []
    assert signal_count(waiting_one) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"actor": "x" * 192}, "at most 191"),
        ({"reason": "r" * 2001}, "at most 2,000"),
        ({"actor": "ops\nroot"}, "control character"),
        ({"reason": "bell\x07"}, "control character"),
        ({"actor": 7}, "must be a string"),
    ],
)
def test_a_bad_actor_or_reason_is_refused_as_for_every_operator_call(app, kwargs, message):
    hero = order()
    workflow = waiting(hero)
    with pytest.raises(ValueError, match=message) as refused:
        workflow.signal("approved", **kwargs)
    with pytest.raises(ValueError) as by_cancel:
        workflow.cancel(**kwargs)
    assert str(refused.value) == str(by_cancel.value)  # the same check, the same words
    with pytest.raises(ValueError, match=message):
        Approval.signal_for(hero, "approved", **kwargs)
    assert signal_count(workflow) == 0 and actions(workflow) == []
    assert_waiting_for(workflow, "approved")


def test_signal_for_records_the_actor(app):
    hero = order()
    workflow = waiting(hero)
    Approval.signal_for(hero, "approved", actor="ops", reason="for hero")
    assert noted(workflow) == [("signal", "record", "ops", "for hero")]


def test_the_acted_on_by_filter_finds_the_workflows_an_operator_signalled(app):
    signalled = waiting()
    other = waiting()
    signalled.signal("approved", actor="ada@example.com")
    other.signal("approved")  # a webhook: no actor
    found = queries.list_workflows(
        geneva, queries.WorkflowFilter(actor="ada@example.com"), limit=10
    )
    assert [row["id"] for row in found] == [signalled.id]


# -- the CLI -------------------------------------------------------------------------------


def invoke(app: Any, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=["geneva", *args])
    assert "Traceback" not in result.output, result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), result.exception
    return result


def test_the_cli_records_actor_and_reason(app):
    workflow = waiting()
    result = invoke(
        app,
        "signal",
        str(workflow.id),
        "approved",
        "--payload",
        '{"by": "ada"}',
        "--idempotency-key",
        "k-9",
        "--actor",
        "ops@example.com",
        "--reason",
        "approved by mail",
    )
    assert result.exit_code == 0, result.output
    assert "woke step 'record'" in result.output
    assert noted(workflow) == [("signal", "record", "ops@example.com", "approved by mail")]
    assert actions(workflow)[0]["detail"] == {"signal": "approved", "idempotency_key": "k-9"}
    again = invoke(app, "signal", str(workflow.id), "approved", "-k", "k-9", "--actor", "ops")
    assert again.exit_code == 0 and "duplicate of signal" in again.output
    assert len(actions(workflow)) == 1  # a duplicate records nothing new


def test_the_cli_actor_defaults_to_the_operating_system_user(app):
    workflow = waiting()
    assert invoke(app, "signal", str(workflow.id), "approved").exit_code == 0
    assert noted(workflow) == [("signal", "record", getpass.getuser(), None)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--reason", "bell\x07"), "reason holds a control character"),
        (("--actor", "x" * 192), "actor is 192 characters long; at most 191"),
        (("--actor", "nul\x00"), "--actor"),
    ],
)
def test_the_cli_refuses_a_bad_actor_or_reason_and_stores_nothing(app, args, message):
    workflow = waiting()
    result = invoke(app, "signal", str(workflow.id), "approved", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert signal_count(workflow) == 0 and actions(workflow) == []
    assert_waiting_for(workflow, "approved")


def test_the_cli_refused_signal_records_nothing(app):
    workflow = waiting()
    workflow.signal("approved")
    speedrun(workflow)
    result = invoke(app, "signal", str(workflow.id), "approved", "--actor", "ops")
    assert result.exit_code == 1 and "Cannot signal 'approved' to a finished" in result.output
    assert actions(workflow) == []
