"""``geneva.admin_blueprint`` is one blueprint per ``Geneva``, mountable on several apps."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from admin_helpers import PREFIX
from admin_helpers import hx_post
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)


class Ticket(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "adminbp_tickets"
    id = sa.Column(sa.Integer, primary_key=True)


class TicketWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def triage(self) -> None:
        pass


def _second_app(tmp_path: Path) -> Flask:
    other = Flask("second", instance_path=str(tmp_path / "second-instance"))
    other.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'second.db'}",
        GENEVA_HUEY="memory://",
    )
    db.init_app(other)
    geneva.init_app(other)
    return other


def test_every_access_returns_the_same_blueprint() -> None:
    first = geneva.admin_blueprint
    assert geneva.admin_blueprint is first
    assert first.name == "geneva"
    assert Geneva(SQLAlchemy()).admin_blueprint is not first  # one per Geneva instance


def test_the_one_blueprint_serves_two_apps_each_with_its_own_workflows(
    app: Flask, tmp_path: Path
) -> None:
    other = _second_app(tmp_path)
    app.register_blueprint(geneva.admin_blueprint, url_prefix=PREFIX)
    other.register_blueprint(geneva.admin_blueprint, url_prefix="/ops")
    assert app.blueprints["geneva"] is other.blueprints["geneva"]

    here = TicketWorkflow.create().id
    with other.app_context():
        db.create_all()
        TicketWorkflow.create()
        TicketWorkflow.create(allow_multiple=True)
        there = [row["id"] for row in geneva.list_workflows()]
    try:
        first = app.test_client().get(f"{PREFIX}/workflows")
        second = other.test_client().get("/ops/workflows")
        assert first.status_code == second.status_code == 200
        assert f'href="{PREFIX}/workflows/{here}"' in first.text
        assert "/ops/" not in first.text
        for workflow_id in there:
            assert f'href="/ops/workflows/{workflow_id}"' in second.text
        assert f"{PREFIX}/" not in second.text

        # An action on the first app acts on the first app's database only.
        response = hx_post(app.test_client(), f"/workflows/{here}/pause")
        assert response.status_code == 200, response.text
        assert geneva.counts_by_state()["paused"] == 1
        with other.app_context():
            assert geneva.counts_by_state()["paused"] == 0
    finally:
        with other.app_context():
            db.session.remove()
            db.drop_all()
            for engine in db.engines.values():
                engine.dispose()
