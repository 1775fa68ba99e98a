"""Reruns, resume-at and the operator audit (SPEC 13), on the three databases.

The workflows run with the real executor, one execution at a time; every body run is
a row in the module's marks table, so "ran exactly once more" is counted in the
database, in the transaction the body committed in.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import TIMEOUT
from helpers import Committed
from helpers import Rows
from helpers import deploy
from helpers import execute
from helpers import mark_model

from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

Mark = mark_model(db, "rerun_marks", key=sa.Column(sa.String(200), nullable=True))
rows = Rows(db, geneva, Mark, ignore_schedule=True)
committed = Committed(geneva, Mark)


def mark(workflow: Any, name: str) -> None:
    rows.mark(workflow, name, key=workflow.idempotency_key)


class Pipeline(geneva.Workflow):  # type: ignore[name-defined,misc]
    """fetch → (parse, thumbs); parse → index; (index, thumbs) → publish."""

    broken: bool = False

    @step
    def fetch(self) -> dict[str, int]:
        mark(self, "fetch")
        return {"pages": 3}

    @step
    def parse(self, fetch: dict[str, int]) -> int:
        mark(self, "parse")
        return fetch["pages"] * 10

    @step(after="fetch")
    def thumbs(self) -> str:
        mark(self, "thumbs")
        return "ok"

    @step(after="parse")
    def index(self, parse: int) -> int:
        mark(self, "index")
        if Pipeline.broken:
            raise RuntimeError("the index is broken")
        return parse + 1

    @step(after=["index", "thumbs"])
    def publish(self, index: int) -> int:
        mark(self, "publish")
        return index


def ran(workflow: Any) -> Counter[str]:
    return Counter(committed.marks(workflow))


def actions(workflow: Any) -> list[dict[str, Any]]:
    a = geneva.tables.actions
    query = sa.select(a).where(a.c.workflow_id == workflow.id).order_by(a.c.id)
    with geneva.engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def superseded(workflow: Any) -> list[tuple[str, str]]:
    e = geneva.tables.executions
    query = (
        sa.select(e.c.step_name, e.c.state)
        .where(e.c.workflow_id == workflow.id, e.c.superseded_at.is_not(None))
        .order_by(e.c.id)
    )
    with geneva.engine().connect() as conn:
        return [(r.step_name, r.state) for r in conn.execute(query)]


@pytest.fixture(autouse=True)
def _healthy() -> Any:
    Pipeline.broken = False
    yield
    Pipeline.broken = False


def finished() -> Any:
    wf = speedrun(Pipeline.create())
    assert committed.state(wf) == "finished"
    return wf


def broken() -> Any:
    """A workflow paused on its failed ``index`` step."""
    Pipeline.broken = True
    wf = Pipeline.create()
    with pytest.raises(RuntimeError, match="the index is broken"):
        speedrun(wf)
    return wf


# -- rerun_from --------------------------------------------------------------------------


def test_a_rerun_of_a_finished_dag_from_a_middle_step_runs_exactly_its_descendants(app):
    wf = finished()
    before = ran(wf)
    rerun = wf.rerun_from("parse", reason="parser fixed", actor="ops@example.com")
    assert rerun == ("parse", "index", "publish")
    assert committed.state(wf) == "ready"
    speedrun(wf)
    assert committed.state(wf) == "finished"
    # Each descendant ran once more; the ancestors and the other branch did not.
    assert ran(wf) - before == Counter({"parse": 1, "index": 1, "publish": 1})
    # The old rows stay, marked as history; the new ones are the current ones.
    assert superseded(wf) == [
        ("parse", "completed"),
        ("index", "completed"),
        ("publish", "completed"),
    ]
    assert wf.output_of("fetch") == {"pages": 3}
    assert wf.output_of("publish") == 31
    # Attempts go on counting over the history of the step.
    assert [e.attempt for e in rows.executions(wf, "parse")] == [1, 2]


def test_a_rerun_keeps_the_idempotency_key_of_the_step(app):
    wf = finished()
    wf.rerun_from("index")
    speedrun(wf)
    m = Mark.__table__
    query = sa.select(m.c.key).where(m.c.workflow_id == wf.id, m.c.name == "index")
    with geneva.engine().connect() as conn:
        keys = list(conn.execute(query).scalars())
    assert len(keys) == 2 and keys[0] == keys[1]


def test_a_rerun_of_a_paused_workflow_from_its_failed_step(app):
    wf = broken()
    assert committed.state(wf) == "paused"
    Pipeline.broken = False
    wf.rerun_from("index", reason="index fixed")
    speedrun(wf)
    assert committed.state(wf) == "finished"
    # The failed run's writes were rolled back with it: one committed run of each.
    assert ran(wf) == Counter(fetch=1, parse=1, thumbs=1, index=1, publish=1)
    assert superseded(wf) == [("index", "failed")]
    assert [e.attempt for e in rows.executions(wf, "index")] == [1, 2]


def test_a_rerun_of_a_canceled_workflow_runs_the_steps_it_never_ran(app):
    wf = Pipeline.create()
    rows.run(app, wf, "fetch")
    wf.cancel(actor="ops", reason="by mistake")
    assert committed.state(wf) == "canceled"
    wf.rerun_from("parse")
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert ran(wf) == Counter(fetch=1, parse=1, thumbs=1, index=1, publish=1)


class Slow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Its first step holds until the test lets it go."""

    started = threading.Event()
    go = threading.Event()

    @step
    def work(self) -> None:
        Slow.started.set()
        Slow.go.wait(TIMEOUT)
        mark(self, "work")

    @step
    def tell(self) -> None:
        mark(self, "tell")


def test_a_rerun_is_refused_while_the_workflow_is_going(app):
    wf = Slow.create()
    with pytest.raises(InvalidStateError, match="pause it first"):
        wf.rerun_from("work")  # ready
    Slow.started.clear()
    Slow.go.clear()
    execution_id = committed.scheduled(wf)["work"]

    def work() -> None:
        with app.app_context():
            execute(geneva, app.extensions["geneva"], execution_id)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        assert Slow.started.wait(TIMEOUT)
        assert committed.state(wf) == "performing"
        with pytest.raises(InvalidStateError, match="pause it first"):
            wf.rerun_from("work")
        wf.pause(actor="ops")
        # Paused, but its step is still running: a rerun of it waits for the step to end.
        with pytest.raises(InvalidStateError, match="'work' is running"):
            wf.rerun_from("work")
        assert "running" in (wf.rerun_plan("work").problem or "")
    finally:
        Slow.go.set()
        worker.join(TIMEOUT)
    assert committed.marks(wf) == ["work"]
    assert [a["action"] for a in actions(wf)] == ["pause"]
    assert wf.rerun_from("work") == ("work", "tell")
    speedrun(wf)
    assert committed.marks(wf) == ["work", "work", "tell"]


def test_a_rerun_is_refused_from_a_step_whose_ancestors_are_not_done(app):
    wf = broken()
    with pytest.raises(InvalidStateError, match="has not run yet"):
        wf.rerun_from("publish")
    with pytest.raises(InvalidStateError, match="no step 'nope'"):
        wf.rerun_from("nope")


def test_the_rerun_plan_changes_nothing(app):
    wf = finished()
    history, state = committed.history(wf), committed.state(wf)
    plan = wf.rerun_plan("thumbs")
    assert plan.allowed and plan.rerun == ("thumbs", "publish")
    assert set(plan.kept) == {"fetch", "parse", "index"}
    assert committed.history(wf) == history and committed.state(wf) == state
    assert actions(wf) == [] and superseded(wf) == []


# -- resume_at ---------------------------------------------------------------------------


class Signup(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def create_account(self) -> None:
        mark(self, "create_account")

    @step
    def send_welcome(self) -> None:
        mark(self, "send_welcome")

    @step
    def done(self) -> None:
        mark(self, "done")


class SignupRenamed(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The next version: ``send_welcome`` became ``welcome_email``, nothing else."""

    @step
    def create_account(self) -> None:
        mark(self, "create_account")

    @step
    def welcome_email(self) -> None:
        mark(self, "welcome_email")

    @step
    def done(self) -> None:
        mark(self, "done")


def test_resume_at_takes_a_stranded_workflow_on_from_the_renamed_step(app):
    wf = Signup.create()
    rows.run(app, wf, "create_account")
    wf = deploy(geneva, wf, SignupRenamed)
    rows.run(app, wf, "send_welcome")  # the old step: no longer defined
    assert committed.state(wf) == "paused"
    skipped = wf.resume_at("welcome_email", actor="ops", reason="renamed in 2.3")
    assert skipped == []
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert committed.marks(wf) == ["create_account", "welcome_email", "done"]
    noted = actions(wf)[-1]
    assert (noted["action"], noted["step_name"], noted["actor"]) == (
        "resume_at",
        "welcome_email",
        "ops",
    )


def test_resume_at_skips_the_steps_before_the_target_that_never_ran(app):
    wf = Signup.create()
    wf.pause()
    skipped = wf.resume_at("done")
    assert skipped == ["create_account", "send_welcome"]
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert committed.marks(wf) == ["done"]
    assert [h for h in committed.history(wf) if h[1] == "skipped"] == [
        ("create_account", "skipped", "skipped"),
        ("send_welcome", "skipped", "skipped"),
    ]


def test_resume_at_needs_a_paused_workflow_and_a_step_it_has(app):
    wf = Signup.create()
    with pytest.raises(InvalidStateError, match="only a paused one"):
        wf.resume_at("done")
    wf.pause()
    with pytest.raises(InvalidStateError, match="no step 'gone'"):
        wf.resume_at("gone")
    assert committed.state(wf) == "paused"


# -- the audit ---------------------------------------------------------------------------


def test_every_operator_call_is_recorded_with_actor_and_reason(app):
    wf = Signup.create()
    wf.pause(actor="ops@example.com", reason="gateway down")
    wf.resume(actor="ops@example.com")
    wf.cancel(reason="duplicate order\nsee ticket 12")
    found = [(a["action"], a["actor"], a["reason"]) for a in actions(wf)]
    assert found == [
        ("pause", "ops@example.com", "gateway down"),
        ("resume", "ops@example.com", None),
        ("cancel", None, "duplicate order\nsee ticket 12"),
    ]
    assert actions(wf)[-1]["detail"] == {"canceled": ["create_account"]}
    assert all(a["created_at"] is not None for a in actions(wf))


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
def test_a_bad_actor_or_reason_is_refused_before_anything_changes(app, kwargs, message):
    wf = Signup.create()
    with pytest.raises(ValueError, match=message):
        wf.pause(**kwargs)
    assert committed.state(wf) == "ready" and actions(wf) == []


def test_a_refused_command_records_nothing(app):
    wf = finished()
    with pytest.raises(InvalidStateError):
        wf.pause(actor="ops")
    assert actions(wf) == []


class Approval(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait_for="approved")
    def record(self) -> None:
        rows.mark(self, "record", key=str(self.received_signal.payload))

    @step
    def notify(self) -> None:
        mark(self, "notify")


def test_a_rerun_step_that_waits_runs_again_with_the_signal_it_consumed(app):
    wf = Approval.create()
    speedrun(wf)
    wf.signal("approved", {"by": "ann"})
    speedrun(wf)
    assert committed.state(wf) == "finished"
    wf.rerun_from("record")
    speedrun(wf)  # no new signal: the approval was given, the processing is what reruns
    assert committed.state(wf) == "finished"
    m = Mark.__table__
    query = sa.select(m.c.key).where(m.c.workflow_id == wf.id, m.c.name == "record")
    with geneva.engine().connect() as conn:
        keys = list(conn.execute(query.order_by(m.c.id)).scalars())
    assert keys == ["{'by': 'ann'}", "{'by': 'ann'}"]
    assert Counter(committed.marks(wf)) == Counter(record=2, notify=2)


def test_housekeeping_deletes_a_workflow_s_actions_with_it(app):
    wf = Signup.create()
    wf.cancel(actor="ops", reason="test order")
    assert len(actions(wf)) == 1
    with travel(timedelta(days=400)):
        assert housekeeping.run(geneva).workflows_deleted == 1
    assert actions(wf) == []


class Squares(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def numbers(self) -> list[int]:
        mark(self, "numbers")
        return [1, 2, 3]

    @step(for_each="numbers", max_parallel=2)
    def square(self) -> int:
        mark(self, "square")
        return int(self.item) ** 2

    @step
    def total(self, square: list[int]) -> int:
        mark(self, "total")
        return sum(square)


@pytest.mark.parametrize("start", ["numbers", "square"])
def test_a_rerun_through_a_map_step_runs_every_item_again_in_a_new_round(app, start):
    wf = speedrun(Squares.create())
    assert wf.output_of("total") == 14
    wf.rerun_from(start)
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert wf.output_of("total") == 14 and wf.output_of("square") == [1, 4, 9]
    counts = ran(wf)
    assert counts["square"] == 6 and counts["total"] == 2
    assert counts["numbers"] == (2 if start == "numbers" else 1)
    e = geneva.tables.executions
    query = sa.select(sa.func.count()).where(
        e.c.workflow_id == wf.id, e.c.step_name == "square", e.c.superseded_at.is_not(None)
    )
    with geneva.engine().connect() as conn:
        assert conn.execute(query).scalar_one() == 3
