"""Heroes at run time (Geneva Drive HERO-01..03, HERO-07): checked before every step,
any single-column key type, or none at all.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import GenevaError
from flask_geneva import step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "hr_users"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(50), nullable=False, default="Test User")


class Coupon(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "hr_coupons"
    code = sa.Column(sa.String(40), primary_key=True)
    value = sa.Column(sa.Integer, nullable=False)


class Document(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "hr_documents"
    id = sa.Column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    title = sa.Column(sa.String(50), nullable=False)


Mark = mark_model(db, "hr_marks")
rows = Rows(db, geneva, Mark)
executions = rows.executions
marks = rows.marks
run_next = rows.run  # the one scheduled execution, whichever step it is
mark = rows.mark


def describe(hero: Any) -> str:
    if hero is None:
        return "no hero"
    if isinstance(hero, User):
        return f"user {hero.name}"
    if isinstance(hero, Coupon):
        return f"coupon {hero.code}={hero.value}"
    return f"document {hero.id} {hero.title}"


class Greeting(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def hello(self) -> None:
        mark(self, f"hello {describe(self.hero)}")

    @step
    def goodbye(self) -> None:
        mark(self, f"goodbye {describe(self.hero)}")


class Farewell(Greeting):
    may_proceed_without_hero = True


class LateFarewell(Farewell):
    """Inherits ``may_proceed_without_hero``."""


# -- helpers ---------------------------------------------------------------------------


def add(instance: Any) -> Any:
    db.session.add(instance)
    db.session.commit()
    return instance


def delete(instance: Any) -> None:
    db.session.delete(instance)
    db.session.commit()


# -- a deleted hero ----------------------------------------------------------------------


def test_a_hero_deleted_before_the_first_step_cancels_the_workflow(app: Flask) -> None:
    user = add(User())
    wf = Greeting.create(hero=user)
    delete(user)
    report = run_next(app, wf)
    assert report.status == "settled"
    assert wf.state == "canceled"
    (canceled,) = executions(wf)
    assert (canceled.state, canceled.outcome) == ("canceled", "canceled")
    assert canceled.started_at is None and canceled.canceled_at == canceled.finished_at
    assert marks(wf) == []


def test_the_hero_is_checked_again_before_every_step(app: Flask) -> None:
    user = add(User(name="Ada"))
    wf = Greeting.create(hero=user)
    run_next(app, wf)
    delete(user)
    run_next(app, wf)
    assert wf.state == "canceled"
    assert [(e.step_name, e.state) for e in executions(wf)] == [
        ("hello", "completed"),
        ("goodbye", "canceled"),
    ]
    assert marks(wf) == ["hello user Ada"]


def test_may_proceed_without_hero_runs_the_steps_with_hero_none(app: Flask) -> None:
    for cls in (Farewell, LateFarewell):
        user = add(User(name="Ada"))
        wf = cls.create(hero=user)
        run_next(app, wf)
        delete(user)
        run_next(app, wf)
        assert wf.state == "finished", cls.__name__
        assert marks(wf) == ["hello user Ada", "goodbye no hero"]
        # The reference is kept: the row still says whose workflow it was.
        assert (wf.hero_type, wf.hero_id) == ("User", str(user.id))


# -- key types ---------------------------------------------------------------------------


def test_a_hero_with_a_string_primary_key_round_trips(app: Flask) -> None:
    coupon = add(Coupon(code="SPRING-24/ü", value=15))
    wf = Greeting.create(hero=coupon)
    assert (wf.hero_type, wf.hero_id) == ("Coupon", "SPRING-24/ü")
    speedrun(wf)
    assert wf.state == "finished"
    assert marks(wf) == ["hello coupon SPRING-24/ü=15", "goodbye coupon SPRING-24/ü=15"]


def test_a_hero_with_a_uuid_primary_key_round_trips(app: Flask) -> None:
    document = add(Document(title="contract"))
    wf = Greeting.create(hero=document)
    assert wf.hero_id == str(document.id)
    speedrun(wf)
    assert marks(wf) == [
        f"hello document {document.id} contract",
        f"goodbye document {document.id} contract",
    ]
    # Deleting it is noticed through the same key conversion.
    other = add(Document(title="draft"))
    wf2 = Greeting.create(hero=other)
    delete(other)
    run_next(app, wf2)
    assert wf2.state == "canceled"


def test_one_ongoing_workflow_per_hero_holds_for_string_and_uuid_keys(app: Flask) -> None:
    from flask_geneva import WorkflowExistsError

    for hero in (add(Coupon(code="X1", value=1)), add(Document(title="t"))):
        Greeting.create(hero=hero)
        with pytest.raises(WorkflowExistsError):
            Greeting.create(hero=hero)


# -- no hero ---------------------------------------------------------------------------


def test_a_workflow_without_a_hero_runs_with_hero_none(app: Flask) -> None:
    first = Greeting.create()
    second = Greeting.create()  # no hero, no uniqueness slot to share
    assert (first.hero_type, first.hero_id) == (None, None)
    for wf in (first, second):
        speedrun(wf)
        assert wf.state == "finished"
        assert marks(wf) == ["hello no hero", "goodbye no hero"]


def test_a_hero_must_be_a_persisted_model_instance(app: Flask) -> None:
    with pytest.raises(GenevaError, match="add it to the session and flush"):
        Greeting.create(hero=User())
    with pytest.raises(GenevaError, match="must be a mapped model instance"):
        Greeting.create(hero="user:1")
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 0
