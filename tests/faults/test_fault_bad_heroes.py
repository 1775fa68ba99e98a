"""A stored hero reference that cannot be looked up pauses the workflow with an error
naming it, instead of raising before the claim and being re-sent every 15 minutes.

The rows are edited under the engine, as a bad migration, a hand-written INSERT or a
model whose key type changed would leave them: an id that does not parse as the key
(``'A-17'`` on an integer key, ``'nope'`` on a UUID key), one out of the key's range, and a
hero whose table is gone.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import UnresolvedReferenceError
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.executor import execute
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)
Mark = mark_model(db, "fbh_marks")
committed = Committed(geneva, Mark)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fbh_accounts"
    id = sa.Column(sa.Integer, primary_key=True)


class Ticket(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fbh_tickets"
    id = sa.Column(sa.Uuid, primary_key=True, default=uuid.uuid4)


class Label(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fbh_labels"
    code = sa.Column(sa.String(40), primary_key=True)


class Notify(geneva.Workflow):  # type: ignore[name-defined,misc]
    allow_multiple = True

    @step
    def send(self) -> None:
        db.session.add(Mark(workflow_id=self.id, name="send"))


def started_for(hero: Any, hero_id: str) -> tuple[int, int]:
    db.session.add(hero)
    db.session.commit()
    wf = Notify.create(hero=hero)
    w = geneva.tables.workflows
    with geneva.engine().begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == wf.id).values(hero_id=hero_id))
    (execution_id,) = committed.scheduled(wf).values()
    return wf.id, execution_id


def run_trigger_twice(app: Flask, execution_id: int) -> UnresolvedReferenceError:
    """The trigger pauses and raises to a test helper; delivered again it does nothing."""
    state = app.extensions["geneva"]
    with pytest.raises(UnresolvedReferenceError) as raised:
        execute(geneva, state, execution_id, raise_errors=True)
    again = execute(geneva, state, execution_id)
    assert again is not None and again.status == "noop"
    return raised.value


def stored_message(workflow_id: int) -> str:
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        return str(
            conn.execute(
                sa.select(e.c.error_message).where(e.c.workflow_id == workflow_id)
            ).scalar_one()
        )


def assert_paused_for_good(workflow_id: int) -> None:
    assert committed.state(workflow_id) == "paused"
    assert committed.history(workflow_id) == [("send", "failed", "failed")]
    assert committed.marks(workflow_id) == []
    with travel(timedelta(hours=2)):
        summary = housekeeping.run(geneva)
    assert (summary.retriggered, summary.stuck_reattempted) == (0, 0)


@pytest.mark.parametrize(
    ("make", "hero_id", "key_type"),
    [
        (Account, "A-17", "int"),
        (Account, "١٢", "int"),  # Arabic-Indic digits: int() reads them, the key must not
        (Ticket, "nope", "UUID"),
    ],
)
def test_an_id_that_does_not_parse_as_the_key_pauses_naming_type_id_and_key(
    app: Flask, make: Any, hero_id: str, key_type: str
) -> None:
    workflow_id, execution_id = started_for(make(), hero_id)
    error = run_trigger_twice(app, execution_id)
    message = stored_message(workflow_id)
    for part in (make.__name__, repr(hero_id), key_type):
        assert part in message and part in str(error)
    assert "paused" in message
    assert_paused_for_good(workflow_id)


def test_an_id_out_of_the_keys_range_pauses(app: Flask) -> None:
    workflow_id, execution_id = started_for(Account(), "9" * 40)
    run_trigger_twice(app, execution_id)
    assert "Account" in stored_message(workflow_id)
    assert_paused_for_good(workflow_id)


def test_a_hero_whose_table_is_gone_pauses(app: Flask) -> None:
    workflow_id, execution_id = started_for(Label(code="silver"), "silver")
    Label.__table__.drop(db.engine)
    try:
        run_trigger_twice(app, execution_id)
        message = stored_message(workflow_id)
        assert "Label" in message and "'silver'" in message
        assert_paused_for_good(workflow_id)
    finally:
        Label.__table__.create(db.engine)
