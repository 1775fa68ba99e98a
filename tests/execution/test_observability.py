"""What an operator can observe: blinker signals around each step, and tagged log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import executor
from flask_geneva import signals
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)


class Card(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "obs_cards"
    id = sa.Column(sa.Integer, primary_key=True)


class ChargeWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(skip_if=lambda workflow: False)
    def charge(self) -> None:
        self.logger.info("charging card %s", self.hero_id)

    @step
    def capture(self) -> None:
        raise ValueError("card declined")


SIGNALS = {
    "precondition": signals.precondition_evaluated,
    "performed": signals.step_performed,
    "finalized": signals.step_finalized,
}


@contextmanager
def recording() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    """Record every flask-geneva signal sent inside the block, in order."""
    events: list[tuple[str, Any, dict[str, Any]]] = []
    with ExitStack() as stack:
        for name, signal in SIGNALS.items():

            def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
                events.append((_name, sender, kwargs))

            stack.enter_context(signal.connected_to(receiver))
        yield events


def scheduled_id(workflow: Any, step_name: str) -> int:
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        return int(
            conn.execute(
                sa.select(e.c.id).where(
                    e.c.workflow_id == workflow.id,
                    e.c.step_name == step_name,
                    e.c.state == "scheduled",
                )
            ).scalar_one()
        )


@pytest.fixture
def card(app: Any) -> Card:
    card = Card()
    db.session.add(card)
    db.session.commit()
    return card


def test_signals_fire_in_order_with_the_step_and_its_outcome(app, card):
    workflow = ChargeWorkflow.create(hero=card)
    charge = scheduled_id(workflow, "charge")
    with recording() as events:
        executor.execute(geneva, app.extensions["geneva"], charge)

    assert [name for name, _, _ in events] == ["precondition", "performed", "finalized"]
    for _, sender, kwargs in events:
        assert sender is ChargeWorkflow
        assert kwargs["workflow_id"] == workflow.id
        assert kwargs["execution_id"] == charge
        assert kwargs["step_name"] == "charge"
        assert kwargs["exception"] is None
        assert kwargs["duration"] >= 0
    assert [kwargs["outcome"] for _, _, kwargs in events] == ["passed", "completed", "success"]
    assert events[-1][2]["workflow_state"] == "ready"


def test_signals_carry_the_exception_of_a_failed_step(app, card):
    workflow = ChargeWorkflow.create(hero=card)
    executor.execute(geneva, app.extensions["geneva"], scheduled_id(workflow, "charge"))
    capture = scheduled_id(workflow, "capture")
    with recording() as events:
        executor.execute(geneva, app.extensions["geneva"], capture)

    # Sent for every claimed step, with "passed" when it has no condition to evaluate.
    assert [name for name, _, _ in events] == ["precondition", "performed", "finalized"]
    precondition, performed, finalized = (kwargs for _, _, kwargs in events)
    assert precondition["outcome"] == "passed" and precondition["exception"] is None
    assert performed["outcome"] == "exception"
    assert isinstance(performed["exception"], ValueError)
    assert finalized["outcome"] == "failed"
    assert finalized["exception"] is performed["exception"]
    assert finalized["workflow_state"] == "paused"
    assert performed["duration"] >= 0 and finalized["duration"] >= 0


def test_a_failure_is_logged_with_the_workflow_hero_execution_and_step(app, card, caplog):
    caplog.set_level(logging.INFO, logger="flask_geneva")
    workflow = ChargeWorkflow.create(hero=card)
    executor.execute(geneva, app.extensions["geneva"], scheduled_id(workflow, "charge"))
    capture = scheduled_id(workflow, "capture")
    executor.execute(geneva, app.extensions["geneva"], capture)

    tag = (
        f"[ChargeWorkflow id={workflow.id} hero=Card:{card.id}] [execution={capture} step=capture]"
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"{tag} step failed with ValueError: card declined" in errors


def test_a_step_body_logs_through_the_workflows_tagged_logger(app, card, caplog):
    caplog.set_level(logging.INFO, logger="flask_geneva")
    workflow = ChargeWorkflow.create(hero=card)
    charge = scheduled_id(workflow, "charge")
    executor.execute(geneva, app.extensions["geneva"], charge)

    messages = [r.getMessage() for r in caplog.records if r.name == "flask_geneva"]
    tag = f"[ChargeWorkflow id={workflow.id} hero=Card:{card.id}]"
    assert f"{tag} [execution={charge} step=charge] charging card {card.id}" in messages

    caplog.clear()
    workflow.logger.warning("checked by hand")
    assert [r.getMessage() for r in caplog.records] == [f"{tag} checked by hand"]
