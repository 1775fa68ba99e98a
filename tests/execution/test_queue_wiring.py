"""How flask-geneva sits on a Huey: shared instances, and a queue that cannot be reached."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import REDIS_URL
from helpers import RUN_TOKEN
from helpers import Committed
from helpers import require
from helpers import running_consumer
from helpers import wait_until
from huey import MemoryHuey
from huey import PriorityRedisHuey
from huey import RedisHuey
from huey import SqliteHuey

from flask_geneva import ConfigurationError
from flask_geneva import Geneva
from flask_geneva import executor
from flask_geneva import step
from flask_geneva.config import make_huey

db = SQLAlchemy()
geneva = Geneva(db)

#: Nothing listens on port 1: every enqueue fails with "connection refused".
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


class Ticket(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "wiring_tickets"
    id = sa.Column(sa.Integer, primary_key=True)
    steps = sa.Column(sa.Integer, nullable=False, default=0)


def count(workflow: Any) -> None:
    db.session.execute(
        sa.update(Ticket).where(Ticket.id == int(workflow.hero_id)).values(steps=Ticket.steps + 1)
    )


class TicketWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def open(self) -> None:
        count(self)

    @step
    def close(self) -> None:
        count(self)


APPS: list[Flask] = []


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    for app in APPS:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()
    APPS.clear()


def make_app(tmp_path: Path, name: str, huey: Any) -> Flask:
    app = Flask(name, instance_path=str(tmp_path / "instance"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / (name + '.db')}",
        GENEVA_HUEY=huey,
        # Queue names are per run: parallel runs share one Redis.
        GENEVA_HUEY_NAME=f"geneva-test-{RUN_TOKEN}-{name}",
    )
    db.init_app(app)
    geneva.init_app(app)
    with app.app_context():
        db.create_all()
    APPS.append(app)
    return app


committed = Committed(geneva)
scheduled = committed.scheduled


def test_one_huey_instance_serves_apps_made_one_after_another_by_a_factory(tmp_path):
    shared = MemoryHuey("shared")
    make_app(tmp_path, "first", shared)
    second = make_app(tmp_path, "second", shared)

    with running_consumer(shared, workers=2), second.app_context():
        ticket = Ticket(steps=0)
        db.session.add(ticket)
        db.session.commit()
        workflow = TicketWorkflow.create(hero=ticket)
        wait_until(
            lambda: committed.state(workflow.id) == "finished",
            timeout=15,
            message=lambda: f"the workflow is {committed.state(workflow.id)!r}, not 'finished'",
        )
        assert db.session.get(Ticket, ticket.id).steps == 2
        db.session.remove()


def test_an_unreachable_queue_loses_no_work_already_committed(tmp_path, caplog):
    app = make_app(tmp_path, "outage", UNREACHABLE_REDIS)
    caplog.set_level(logging.ERROR, logger="flask_geneva")
    with app.app_context():
        ticket = Ticket(steps=0)
        db.session.add(ticket)
        db.session.commit()
        # The commit succeeds; only the trigger is missing.
        workflow = TicketWorkflow.create(hero=ticket)
        open_id = scheduled(workflow.id)["open"]

        report = executor.execute(geneva, app.extensions["geneva"], open_id)
        assert report is not None and report.status == "ran" and report.action == "success"
        assert "close" in scheduled(workflow.id)
        assert db.session.get(Ticket, ticket.id).steps == 1
        db.session.remove()

    failures = [r.getMessage() for r in caplog.records if "could not enqueue" in r.getMessage()]
    assert len(failures) == 2
    assert f"[execution={open_id}]" in failures[0]


class DeliveryLikeWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def pick(self) -> None:
        count(self)

    @step(after="pick")
    def pack(self) -> None:
        count(self)

    @step(after="pick")
    def label(self) -> None:
        count(self)

    @step(after=["pack", "label"])
    def ship(self) -> None:
        count(self)


class UrgentWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    step_job_options = {"priority": 10}

    @step
    def page(self) -> None:
        count(self)


def test_a_redis_url_gives_a_queue_that_honours_step_priorities(tmp_path):
    require("redis")
    app = make_app(tmp_path, "urgent", REDIS_URL)
    with app.app_context():
        huey = geneva.huey
        assert isinstance(huey, RedisHuey) and huey.storage.priority
        huey.flush()
        try:
            TicketWorkflow.create()
            UrgentWorkflow.create()
            # The urgent step's message comes out first although it was sent last.
            assert [(t.name, t.priority) for t in huey.pending()] == [
                ("geneva.perform_step", 10),
                ("geneva.perform_step", None),
            ]
        finally:
            huey.flush()
            db.session.remove()


def test_a_queue_without_priorities_still_gets_every_trigger_and_a_warning(tmp_path, caplog):
    require("redis")
    plain = RedisHuey(f"geneva-test-{RUN_TOKEN}-plain", url=REDIS_URL)
    app = make_app(tmp_path, "plain", plain)
    caplog.set_level(logging.WARNING, logger="flask_geneva")
    plain.flush()
    try:
        with app.app_context():
            UrgentWorkflow.create()
            UrgentWorkflow.create()
            db.session.remove()
        assert [t.priority for t in plain.pending()] == [None, None]
        warnings = [r.getMessage() for r in caplog.records if "priorities" in r.getMessage()]
        assert len(warnings) == 1 and "PriorityRedisHuey" in warnings[0]
    finally:
        plain.flush()


@pytest.fixture
def huey_url() -> str:
    """For the tests below that use the ``app`` fixture: Huey's immediate mode."""
    return "immediate://"


def chain_step(self: Any) -> None:
    count(self)


class LongChainWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    links = [step(chain_step, name=f"link_{i}") for i in range(150)]


#: Attempts of FlakyWorkflow.poll (kept outside the database: a failed attempt's writes
#: are rolled back).
POLLS: list[int] = []


class FlakyWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception="reattempt", max_reattempts=150)
    def poll(self) -> None:
        POLLS.append(1)
        if len(POLLS) < 120:
            raise TimeoutError("not settled yet")

    @step(after="poll")
    def done(self) -> None:
        pass


def test_in_immediate_mode_a_dag_runs_to_the_end_inside_create(app):
    ticket = Ticket(steps=0)
    db.session.add(ticket)
    db.session.commit()
    workflow = DeliveryLikeWorkflow.create(hero=ticket)
    assert workflow.state == "finished"
    assert db.session.get(Ticket, ticket.id).steps == 4


@pytest.mark.slow  # 150 steps and 120 reattempts, one after another
def test_in_immediate_mode_long_chains_and_reattempt_loops_run_one_step_after_another(app):
    POLLS.clear()
    hero = Ticket(steps=0)
    db.session.add(hero)
    db.session.commit()

    chain = LongChainWorkflow.create(hero=hero)
    flaky = FlakyWorkflow.create()

    assert (chain.state, flaky.state) == ("finished", "finished")
    db.session.expire_all()
    assert db.session.get(Ticket, hero.id).steps == 150
    assert len(POLLS) == 120


def test_each_geneva_huey_form_gives_the_matching_huey(tmp_path):
    instance = tmp_path / "instance"
    mine = MemoryHuey("mine")

    def make(value: Any) -> Any:
        return make_huey(value, name="q", instance_path=str(instance))

    assert make(mine) is mine
    relative = make("sqlite:///queue.db")
    assert isinstance(relative, SqliteHuey)
    assert relative.storage.filename == str(instance / "queue.db")
    absolute = make(f"sqlite:///{tmp_path / 'abs.db'}")
    assert absolute.storage.filename == str(tmp_path / "abs.db")
    redis_huey = make("redis://127.0.0.1:6379/3")
    assert isinstance(redis_huey, PriorityRedisHuey) and redis_huey.storage.blocking
    assert type(make("memory://")) is MemoryHuey and not make("memory://").immediate
    assert make("immediate://").immediate


def test_a_wrong_geneva_huey_says_which_forms_exist(tmp_path):
    for value, expected in [
        ("amqp://broker", "use sqlite:///, redis://, memory:// or immediate://"),
        ("sqlite://", "expected sqlite:///path/to/file.db"),
        (42, "must be a huey.Huey or a URL"),
    ]:
        with pytest.raises(ConfigurationError, match=re.escape(expected)):
            make_huey(value, name="q", instance_path=str(tmp_path))
