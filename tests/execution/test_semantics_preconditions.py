"""Preconditions: ``cancel_if`` and ``skip_if`` before every step (Geneva Drive OPT-05..09,
EXC-26, EXC-27). They decide before the body runs; their exceptions go through the
step's exception policy like the body's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import mark_model

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class Member(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "pc_members"
    id = sa.Column(sa.Integer, primary_key=True)
    closed = sa.Column(sa.Boolean, nullable=False, default=False)
    tag = sa.Column(sa.String(20), nullable=True)


Mark = mark_model(db, "pc_marks")
rows = Rows(db, geneva, Mark, ignore_schedule=True)
executions = rows.executions
history = rows.history
marks = rows.marks
run = rows.run
mark = rows.mark


class Membership(geneva.Workflow):  # type: ignore[name-defined,misc]
    cancel_if = "is_closed"

    def is_closed(self) -> bool:
        return bool(self.hero.closed)

    @step
    def welcome(self) -> None:
        mark(self, "welcome")

    @step(skip_if=lambda wf: wf.hero.tag == "skip")
    def upsell(self) -> None:
        mark(self, "upsell")

    @step(after=[], wait=3600)
    def reminder(self) -> None:
        mark(self, "reminder")


class VipMembership(Membership):
    cancel_if = [lambda wf: wf.hero.tag == "vip-stop", lambda wf: False]


class Skips(geneva.Workflow):  # type: ignore[name-defined,misc]
    def hero_says_skip(self) -> bool:
        return self.hero.tag == "skip"

    @step(skip_if=True)
    def always(self) -> None:
        mark(self, "always")

    @step(skip_if=False)
    def never(self) -> None:
        mark(self, "never")

    @step(skip_if="hero_says_skip")
    def by_method(self) -> None:
        mark(self, "by_method")

    @step(skip_if=lambda wf: wf.hero.tag != "skip")
    def by_callable(self) -> None:
        mark(self, "by_callable")


class ConditionError(Exception):
    pass


def _raising(workflow: Any) -> bool:
    raise ConditionError(f"Exception in {workflow.hero.tag}")


def _cancel_if_raising_on_tag(workflow: Any) -> bool:
    if workflow.hero.tag == "cancel_if":
        raise ConditionError("Exception in cancel_if")
    return False


def _make(kind: str, action: str) -> type:
    """A class whose ``cancel_if`` or first step's ``skip_if`` raises, with ``action``."""

    def test_step(self: Any) -> None:
        mark(self, "test_step")

    def next_step(self: Any) -> None:
        mark(self, "next_step")

    namespace: dict[str, Any] = {
        "test_step": step(on_exception=action, skip_if=_raising if kind == "skip_if" else None)(
            test_step
        ),
        "next_step": step(next_step),
    }
    if kind == "cancel_if":
        namespace["cancel_if"] = _cancel_if_raising_on_tag
    return type(f"Raising_{kind}_{action}", (geneva.Workflow,), namespace)


CONDITION_CASES = {
    # action: (first execution state/outcome, workflow state)
    "pause": (("failed", "failed"), "paused"),
    "cancel": (("failed", "canceled"), "canceled"),
    "reattempt": (("completed", "reattempted"), "ready"),
    "skip": (("skipped", "skipped"), "ready"),
}
RAISING = {(k, a): _make(k, a) for k in ("cancel_if", "skip_if") for a in CONDITION_CASES}


class BlanketForConditions(geneva.Workflow):  # type: ignore[name-defined,misc]
    on_exception = ExceptionPolicy("skip")

    @step(skip_if=_raising)
    def test_step(self) -> None:
        mark(self, "test_step")

    @step
    def next_step(self) -> None:
        mark(self, "next_step")


# -- helpers ---------------------------------------------------------------------------


def member(**values: Any) -> Any:
    m = Member(**values)
    db.session.add(m)
    db.session.commit()
    return m


def assert_never_started(execution: Any, state: str, outcome: str) -> None:
    assert (execution.state, execution.outcome) == (state, outcome)
    assert execution.started_at is None
    assert getattr(execution, f"{state}_at") == execution.finished_at is not None


# -- cancel_if ----------------------------------------------------------------------------


def test_cancel_if_cancels_the_workflow_before_the_step_runs(app: Flask) -> None:
    wf = Membership.create(hero=member(closed=True))
    report = run(app, wf, "welcome")
    assert report.status == "settled"
    assert wf.state == "canceled"
    welcome, reminder = executions(wf)
    assert_never_started(welcome, "canceled", "canceled")
    assert_never_started(reminder, "canceled", "canceled")  # the scheduled sibling too
    assert marks(wf) == []


def test_cancel_if_is_evaluated_before_every_step(app: Flask) -> None:
    hero = member()
    wf = Membership.create(hero=hero)
    run(app, wf, "welcome")
    hero.closed = True
    db.session.commit()
    run(app, wf, "upsell")
    assert wf.state == "canceled"
    assert history(wf)[-1] == ("upsell", "canceled", "canceled")
    assert marks(wf) == ["welcome"]


def test_cancel_if_conditions_accumulate_down_the_inheritance_chain(app: Flask) -> None:
    # The parent's method-name condition still applies to the subclass...
    closed = VipMembership.create(hero=member(closed=True))
    run(app, closed, "welcome")
    assert closed.state == "canceled"
    # ...and the subclass adds its own, which the parent does not have.
    stopped = VipMembership.create(hero=member(tag="vip-stop"))
    run(app, stopped, "welcome")
    assert stopped.state == "canceled"
    parent = Membership.create(hero=member(tag="vip-stop"))
    run(app, parent, "welcome")
    assert parent.state == "ready"
    assert marks(parent) == ["welcome"]
    assert marks(closed) == marks(stopped) == []


def test_cancel_if_wins_over_skip_if(app: Flask) -> None:
    hero = member(tag="skip")
    wf = Membership.create(hero=hero)
    run(app, wf, "welcome")
    hero.closed = True
    db.session.commit()
    run(app, wf, "upsell")
    assert wf.state == "canceled"
    assert history(wf)[-1] == ("upsell", "canceled", "canceled")


# -- skip_if -----------------------------------------------------------------------------


def test_skip_if_accepts_a_bool_a_method_name_or_a_callable(app: Flask) -> None:
    skipping = Skips.create(hero=member(tag="skip"))
    speedrun(skipping)
    assert skipping.state == "finished"
    assert history(skipping) == [
        ("always", "skipped", "skipped"),
        ("never", "completed", "success"),
        ("by_method", "skipped", "skipped"),
        ("by_callable", "completed", "success"),
    ]
    assert marks(skipping) == ["never", "by_callable"]
    for execution in executions(skipping):
        if execution.state == "skipped":
            assert_never_started(execution, "skipped", "skipped")

    running = Skips.create(hero=member(tag="run"))
    speedrun(running)
    assert marks(running) == ["never", "by_method"]


def test_a_skipped_step_keeps_the_workflow_ready_and_schedules_the_next(app: Flask) -> None:
    wf = Membership.create(hero=member(tag="skip"))
    run(app, wf, "welcome")
    report = run(app, wf, "upsell")
    assert report.status == "settled"
    assert wf.state == "ready"
    assert ("upsell", "skipped", "skipped") in history(wf)
    run(app, wf, "reminder")
    assert wf.state == "finished"
    assert marks(wf) == ["welcome", "reminder"]


# -- exceptions raised by conditions -----------------------------------------------------


def test_an_exception_in_a_condition_goes_through_the_steps_policy(app: Flask) -> None:
    for (kind, action), cls in RAISING.items():
        case = (kind, action)
        wf = cls.create(hero=member(tag=kind))
        report = run(app, wf, "test_step")
        assert isinstance(report.error, ConditionError), case
        (state, outcome), wf_state = CONDITION_CASES[action]
        first = executions(wf)[0]
        assert (first.state, first.outcome) == (state, outcome), case
        assert first.started_at is None, case  # the body never started
        assert f"Exception in {kind}" in first.error_message, case
        assert wf.state == wf_state, case
        assert marks(wf) == [], case
        if action == "reattempt":
            assert first.meta["reattempt_reason"] == "precondition"
            assert history(wf)[1] == ("test_step", "scheduled", None)
        if action == "skip":
            assert history(wf)[1] == ("next_step", "scheduled", None)


def test_class_policies_apply_to_condition_exceptions(app: Flask) -> None:
    wf = BlanketForConditions.create(hero=member(tag="skip_if"))
    run(app, wf, "test_step")
    assert history(wf) == [("test_step", "skipped", "skipped"), ("next_step", "scheduled", None)]
    run(app, wf, "next_step")
    assert wf.state == "finished"
    assert marks(wf) == ["next_step"]
