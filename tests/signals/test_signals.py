"""Signals (SPEC 10): delivery, deduplication, transactions, waiting, waking, timeouts.

Every test runs on SQLite, PostgreSQL and MariaDB with the real executor; the queue is
a real SqliteHuey, inspected as Huey stores it (no consumer runs here, so every message
sent is still in it).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import Rows
from helpers import mark_model
from helpers import queue_url

from flask_geneva import Geneva
from flask_geneva import InvalidStateError
from flask_geneva import SignalError
from flask_geneva import housekeeping
from flask_geneva import signals
from flask_geneva import step
from flask_geneva.testing import assert_waiting_for
from flask_geneva.testing import deliver_signal
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)
APP_CONFIG = {"GENEVA_MAX_SIGNAL_PAYLOAD": 1000}

Mark = mark_model(db, "sig_marks", note=sa.Column(sa.String(200), nullable=True))
rows = Rows(db, geneva, Mark, ignore_schedule=True)
committed = Committed(geneva, Mark)


class Transfer(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "sig_transfers"
    id = sa.Column(sa.Integer, primary_key=True)
    bank_ref = sa.Column(sa.String(50), nullable=True)


def note(workflow: Any, name: str) -> None:
    received = workflow.received_signal
    text = None if received is None else f"{received.name}:{received.payload}"
    rows.mark(workflow, name, note=text)


class TransferWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def submit(self) -> None:
        note(self, "submit")

    @step(wait_for="settled")
    def record_settlement(self) -> None:
        note(self, "record_settlement")


class Fussy(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Fails once after its signal, to show a reattempt reuses it."""

    runs: list[Any] = []

    @step(wait_for="go", on_exception="reattempt", max_reattempts=3)
    def act(self) -> None:
        Fussy.runs.append(self.received_signal)
        note(self, "act")
        if len(Fussy.runs) == 1:
            raise RuntimeError("first run fails")


def _timeout_class(action: str) -> type[Any]:
    def ask(self: Any) -> None:
        note(self, "ask")

    def after(self: Any) -> None:
        note(self, "after")

    body = {
        "__module__": __name__,
        "ask": step(wait_for="answer", timeout=timedelta(hours=1), on_timeout=action)(ask),
        "after": step(after),
    }
    return type(f"Timeout_{action}", (geneva.Workflow,), body)


TIMEOUT_CLASSES = {action: _timeout_class(action) for action in ("pause", "cancel", "skip", "run")}


class Hesitant(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Pauses itself after taking its signal, the first time."""

    runs: list[Any] = []

    @step(wait_for="go")
    def act(self) -> None:
        Hesitant.runs.append(self.received_signal)
        if len(Hesitant.runs) == 1:
            self.pause()
        note(self, "act")


class Interrupted(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Its first run is cut by the worker shutting down, after the signal was taken."""

    runs: list[Any] = []

    @step(wait_for="go")
    def act(self) -> None:
        Interrupted.runs.append(self.received_signal)
        if len(Interrupted.runs) == 1:
            raise KeyboardInterrupt
        note(self, "act")


class Approvals(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Two branches that wait independently; a join after both."""

    @step(wait_for="approved", matching=lambda p: p.get("by") == "legal")
    def legal(self) -> None:
        note(self, "legal")

    @step(after=[], wait_for="approved", matching=lambda p: p.get("by") == "finance")
    def finance(self) -> None:
        note(self, "finance")

    @step(after=["legal", "finance"])
    def done(self) -> None:
        note(self, "done")


class TwoWaiters(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Two branches waiting for the same signal name: one signal wakes one of them."""

    @step(wait_for="token")
    def first(self) -> None:
        note(self, "first")

    @step(after=[], wait_for="token")
    def second(self) -> None:
        note(self, "second")


@pytest.fixture
def huey_url(tmp_path: Path) -> str:
    return queue_url("sqlite", tmp_path)


@pytest.fixture(autouse=True)
def _huey_empty(app: Flask) -> Iterator[None]:
    app.extensions["geneva"].huey.flush()
    yield


# -- helpers ---------------------------------------------------------------------------


def messages(app: Flask) -> list[Any]:
    huey = app.extensions["geneva"].huey
    return [t for t in huey.pending() if t.name == "geneva.perform_step"]


def signal_rows(workflow: Any) -> list[dict[str, Any]]:
    s = geneva.tables.signals
    with geneva.engine().connect() as conn:
        found = conn.execute(sa.select(s).where(s.c.workflow_id == workflow.id).order_by(s.c.id))
        return [dict(r._mapping) for r in found]


def started_waiting(app: Flask, cls: type[Any] = TransferWorkflow) -> Any:
    """A workflow whose step that waits was claimed and now waits."""
    wf = cls.create()
    speedrun(wf)
    app.extensions["geneva"].huey.flush()
    return wf


def run_scheduled(app: Flask, wf: Any, step_name: str | None = None) -> Any:
    return rows.run(app, wf, step_name)


# -- delivery --------------------------------------------------------------------------


def test_a_waiting_step_holds_no_message_and_the_workflow_is_ready(app):
    wf = started_waiting(app)
    assert_waiting_for(wf, "settled")
    assert committed.history(wf)[-1] == ("record_settlement", "waiting", None)
    assert committed.state(wf) == "ready"
    assert messages(app) == []
    # Housekeeping sends it nothing either: it waits forever, by design.
    with travel(timedelta(days=400)):
        assert housekeeping.run(geneva).retriggered == 0
    assert messages(app) == []


def test_a_signal_is_stored_before_the_step_runs_and_wakes_it(app):
    wf = started_waiting(app)
    (waiting,) = [e for e in rows.executions(wf) if e.state == "waiting"]
    signal = wf.signal("settled", payload={"at": "noon"}, idempotency_key="d-1")
    assert signal.duplicate is False and signal.id is not None
    assert signal.consumed_step == "record_settlement"
    assert signal.consumed_by_execution_id == waiting.id
    (stored,) = signal_rows(wf)
    assert stored["payload"] == {"at": "noon"} and stored["consumed_at"] is not None
    assert [t.args[0] for t in messages(app)] == [waiting.id]
    rows.execute(app, waiting.id)
    assert rows.marks(wf) == ["submit", "record_settlement"]
    assert committed.state(wf) == "finished"
    notes = db.session.scalars(sa.select(Mark.note).where(Mark.name == "record_settlement"))
    assert list(notes) == ["settled:{'at': 'noon'}"]


def test_a_redelivered_signal_returns_the_stored_row_and_changes_nothing(app):
    wf = started_waiting(app)
    first = wf.signal("settled", payload={"n": 1}, idempotency_key="d-1")
    sent = len(messages(app))
    again = wf.signal("settled", payload={"n": 2}, idempotency_key="d-1")
    assert again.duplicate is True
    assert (again.id, again.payload) == (first.id, {"n": 1})
    assert len(signal_rows(wf)) == 1
    assert len(messages(app)) == sent
    # Without a key there is no deduplication: each delivery is a new signal.
    wf.signal("settled")
    wf.signal("settled")
    assert len(signal_rows(wf)) == 3


def test_signal_received_is_sent_with_duplicate(app):
    seen: list[tuple[Any, bool]] = []

    def receiver(sender: Any, **kw: Any) -> None:
        seen.append((kw["workflow_id"], kw["name"], kw["duplicate"]))

    wf = started_waiting(app)
    with signals.signal_received.connected_to(receiver):
        wf.signal("settled", idempotency_key="k")
        wf.signal("settled", idempotency_key="k")
    assert seen == [(wf.id, "settled", False), (wf.id, "settled", True)]


def test_commit_false_joins_the_callers_transaction_and_a_rollback_leaves_nothing(app):
    wf = started_waiting(app)
    transfer = Transfer(bank_ref="rolled back")
    db.session.add(transfer)
    wf.signal("settled", payload={}, commit=False)
    assert messages(app) == []  # not before the commit
    db.session.rollback()
    assert signal_rows(wf) == []
    assert messages(app) == []
    assert committed.history(wf)[-1] == ("record_settlement", "waiting", None)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)) == 0

    db.session.add(Transfer(bank_ref="kept"))
    wf.signal("settled", payload={}, commit=False)
    assert messages(app) == []
    db.session.commit()
    assert len(signal_rows(wf)) == 1
    assert len(messages(app)) == 1
    assert committed.history(wf)[-1] == ("record_settlement", "scheduled", None)
    assert db.session.scalar(sa.select(Transfer.bank_ref)) == "kept"


def test_signal_for_finds_the_ongoing_workflow_of_the_hero(app):
    transfer = Transfer(bank_ref="r-1")
    db.session.add(transfer)
    db.session.commit()
    with pytest.raises(InvalidStateError, match="no ongoing TransferWorkflow"):
        TransferWorkflow.signal_for(transfer, "settled")
    wf = TransferWorkflow.create(transfer)
    speedrun(wf)
    signal = TransferWorkflow.signal_for(transfer, "settled", payload={"ok": True})
    assert signal.workflow_id == wf.id and signal.consumed_step == "record_settlement"
    speedrun(wf)
    assert committed.state(wf) == "finished"
    with pytest.raises(InvalidStateError, match="no ongoing"):
        TransferWorkflow.signal_for(transfer, "settled")


def test_a_finished_or_canceled_workflow_refuses_signals_and_keeps_the_callers_rows(app):
    done = started_waiting(app)
    deliver_signal(done, "settled")
    speedrun(done)
    assert done.state == "finished"
    db.session.add(Transfer(bank_ref="mine"))
    with pytest.raises(InvalidStateError, match="finished workflow"):
        done.signal("settled", commit=False)
    db.session.commit()  # the caller's own row was not rolled back by the refusal
    assert db.session.scalar(sa.select(Transfer.bank_ref)) == "mine"
    gone = TransferWorkflow.create()
    gone.cancel()
    with pytest.raises(InvalidStateError, match="canceled workflow"):
        gone.signal("settled")
    assert signal_rows(done) == [] or all(r["name"] == "settled" for r in signal_rows(done))
    assert signal_rows(gone) == []


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"when": object()}, "not JSON-serialisable"),
        ({"x": float("nan")}, "not JSON-serialisable"),
        ("x" * 2000, "over the limit of 1000 bytes.*GENEVA_MAX_SIGNAL_PAYLOAD"),
    ],
)
def test_a_bad_payload_is_refused_before_anything_is_written(app, payload, match):
    wf = started_waiting(app)
    with pytest.raises(SignalError, match=match) as raised:
        wf.signal("settled", payload=payload)
    assert isinstance(raised.value, ValueError)
    assert signal_rows(wf) == []
    assert messages(app) == []


def test_a_bad_name_or_key_is_refused(app):
    wf = started_waiting(app)
    for name, key in (("", None), ("x" * 192, None), (5, None), ("ok", "")):
        with pytest.raises(SignalError):
            wf.signal(name, idempotency_key=key)
    assert signal_rows(wf) == []


# -- waiting and consuming -------------------------------------------------------------


def test_a_signal_that_arrived_first_is_buffered_and_consumed_at_once(app):
    wf = TransferWorkflow.create()
    early = wf.signal("settled", payload={"early": True})
    assert early.consumed_step is None and early.pending
    speedrun(wf)  # submit, then record_settlement takes the buffered signal: no waiting
    assert rows.marks(wf) == ["submit", "record_settlement"]
    assert committed.state(wf) == "finished"
    (stored,) = signal_rows(wf)
    assert stored["consumed_step"] == "record_settlement"
    assert "waiting" not in [state for _, state, _ in committed.history(wf)]


def test_a_signal_no_step_waits_for_is_stored_as_pending(app):
    wf = started_waiting(app)
    other = wf.signal("unrelated", payload=[1, 2])
    assert other.pending and other.consumed_step is None
    assert messages(app) == []
    assert_waiting_for(wf, "settled")


def test_one_signal_wakes_exactly_the_oldest_waiting_execution_and_is_consumed_once(app):
    wf = TwoWaiters.create()
    run_scheduled(app, wf, "first")
    run_scheduled(app, wf, "second")
    assert sorted(s for s, state, _ in committed.history(wf) if state == "waiting") == [
        "first",
        "second",
    ]
    one = wf.signal("token")
    assert one.consumed_step == "first"  # the older waiting execution
    assert [s for s, state, _ in committed.history(wf) if state == "waiting"] == ["second"]
    speedrun(wf)
    assert rows.marks(wf) == ["first"]
    two = wf.signal("token")
    assert two.consumed_step == "second"
    speedrun(wf)
    assert sorted(rows.marks(wf)) == ["first", "second"]
    assert committed.state(wf) == "finished"


def test_dag_branches_wait_independently_and_matching_picks_the_branch(app):
    wf = Approvals.create()
    speedrun(wf)
    assert {s for s, state, _ in committed.history(wf) if state == "waiting"} == {
        "legal",
        "finance",
    }
    finance = wf.signal("approved", payload={"by": "finance"})
    assert finance.consumed_step == "finance"
    stray = wf.signal("approved", payload={"by": "nobody"})
    assert stray.pending
    speedrun(wf)
    assert rows.marks(wf) == ["finance"]
    assert_waiting_for(wf, "approved")
    deliver_signal(wf, "approved", {"by": "legal"})
    speedrun(wf)
    assert rows.marks(wf) == ["finance", "legal", "done"]


def test_a_reattempt_after_the_signal_reuses_the_signal_it_consumed(app):
    wf = Fussy.create()
    speedrun(wf)
    assert_waiting_for(wf, "go")
    first = wf.signal("go", payload={"n": 1})
    Fussy.runs.clear()
    with pytest.raises(RuntimeError, match="first run fails"):
        speedrun(wf)
    speedrun(wf)  # the reattempt: it does not wait again
    assert committed.state(wf) == "finished"
    assert rows.marks(wf) == ["act"]  # the failed run's write was rolled back
    assert [(r.id, r.payload) for r in Fussy.runs] == [(first.id, {"n": 1})] * 2
    assert [r["id"] for r in signal_rows(wf)] == [first.id]
    assert [o for _, _, o in committed.history(wf)] == ["reattempted", "success"]


def test_a_resumed_step_reuses_the_signal_it_consumed_and_does_not_wait_again(app):
    wf = Hesitant.create()
    Hesitant.runs.clear()
    sent = deliver_signal(wf, "go", {"n": 7})
    speedrun(wf)
    assert committed.state(wf) == "paused"
    wf.resume()
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert [(r.id, r.payload) for r in Hesitant.runs] == [(sent.id, {"n": 7})] * 2
    assert "waiting" not in [state for _, state, _ in committed.history(wf)]


def test_a_step_given_back_by_a_shutting_down_worker_runs_again_with_its_signal(app):
    wf = Interrupted.create()
    Interrupted.runs.clear()
    sent = deliver_signal(wf, "go", "payload")
    execution_id = rows.scheduled(wf).id
    with pytest.raises(KeyboardInterrupt):
        rows.execute(app, execution_id)
    assert committed.history(wf) == [("act", "scheduled", None)]  # given back, due now
    assert signal_rows(wf)[0]["consumed_by_execution_id"] == execution_id
    rows.execute(app, execution_id)
    assert committed.state(wf) == "finished"
    assert [r.id for r in Interrupted.runs] == [sent.id, sent.id]


def test_a_timeout_that_passed_while_paused_fires_after_resume(app):
    wf, execution_id = _waiting_timeout(app, "skip")
    wf.pause()
    with travel(timedelta(hours=2)):
        assert rows.execute(app, execution_id).status == "noop"  # paused: not applied
        assert committed.history(wf)[0][1] == "waiting"
        app.extensions["geneva"].huey.flush()
        wf.resume()
        (message,) = messages(app)
        assert message.args[0] == execution_id
        rows.execute(app, execution_id)
    assert committed.history(wf)[0] == ("ask", "skipped", "skipped")


def test_a_paused_workflow_stores_signals_but_wakes_nothing_until_resume(app):
    wf = started_waiting(app)
    wf.pause()
    stored = wf.signal("settled", payload={"p": 1})
    assert stored.pending
    assert messages(app) == []
    assert committed.history(wf)[-1] == ("record_settlement", "waiting", None)
    wf.resume()
    assert committed.history(wf)[-1] == ("record_settlement", "scheduled", None)
    assert len(messages(app)) == 1
    speedrun(wf)
    assert committed.state(wf) == "finished"
    assert signal_rows(wf)[0]["consumed_step"] == "record_settlement"


def test_operators_cancel_and_skip_a_waiting_step_and_reattempt_is_refused(app):
    wf = started_waiting(app)
    with pytest.raises(InvalidStateError, match="waiting for a signal"):
        wf.reattempt(step="record_settlement")
    wf.skip()
    assert committed.history(wf)[-1] == ("record_settlement", "skipped", "skipped")
    assert committed.state(wf) == "finished"

    other = started_waiting(app)
    other.cancel()
    assert committed.history(other)[-1] == ("record_settlement", "canceled", "canceled")
    assert committed.state(other) == "canceled"

    paused = started_waiting(app)
    paused.pause()
    assert committed.history(paused)[-1] == ("record_settlement", "waiting", None)


# -- timeouts --------------------------------------------------------------------------


def _waiting_timeout(app: Flask, action: str) -> tuple[Any, int]:
    wf = TIMEOUT_CLASSES[action].create()
    app.extensions["geneva"].huey.flush()
    rows.run(app, wf, "ask")
    (waiting,) = [e for e in rows.executions(wf) if e.state == "waiting"]
    return wf, waiting.id


def _outcome_after_timeout(app: Flask, wf: Any, action: str) -> None:
    history = committed.history(wf)
    if action == "pause":
        assert history == [("ask", "failed", "failed")]
        assert committed.state(wf) == "paused"
        (execution,) = rows.executions(wf)
        assert "waited 1:00:00 for signal 'answer'" in execution.error_message
        assert execution.error_class == "flask_geneva.SignalTimeout"
    elif action == "cancel":
        assert history == [("ask", "canceled", "canceled")]
        assert committed.state(wf) == "canceled"
    elif action == "skip":
        assert history[0] == ("ask", "skipped", "skipped")
        speedrun(wf)
        assert rows.marks(wf) == ["after"]
    else:
        assert history == [("ask", "scheduled", "timed_out")]
        speedrun(wf)
        notes = list(db.session.scalars(sa.select(Mark.note).where(Mark.workflow_id == wf.id)))
        assert rows.marks(wf) == ["ask", "after"] and notes == [None, None]
        assert committed.state(wf) == "finished"


@pytest.mark.parametrize("action", ["pause", "cancel", "skip", "run"])
def test_a_timeout_fires_by_its_huey_trigger_at_the_due_time(app, action):
    wf, execution_id = _waiting_timeout(app, action)
    (message,) = messages(app)
    assert message.args[0] == execution_id
    report = rows.execute(app, execution_id)  # the trigger, early: sent again for later
    assert report.status == "deferred"
    assert committed.history(wf)[0][1] == "waiting"
    with travel(timedelta(hours=1, seconds=1)):
        report = rows.execute(app, execution_id)
        assert report.status == "settled" and report.action == action
        _outcome_after_timeout(app, wf, action)


@pytest.mark.parametrize("action", ["pause", "run"])
def test_housekeeping_resends_a_lost_timeout_trigger(app, action):
    wf, execution_id = _waiting_timeout(app, action)
    app.extensions["geneva"].huey.flush()  # the timeout's message is lost
    with travel(timedelta(minutes=30)):
        assert housekeeping.run(geneva).retriggered == 0  # not due yet
    with travel(timedelta(hours=2)):
        assert housekeeping.run(geneva).retriggered == 1
        (message,) = messages(app)
        assert message.args[0] == execution_id
        rows.execute(app, execution_id)
        _outcome_after_timeout(app, wf, action)


def test_a_signal_before_the_timeout_wins_and_the_late_trigger_does_nothing(app):
    wf, execution_id = _waiting_timeout(app, "cancel")
    wf.signal("answer", payload="yes")
    speedrun(wf)
    with travel(timedelta(hours=2)):
        assert rows.execute(app, execution_id).status == "noop"
    assert committed.state(wf) == "finished"
    assert rows.marks(wf) == ["ask", "after"]
