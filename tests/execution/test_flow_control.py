"""Flow control inside a step and outside it (Geneva Drive FC-01..25, generalised to DAGs).

Inside a step, ``cancel/pause/skip/reattempt/finish`` interrupt the body at once and
cannot be swallowed by ``except Exception:``. Outside, the same names are operator
commands, refused with an :class:`InvalidStateError` naming the operation and state.
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

from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import clock
from flask_geneva import operations
from flask_geneva import step
from flask_geneva.executor import execute
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class Box(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fc_boxes"
    id = sa.Column(sa.Integer, primary_key=True)
    #: The flow-control call the first step makes once (then it is cleared).
    action = sa.Column(sa.String(20), nullable=True)
    #: Wrap the call in ``try: ... except Exception:``.
    swallow = sa.Column(sa.Boolean, nullable=False, default=False)


Mark = mark_model(db, "fc_marks")
rows = Rows(db, geneva, Mark)
fresh = rows.fresh
executions = rows.executions
history = rows.history
scheduled = rows.scheduled
marks = rows.marks
run = rows.run
mark = rows.mark


def act_once(workflow: Any) -> None:
    box = workflow.hero
    action, box.action = box.action, None
    if action is None:
        return
    if box.swallow:
        try:
            getattr(workflow, action)()
        except Exception:
            mark(workflow, "swallowed")
    else:
        getattr(workflow, action)()


class Controlled(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        mark(self, "first:before")
        act_once(self)
        mark(self, "first:after")

    @step
    def second(self) -> None:
        mark(self, "second")

    @step
    def third(self) -> None:
        act_once(self)
        mark(self, "third")


class Branches(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Two roots; ``left`` obeys the box, ``right`` waits an hour; ``join`` needs both."""

    @step
    def left(self) -> None:
        mark(self, "left:before")
        act_once(self)
        mark(self, "left:after")

    @step(after=[], wait=timedelta(hours=1))
    def right(self) -> None:
        mark(self, "right")

    @step(after=["left", "right"])
    def join(self) -> None:
        mark(self, "join")


class Poller(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception="reattempt", max_reattempts=2)
    def poll(self) -> None:
        mark(self, "poll")
        polls = rows.count_marks(self, "poll")
        if polls <= 5:
            self.reattempt()

    @step
    def done(self) -> None:
        mark(self, "done")


class Later(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def check(self) -> None:
        mark(self, "check")
        polls = rows.count_marks(self, "check")
        if polls == 1:
            self.reattempt(wait=timedelta(hours=1))


class Fails(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        mark(self, "first")

    @step
    def flaky(self) -> None:
        mark(self, "flaky")
        if db.session.get(Box, int(self.hero_id)).action == "fail":
            raise RuntimeError("flaky failed")

    @step
    def last(self) -> None:
        mark(self, "last")


class PausedWhileRunning(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The first step is paused (or canceled) by an operator while its body runs."""

    @step
    def work(self) -> None:
        operations.perform(geneva, db.session.get(Box, int(self.hero_id)).action, [self.id])
        mark(self, "work")

    @step
    def after_work(self) -> None:
        mark(self, "after_work")


class LastPausedWhileRunning(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        operations.perform(geneva, "pause", [self.id])
        mark(self, "only")


# -- helpers ---------------------------------------------------------------------------


def box(action: str | None = None, *, swallow: bool = False) -> Any:
    b = Box(action=action, swallow=swallow)
    db.session.add(b)
    db.session.commit()
    return b


def assert_ended(execution: Any, state: str, outcome: str) -> None:
    assert (execution.state, execution.outcome) == (state, outcome)
    assert execution.finished_at is not None
    assert getattr(execution, f"{state}_at") == execution.finished_at


# -- inside a step ---------------------------------------------------------------------

IN_STEP = {
    # action: (execution state, outcome, workflow state, rows after)
    "pause": ("canceled", "canceled", "paused", [("first", "canceled", "canceled")]),
    "cancel": ("canceled", "canceled", "canceled", [("first", "canceled", "canceled")]),
    "skip": (
        "skipped",
        "skipped",
        "ready",
        [("first", "skipped", "skipped"), ("second", "scheduled", None)],
    ),
    "reattempt": (
        "completed",
        "reattempted",
        "ready",
        [("first", "completed", "reattempted"), ("first", "scheduled", None)],
    ),
    "finish": ("completed", "success", "finished", [("first", "completed", "success")]),
}


@pytest.mark.parametrize("swallow", [False, True], ids=["plain", "inside-except-Exception"])
def test_flow_control_in_a_step_interrupts_the_body_and_is_not_swallowed(
    app: Flask, swallow: bool
) -> None:
    for action, (state, outcome, wf_state, after) in IN_STEP.items():
        wf = Controlled.create(hero=box(action, swallow=swallow))
        report = run(app, wf, "first")
        assert report.status == "ran" and report.error is None, action
        # Work before the call is kept; code after it never ran; no except block saw it.
        assert marks(wf) == ["first:before"], action
        assert wf.state == wf_state, action
        assert close(wf.transitioned_at, clock.now())
        assert history(wf) == after, action
        first = executions(wf)[0]
        assert_ended(first, state, outcome)
        assert first.started_at is not None and first.error_class is None
        if action == "reattempt":
            again = executions(wf)[1]
            assert first.meta == {"reattempt_reason": "flow_control"}
            assert close(again.scheduled_for, clock.now())  # the step's wait is not applied
            assert again.attempt == 2


def test_skip_in_the_last_step_finishes_the_workflow(app: Flask) -> None:
    wf = Controlled.create(hero=box())
    run(app, wf, "first")
    run(app, wf, "second")
    db.session.get(Box, int(wf.hero_id)).action = "skip"
    db.session.commit()
    run(app, wf, "third")
    assert wf.state == "finished"
    assert history(wf)[-1] == ("third", "skipped", "skipped")
    assert "third" not in marks(wf)


def test_a_skipped_step_counts_as_done_for_a_join(app: Flask) -> None:
    wf = Branches.create(hero=box("skip"))
    run(app, wf, "left")
    assert "join" not in [name for name, _, _ in history(wf)]
    run(app, wf, "right", ignore_schedule=True)
    run(app, wf, "join")
    assert wf.state == "finished"
    assert marks(wf) == ["left:before", "right", "join"]


@pytest.mark.parametrize("action", ["cancel", "finish"])
def test_cancel_or_finish_in_one_branch_cancels_the_scheduled_siblings(
    app: Flask, huey: Any, action: str
) -> None:
    wf = Branches.create(hero=box(action))
    right = scheduled(wf, "right")
    run(app, wf, "left")
    assert wf.state == ("canceled" if action == "cancel" else "finished")
    assert_ended(fresh(right), "canceled", "canceled")
    assert not [e for e in executions(wf) if e.state == "scheduled"]
    # The sibling's trigger, still queued, is now a no-op.
    assert (
        execute(geneva, app.extensions["geneva"], right.id, ignore_schedule=True).status == "noop"
    )
    assert marks(wf) == ["left:before"]


def test_reattempt_in_a_step_is_not_limited_by_max_reattempts(app: Flask) -> None:
    wf = Poller.create()
    for _ in range(5):
        run(app, wf, "poll")
        assert wf.state == "ready"
    assert [o for _, _, o in history(wf)] == ["reattempted"] * 5 + [None]
    run(app, wf, "poll")
    run(app, wf, "done")
    assert wf.state == "finished"
    assert marks(wf) == ["poll"] * 6 + ["done"]
    assert all(e.meta == {"reattempt_reason": "flow_control"} for e in executions(wf)[:5])


def test_reattempt_with_wait_schedules_the_step_again_after_the_wait(app: Flask, huey: Any) -> None:
    wf = Later.create()
    huey.flush()
    run(app, wf, "check")
    again = scheduled(wf, "check")
    assert close(again.scheduled_for, clock.now() + timedelta(hours=1))
    (message,) = huey.pending()
    assert message.args == (again.id,) and message.eta is not None
    assert run(app, wf, "check").status == "deferred"
    assert run(app, wf, "check", ignore_schedule=True).status == "ran"
    assert wf.state == "finished"
    assert marks(wf) == ["check", "check"]


# -- outside a step: refused operations --------------------------------------------------

REFUSED = [
    ("pause", "paused", "Cannot pause a paused workflow"),
    ("pause", "finished", "Cannot pause a finished workflow"),
    ("pause", "canceled", "Cannot pause a canceled workflow"),
    ("resume", "ready", "Cannot resume a ready workflow"),
    ("resume", "finished", "Cannot resume a finished workflow"),
    ("resume", "canceled", "Cannot resume a canceled workflow"),
    ("cancel", "finished", "Cannot cancel a finished workflow"),
    ("cancel", "canceled", "Cannot cancel a canceled workflow"),
    ("skip", "finished", "Cannot skip on a finished workflow"),
    ("skip", "canceled", "Cannot skip on a canceled workflow"),
    ("reattempt", "finished", "Cannot reattempt on a finished workflow"),
    ("reattempt", "canceled", "Cannot reattempt on a canceled workflow"),
]


def _in_state(state: str) -> Any:
    wf = Controlled.create(hero=box())
    if state == "finished":
        speedrun(wf)
    elif state == "paused":
        wf.pause()
    elif state == "canceled":
        wf.cancel()
    assert wf.state == state
    return wf


def test_an_operation_refused_in_a_state_says_which_and_changes_nothing(app: Flask) -> None:
    # One database for the whole table: each case gets its own workflow.
    for operation, state, message in REFUSED:
        wf = _in_state(state)
        before = history(wf)
        with pytest.raises(InvalidStateError) as caught:
            getattr(wf, operation)()
        assert str(caught.value) == message
        assert fresh(wf).state == state, (operation, state)
        assert history(wf) == before, (operation, state)


def test_finish_outside_a_step_is_refused(app: Flask) -> None:
    wf = Controlled.create(hero=box())
    with pytest.raises(InvalidStateError, match=r"finish\(\) can only be called inside a step"):
        wf.finish()
    assert fresh(wf).state == "ready"


def test_reattempt_outside_a_step_takes_no_wait(app: Flask) -> None:
    wf = Controlled.create(hero=box())
    with pytest.raises(TypeError, match="inside a step"):
        wf.reattempt(wait=10)


def test_an_operation_on_a_stale_copy_is_checked_against_the_current_state(app: Flask) -> None:
    stale = Controlled.create(hero=box())
    operations.perform(geneva, "cancel", [stale.id])  # another process cancels it
    assert stale.state == "ready"  # this copy has not seen it
    with pytest.raises(InvalidStateError, match="Cannot pause a canceled workflow"):
        stale.pause()
    wf = stale
    assert fresh(wf).state == "canceled"


# -- outside a step: skip, reattempt, cancel, pause --------------------------------------


def test_external_skips_walk_a_workflow_to_its_end_without_running_bodies(app: Flask) -> None:
    wf = Controlled.create(hero=box())
    wf.skip()
    assert wf.state == "ready"
    assert history(wf) == [("first", "skipped", "skipped"), ("second", "scheduled", None)]
    assert_ended(executions(wf)[0], "skipped", "skipped")
    wf.skip()
    wf.skip()
    assert wf.state == "finished"
    assert [s for _, s, _ in history(wf)] == ["skipped"] * 3
    assert marks(wf) == []


def test_skip_and_reattempt_ask_for_the_step_when_several_are_due(app: Flask) -> None:
    wf = Branches.create(hero=box())
    for operation in ("skip", "reattempt"):
        with pytest.raises(InvalidStateError) as caught:
            getattr(wf, operation)()
        assert str(caught.value) == (
            f"Cannot {operation}: several steps are due or failed (left, right); name the step"
        )
    with pytest.raises(InvalidStateError, match="the workflow has no step 'nope'"):
        wf.skip(step="nope")
    with pytest.raises(InvalidStateError, match="step 'join': it is not due or failed"):
        wf.skip(step="join")
    wf.skip(step="right")
    assert ("right", "skipped", "skipped") in history(wf)
    wf.skip()  # only left is due now
    assert ("join", "scheduled", None) in history(wf)


def test_external_reattempt_runs_a_waiting_step_now(app: Flask, huey: Any) -> None:
    wf = Branches.create(hero=box())
    right = scheduled(wf, "right")
    huey.flush()
    wf.reattempt(step="right")
    moved = fresh(right)
    assert moved.state == "scheduled" and close(moved.scheduled_for, clock.now())
    (message,) = huey.pending()
    assert message.args == (right.id,)
    assert run(app, wf, "right").status == "ran"
    assert "right" in marks(wf)


def test_external_reattempt_of_a_failed_step_resumes_with_a_new_execution(app: Flask) -> None:
    b = box("fail")
    wf = Fails.create(hero=b)
    run(app, wf, "first")
    run(app, wf, "flaky")
    assert wf.state == "paused"
    b.action = None
    db.session.commit()
    wf.reattempt()
    assert wf.state == "ready"
    assert history(wf)[-2:] == [("flaky", "failed", "failed"), ("flaky", "scheduled", None)]
    run(app, wf, "flaky")
    run(app, wf, "last")
    assert wf.state == "finished"
    # The failed run's session work was rolled back with its exception.
    assert marks(wf) == ["first", "flaky", "last"]


def test_external_cancel_cancels_every_scheduled_execution(app: Flask) -> None:
    wf = Branches.create(hero=box())
    wf.cancel()
    assert wf.state == "canceled"
    assert close(wf.transitioned_at, clock.now())
    for execution in executions(wf):
        assert_ended(execution, "canceled", "canceled")
    assert history(wf) == [("left", "canceled", "canceled"), ("right", "canceled", "canceled")]


def test_external_pause_while_a_step_runs_records_it_and_schedules_its_successor_on_resume(
    app: Flask, huey: Any
) -> None:
    wf = PausedWhileRunning.create(hero=box("pause"))
    huey.flush()
    report = run(app, wf, "work")
    assert report.status == "ran"
    assert wf.state == "paused"
    assert marks(wf) == ["work"]  # the body was not interrupted
    assert history(wf)[0] == ("work", "completed", "success")
    assert huey.pending_count() == 0  # nothing new is triggered while paused
    wf.resume()
    after = scheduled(wf, "after_work")
    assert [m.args for m in huey.pending()] == [(after.id,)]
    run(app, wf, "after_work")
    assert wf.state == "finished"


def test_external_cancel_while_a_step_runs_records_it_and_schedules_nothing(
    app: Flask, huey: Any
) -> None:
    wf = PausedWhileRunning.create(hero=box("cancel"))
    huey.flush()
    run(app, wf, "work")
    assert wf.state == "canceled"
    assert history(wf) == [("work", "completed", "success")]
    assert huey.pending_count() == 0


def test_a_workflow_paused_during_its_last_step_finishes_when_that_step_completes(
    app: Flask,
) -> None:
    wf = LastPausedWhileRunning.create()
    run(app, wf, "only")
    # Nothing is left to hold back, so the pause has nothing to keep: it finishes.
    assert wf.state == "finished"
    assert history(wf) == [("only", "completed", "success")]


def test_external_skip_on_a_paused_workflow_skips_the_due_step_and_resumes(
    app: Flask, huey: Any
) -> None:
    wf = Controlled.create(hero=box())
    run(app, wf, "first")
    wf.pause()
    huey.flush()
    wf.skip()
    assert wf.state == "ready"
    assert history(wf)[1:] == [("second", "skipped", "skipped"), ("third", "scheduled", None)]
    assert [m.args for m in huey.pending()] == [(scheduled(wf, "third").id,)]


def test_external_cancel_of_a_workflow_paused_by_a_failure_keeps_the_failure(app: Flask) -> None:
    wf = Fails.create(hero=box("fail"))
    run(app, wf, "first")
    run(app, wf, "flaky")
    wf.cancel()
    assert wf.state == "canceled"
    assert history(wf) == [("first", "completed", "success"), ("flaky", "failed", "failed")]
    assert executions(wf)[1].error_message == "flaky failed"
