"""Exception policies at run time (Geneva Drive EXC-12..25, MR-01..08, MR-10).

Resolution: the step's policy, then class-level specific policies (a subclass's before
its parent's, each class's in listed order), then the class-level blanket policy, then
pause. Reattempt limits count consecutive automatic reattempts of one step.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import close
from helpers import mark_model

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)


Mark = mark_model(db, "ep_marks")
rows = Rows(db, geneva, Mark, ignore_schedule=True)
fresh = rows.fresh
executions = rows.executions
marks = rows.marks
scheduled = rows.scheduled
run = rows.run
mark = rows.mark
runs_of = rows.count_marks


class Switch(db.Model):  # type: ignore[name-defined,misc]
    """What the next run of a step raises: nothing, or an exception class name."""

    __tablename__ = "ep_switches"
    id = sa.Column(sa.Integer, primary_key=True)
    raises = sa.Column(sa.String(50), nullable=True)
    #: Raise only on the first N runs (None: every run).
    times = sa.Column(sa.Integer, nullable=True)


class TransientError(Exception):
    pass


class FatalError(Exception):
    pass


class SubTransientError(TransientError):
    pass


ERRORS = {cls.__name__: cls for cls in (TransientError, FatalError, SubTransientError, KeyError)}


def mark_outside(workflow: Any, name: str) -> None:
    """Write a mark on its own connection (from a handler, after the body's rollback)."""
    with geneva.engine().begin() as conn:
        conn.execute(sa.insert(Mark).values(workflow_id=workflow.id, name=name))


def body(workflow: Any, name: str) -> None:
    """Count the run on its own connection (kept even if the body raises), then obey."""
    mark_outside(workflow, name)
    switch = db.session.get(Switch, int(workflow.hero_id))
    if switch.raises and (switch.times is None or runs_of(workflow, name) <= switch.times):
        raise ERRORS[switch.raises](f"{name} raised {switch.raises}")


class Plain(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def work(self) -> None:
        body(self, "work")

    @step
    def after(self) -> None:
        body(self, "after")


class ByAction(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception="pause")
    def pauses(self) -> None:
        body(self, "pauses")

    @step(on_exception="cancel", after=[])
    def cancels(self) -> None:
        body(self, "cancels")

    @step(on_exception="skip", after=[])
    def skips(self) -> None:
        body(self, "skips")

    @step(on_exception=ExceptionPolicy("reattempt", wait=30), after=[])
    def reattempts(self) -> None:
        body(self, "reattempts")

    @step(after=["pauses", "cancels", "skips", "reattempts"])
    def join(self) -> None:
        body(self, "join")


class Layered(geneva.Workflow):  # type: ignore[name-defined,misc]
    on_exception = [
        ExceptionPolicy("skip"),  # blanket, listed first: specific ones still win
        ExceptionPolicy("reattempt", exceptions=TransientError, max_reattempts=5),
        ExceptionPolicy("cancel", exceptions="FatalError"),  # by name
    ]

    @step
    def uses_class_policies(self) -> None:
        body(self, "uses_class_policies")

    @step(on_exception="pause")
    def own_policy(self) -> None:
        body(self, "own_policy")

    @step(on_exception=ExceptionPolicy("cancel", exceptions=KeyError))
    def own_narrow_policy(self) -> None:
        body(self, "own_narrow_policy")


class LayeredChild(Layered):
    on_exception = [ExceptionPolicy("pause", exceptions=SubTransientError)]


def _handler_reattempts(workflow: Any, error: BaseException) -> None:
    mark_outside(workflow, f"handled {type(error).__name__}: {error}")
    workflow.reattempt(wait=timedelta(seconds=30))


def _handler_cancels(workflow: Any, error: BaseException) -> None:
    workflow.cancel()


def _handler_skips(workflow: Any, error: BaseException) -> None:
    workflow.skip()


def _handler_does_nothing(workflow: Any, error: BaseException) -> None:
    mark_outside(workflow, "looked")


def _handler_breaks(workflow: Any, error: BaseException) -> None:
    raise ValueError("handler bug")


HANDLERS = {
    "reattempts": _handler_reattempts,
    "cancels": _handler_cancels,
    "skips": _handler_skips,
    "does_nothing": _handler_does_nothing,
    "breaks": _handler_breaks,
}


def _make_handled(kind: str) -> type:
    def work(self: Any) -> None:
        body(self, "work")

    def after(self: Any) -> None:
        body(self, "after")

    namespace = {
        "on_exception": ExceptionPolicy("cancel"),  # the step's handler overrides it
        "work": step(on_exception=HANDLERS[kind])(work),
        "after": step(after),
    }
    return type(f"Handled_{kind}", (geneva.Workflow,), namespace)


HANDLED = {kind: _make_handled(kind) for kind in HANDLERS}


class Limited(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception="reattempt", max_reattempts=3)
    def three(self) -> None:
        body(self, "three")


class Unlimited(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception="reattempt", max_reattempts=None)
    def forever(self) -> None:
        body(self, "forever")


class PerStep(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception="reattempt", max_reattempts=2)
    def first(self) -> None:
        body(self, "first")

    @step(on_exception="reattempt", max_reattempts=2)
    def second(self) -> None:
        body(self, "second")


def _skip_if_raises(workflow: Any) -> bool:
    raise TransientError("Precondition failure")


class PreconditionLimited(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception="reattempt", max_reattempts=2, skip_if=_skip_if_raises)
    def guarded(self) -> None:
        body(self, "guarded")


class ClassLimit(geneva.Workflow):  # type: ignore[name-defined,misc]
    on_exception = ExceptionPolicy("reattempt", max_reattempts=2)

    @step
    def work(self) -> None:
        body(self, "work")


class ClassLimitCancel(geneva.Workflow):  # type: ignore[name-defined,misc]
    on_exception = ExceptionPolicy("reattempt", max_reattempts=2, terminal_action="cancel")

    @step
    def work(self) -> None:
        body(self, "work")

    @step(after=[], wait=timedelta(hours=1))
    def sibling(self) -> None:
        body(self, "sibling")


class PollThenFail(geneva.Workflow):  # type: ignore[name-defined,misc]
    on_exception = ExceptionPolicy("reattempt", max_reattempts=1)

    @step
    def poll(self) -> None:
        body(self, "poll")  # raises only when the switch says so
        self.reattempt(wait=0)


# -- helpers ---------------------------------------------------------------------------


def switch(raises: str | None = "TransientError", times: int | None = None) -> Any:
    s = Switch(raises=raises, times=times)
    db.session.add(s)
    db.session.commit()
    return s


def set_switch(workflow: Any, raises: str | None) -> None:
    db.session.get(Switch, int(workflow.hero_id)).raises = raises
    db.session.commit()


def latest(workflow: Any, step_name: str) -> Any:
    return executions(workflow, step_name)[-1]


def outcome(workflow: Any, step_name: str, index: int = -1) -> tuple[str, str | None]:
    e = executions(workflow, step_name)[index]
    return e.state, e.outcome


QUALIFIED = f"{__name__}.TransientError"


# -- the default and each action ----------------------------------------------------------


def test_without_a_policy_an_exception_fails_the_step_and_pauses_the_workflow(
    app: Flask,
) -> None:
    wf = Plain.create(hero=switch())
    report = run(app, wf, "work")
    assert isinstance(report.error, TransientError)  # reported, not raised
    assert wf.state == "paused"
    (failed,) = executions(wf)
    assert (failed.state, failed.outcome) == ("failed", "failed")
    assert failed.error_class == QUALIFIED
    assert failed.error_message == "work raised TransientError"
    assert 'raise ERRORS[switch.raises](f"{name} raised {switch.raises}")' in failed.error_traceback
    assert failed.failed_at == failed.finished_at is not None
    assert failed.started_at is not None


def test_the_original_exception_is_raised_only_after_its_outcome_is_committed(
    app: Flask,
) -> None:
    wf = Limited.create(hero=switch(times=1))
    with pytest.raises(TransientError, match="^three raised TransientError$"):
        run(app, wf, "three", raise_errors=True)
    assert [(e.state, e.outcome) for e in executions(wf)] == [
        ("completed", "reattempted"),
        ("scheduled", None),
    ]


@pytest.mark.parametrize(
    ("step_name", "expected", "wf_state"),
    [
        ("pauses", ("failed", "failed"), "paused"),
        ("cancels", ("failed", "canceled"), "canceled"),
        ("skips", ("skipped", "skipped"), "ready"),
        ("reattempts", ("completed", "reattempted"), "ready"),
    ],
)
def test_each_exception_action_ends_the_step_as_documented(
    app: Flask, step_name: str, expected: tuple[str, str], wf_state: str
) -> None:
    wf = ByAction.create(hero=switch())
    run(app, wf, step_name)
    assert wf.state == wf_state
    ended = executions(wf, step_name)[0]
    assert (ended.state, ended.outcome) == expected
    assert getattr(ended, f"{ended.state}_at") == ended.finished_at is not None
    # Every outcome caused by an exception keeps it for the operator.
    assert ended.error_class == QUALIFIED
    assert ended.error_message == f"{step_name} raised TransientError"
    assert ended.error_traceback
    if step_name == "cancels":
        # Canceling the workflow cancels the other roots still scheduled.
        others = [e for e in executions(wf) if e.step_name != "cancels"]
        assert {(e.state, e.outcome) for e in others} == {("canceled", "canceled")}
    if step_name == "reattempts":
        assert ended.meta == {
            "reattempt_reason": "exception_policy",
            "exception": {"class": QUALIFIED, "message": "reattempts raised TransientError"},
        }
        again = scheduled(wf, "reattempts")
        assert close(again.scheduled_for, clock.now() + timedelta(seconds=30))
        assert run(app, wf, "reattempts", ignore_schedule=False).status == "deferred"


def test_a_skipped_step_counts_as_done_for_the_join(app: Flask) -> None:
    wf = ByAction.create(hero=switch())
    run(app, wf, "skips")
    set_switch(wf, None)
    for name in ("pauses", "cancels", "reattempts", "join"):
        run(app, wf, name)
    assert wf.state == "finished"
    assert outcome(wf, "skips") == ("skipped", "skipped")


# -- precedence -------------------------------------------------------------------------


PRECEDENCE = [
    # class specific beats the class blanket, even when the blanket is listed first
    (Layered, "uses_class_policies", "TransientError", ("completed", "reattempted"), "ready"),
    (Layered, "uses_class_policies", "FatalError", ("failed", "canceled"), "canceled"),
    # subclasses of a listed exception match
    (
        Layered,
        "uses_class_policies",
        "SubTransientError",
        ("completed", "reattempted"),
        "ready",
    ),
    # nothing specific matches: the blanket
    (Layered, "uses_class_policies", "KeyError", ("skipped", "skipped"), "ready"),
    # the step's own policy beats every class policy
    (Layered, "own_policy", "FatalError", ("failed", "failed"), "paused"),
    # a step policy limited to other exceptions falls through to the class policies
    (Layered, "own_narrow_policy", "KeyError", ("failed", "canceled"), "canceled"),
    (Layered, "own_narrow_policy", "TransientError", ("completed", "reattempted"), "ready"),
    # a subclass's specific policy comes before its parent's
    (LayeredChild, "uses_class_policies", "SubTransientError", ("failed", "failed"), "paused"),
    (
        LayeredChild,
        "uses_class_policies",
        "TransientError",
        ("completed", "reattempted"),
        "ready",
    ),
]


def test_policies_resolve_from_step_to_class_specific_to_class_blanket(app: Flask) -> None:
    # One database for the whole table: each case gets its own workflow.
    for workflow_class, step_name, raises, expected, wf_state in PRECEDENCE:
        case = (workflow_class.__name__, step_name, raises)
        wf = workflow_class.create(hero=switch(raises))
        if step_name != "uses_class_policies":
            set_switch(wf, None)
            run(app, wf, "uses_class_policies")
            if step_name == "own_narrow_policy":
                run(app, wf, "own_policy")
            set_switch(wf, raises)
        run(app, wf, step_name)
        assert outcome(wf, step_name, 0) == expected, case
        assert wf.state == wf_state, case


# -- handlers ---------------------------------------------------------------------------


HANDLER_CASES = [
    ("reattempts", ("completed", "reattempted"), "ready"),
    ("cancels", ("failed", "canceled"), "canceled"),
    ("skips", ("skipped", "skipped"), "ready"),
    ("does_nothing", ("failed", "failed"), "paused"),
    ("breaks", ("failed", "failed"), "paused"),
]


def test_a_handler_decides_with_flow_control_and_pauses_when_it_does_not(app: Flask) -> None:
    for kind, expected, wf_state in HANDLER_CASES:
        wf = HANDLED[kind].create(hero=switch())
        report = run(app, wf, "work")
        assert isinstance(report.error, TransientError), kind
        assert outcome(wf, "work", 0) == expected, kind
        assert wf.state == wf_state, kind
        first = executions(wf, "work")[0]
        assert first.error_message == "work raised TransientError", kind
        if kind == "reattempts":
            assert "handled TransientError: work raised TransientError" in marks(wf)
            assert first.meta["reattempt_reason"] == "exception_policy"
            again = scheduled(wf, "work")
            assert close(again.scheduled_for, clock.now() + timedelta(seconds=30))
        if kind == "skips":
            assert scheduled(wf, "after") is not None
        if kind == "does_nothing":
            assert "looked" in marks(wf)


# -- reattempt limits -------------------------------------------------------------------


def test_a_step_limit_allows_n_automatic_reattempts_then_applies_the_terminal_action(
    app: Flask,
) -> None:
    wf = Limited.create(hero=switch())
    for _ in range(3):
        run(app, wf, "three")
        assert wf.state == "ready"
    assert len(executions(wf)) == 4
    assert [e.consecutive_reattempts for e in executions(wf)] == [0, 1, 2, 3]
    run(app, wf, "three")
    assert wf.state == "paused"
    assert outcome(wf, "three") == ("failed", "failed")
    assert latest(wf, "three").error_message == "three raised TransientError"
    assert len(executions(wf)) == 4


def test_max_reattempts_none_means_unlimited(app: Flask) -> None:
    wf = Unlimited.create(hero=switch())
    for _ in range(10):
        run(app, wf, "forever")
    assert wf.state == "ready"
    assert [e.outcome for e in executions(wf)] == ["reattempted"] * 10 + [None]


def test_success_ends_a_series_of_reattempts(app: Flask) -> None:
    wf = PerStep.create(hero=switch(times=2))
    for _ in range(3):
        run(app, wf, "first")
    assert outcome(wf, "first") == ("completed", "success")
    # The second step has its own count: two more failures are still allowed.
    for _ in range(3):
        run(app, wf, "second")
    assert wf.state == "finished"
    assert [e.outcome for e in executions(wf, "second")] == ["reattempted"] * 2 + ["success"]


def test_exceptions_in_preconditions_count_toward_the_limit(app: Flask) -> None:
    wf = PreconditionLimited.create(hero=switch(None))
    run(app, wf, "guarded")
    run(app, wf, "guarded")
    assert wf.state == "ready" and len(executions(wf)) == 3
    assert {e.meta["reattempt_reason"] for e in executions(wf)[:2]} == {"precondition"}
    run(app, wf, "guarded")
    assert wf.state == "paused"
    failed = latest(wf, "guarded")
    assert (failed.state, failed.outcome) == ("failed", "failed")
    assert "Precondition failure" in failed.error_message
    assert all(e.started_at is None for e in executions(wf))  # never ran
    assert runs_of(wf, "guarded") == 0


@pytest.mark.parametrize(
    ("workflow_class", "wf_state", "expected"),
    [
        (ClassLimit, "paused", ("failed", "failed")),
        (ClassLimitCancel, "canceled", ("failed", "canceled")),
    ],
)
def test_a_class_limit_applies_its_terminal_action(
    app: Flask, workflow_class: Any, wf_state: str, expected: tuple[str, str]
) -> None:
    wf = workflow_class.create(hero=switch())
    run(app, wf, "work")
    run(app, wf, "work")
    assert wf.state == "ready" and len(executions(wf, "work")) == 3
    report = run(app, wf, "work")
    assert isinstance(report.error, TransientError)
    assert wf.state == wf_state
    assert outcome(wf, "work") == expected
    assert latest(wf, "work").error_class == QUALIFIED
    if workflow_class is ClassLimitCancel:
        assert outcome(wf, "sibling") == ("canceled", "canceled")


def test_flow_control_reattempts_do_not_count_toward_the_limit(app: Flask) -> None:
    wf = PollThenFail.create(hero=switch(None))
    for _ in range(3):
        run(app, wf, "poll")
    assert wf.state == "ready"
    assert runs_of(wf, "poll") == 3
    assert {e.meta["reattempt_reason"] for e in executions(wf)[:3]} == {"flow_control"}
    set_switch(wf, "TransientError")
    run(app, wf, "poll")
    assert wf.state == "ready"  # one automatic reattempt is allowed
    run(app, wf, "poll")
    assert wf.state == "paused"
    assert [e.consecutive_reattempts for e in executions(wf)] == [0, 0, 0, 0, 1]


def test_resume_after_the_terminal_pause_grants_a_fresh_allowance(app: Flask) -> None:
    wf = ClassLimit.create(hero=switch())
    for _ in range(3):
        run(app, wf, "work")
    assert wf.state == "paused"
    wf.resume()
    assert scheduled(wf, "work").consecutive_reattempts == 0
    run(app, wf, "work")
    # A deliberate choice: an operator's resume starts a new series (Geneva Drive would
    # pause again at once).
    assert wf.state == "ready"
    assert outcome(wf, "work", -2) == ("completed", "reattempted")
