"""A linear and a DAG workflow run to the end on every database."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import assert_workflow_state
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class Payment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "smoke_payments"
    id = sa.Column(sa.Integer, primary_key=True)
    log = sa.Column(sa.String(200), nullable=False, default="")


class PaymentWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def authorize(self) -> None:
        self.hero.log += "a"

    @step(wait=timedelta(hours=1))
    def capture(self) -> None:
        self.hero.log += "c"

    @step(after="authorize")
    def notify_risk_team(self) -> None:
        self.hero.log += "n"

    @step(after=["capture", "notify_risk_team"])
    def send_receipt(self) -> None:
        self.hero.log += "r"


def test_a_dag_workflow_runs_every_step_once_and_finishes(app):
    payment = Payment()
    db.session.add(payment)
    db.session.commit()
    workflow = PaymentWorkflow.create(hero=payment)
    speedrun(workflow)
    assert_workflow_state(workflow, "finished")
    assert sorted(db.session.get(Payment, payment.id).log) == sorted("acnr")
    assert [e.outcome for e in workflow.executions] == ["success"] * 4
