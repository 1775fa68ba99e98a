"""The admin's signals: the waiting sentence, the Signals panel, the send-signal form,
and the schedules on the overview."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from admin_helpers import PREFIX
from admin_helpers import csrf_token
from admin_helpers import hx_post
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from huey import crontab

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import step
from flask_geneva.testing import assert_waiting_for
from flask_geneva.testing import deliver_signal
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class Refund(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def request_refund(self) -> None:
        pass

    @step(wait_for="settled", timeout=timedelta(days=3))
    def record(self) -> None:
        pass


class Review(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait_for="approved")
    def approve(self) -> None:
        pass


class NightlyReport(geneva.Workflow):  # type: ignore[name-defined,misc]
    schedule = crontab(minute="0", hour="6")

    @step
    def send(self) -> None:
        pass


committed = Committed(geneva)


def waiting_refund() -> Any:
    workflow = Refund.create()
    speedrun(workflow)
    assert_waiting_for(workflow, "settled")
    return workflow


def page(admin: Any, workflow_id: int) -> str:
    response = admin.get(f"{PREFIX}/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    return str(response.text)


def test_a_waiting_step_says_what_it_waits_for_since_when_and_when_it_times_out(admin):
    workflow = waiting_refund()
    with travel(timedelta(hours=2)):
        html = page(admin, workflow.id)
    assert re.search(
        r"step `record` is waiting for signal `settled` since \d\d:\d\d:\d\d UTC \(2 h ago\) "
        r"\(times out in 2 d\)",
        html,
    ), html
    assert '<g class="node state-waiting" data-step="record" data-state="waiting">' in html
    row = html.split('<table class="geneva-table executions">')[1]
    assert 'class="badge state-waiting" data-state="waiting">waiting</span>' in row
    assert "9999" not in html  # no timeout year shows anywhere


def test_a_step_without_a_timeout_has_no_times_out_part(admin):
    workflow = Review.create()
    speedrun(workflow)
    html = page(admin, workflow.id)
    assert "step `approve` is waiting for signal `approved` since" in html
    assert "times out" not in html


def test_the_lists_find_a_workflow_by_its_waiting_step(admin):
    workflow = waiting_refund()
    Refund.create(allow_multiple=True)  # 'record' not reached yet
    html = admin.get(f"{PREFIX}/workflows", query_string={"step": "record"}).text
    ids = {int(i) for i in re.findall(rf'href="{PREFIX}/workflows/(\d+)"', html)}
    assert ids == {workflow.id}
    assert '<code class="step state-waiting">record</code>' in html


def test_the_signals_panel_lists_consumed_and_pending_signals_escaped(admin):
    workflow = waiting_refund()
    deliver_signal(workflow, "settled", {"at": "noon"}, idempotency_key="d-1")
    long_payload = {"note": "<script>alert(1)</script>" + "x" * 200}
    deliver_signal(workflow, "late", long_payload)
    html = page(admin, workflow.id)
    panel = html.split('id="geneva-signals"')[1].split("</table>")[0]
    rows = panel.split("<tr data-signal=")[1:]
    assert len(rows) == 2
    late, settled = rows  # newest first
    assert "<code>settled</code>" in settled and "<code>d-1</code>" in settled
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        execution_id = conn.execute(
            sa.select(e.c.id).where(e.c.workflow_id == workflow.id, e.c.step_name == "record")
        ).scalar_one()
    assert f"step <code>record</code> (execution {execution_id})" in settled
    assert '<code>{"at": "noon"}</code>' in settled.replace("&#34;", '"')
    assert "pending" in late
    assert "<script>" not in panel and "&lt;script&gt;" in panel
    summary = re.search(r"<summary>(.*?)</summary>", late, re.S)
    assert summary is not None and len(summary.group(1)) < 200 and summary.group(1).endswith("…")
    assert "x" * 200 in late.split("<pre>")[1]  # expanded: the whole payload


def test_the_send_signal_form_wakes_the_waiting_step_and_flashes_the_result(admin):
    workflow = waiting_refund()
    html = page(admin, workflow.id)
    assert 'id="geneva-send-signal"' in html
    token = csrf_token(admin)
    response = admin.post(
        f"{PREFIX}/workflows/{workflow.id}/signal",
        data={
            "csrf_token": token,
            "name": "settled",
            "payload": '{"at": "noon"}',
            "idempotency_key": "k-7",
        },
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 302
    shown = admin.get(response.headers["Location"]).text
    assert "Signal &#39;settled&#39; (key &#39;k-7&#39;)" in shown
    assert "woke step &#39;record&#39;" in shown
    speedrun(workflow)
    assert committed.state(workflow) == "finished"
    s = geneva.tables.signals
    with geneva.engine().connect() as conn:
        stored = conn.execute(sa.select(s.c.payload, s.c.idempotency_key)).all()
    assert [tuple(r) for r in stored] == [({"at": "noon"}, "k-7")]
    assert 'id="geneva-send-signal"' not in page(admin, workflow.id)  # finished: no form


def test_the_form_over_htmx_answers_with_the_fragments_and_a_duplicate_changes_nothing(admin):
    workflow = waiting_refund()
    data = {"name": "settled", "idempotency_key": "k-1"}
    first = hx_post(admin, f"/workflows/{workflow.id}/signal", data=data)
    assert first.status_code == 200 and "<html" not in first.text
    assert 'id="geneva-signals" class="panel" hx-swap-oob="true"' in first.text
    assert "woke step &#39;record&#39;" in first.text
    again = hx_post(admin, f"/workflows/{workflow.id}/signal", data=data)
    assert "duplicate of signal" in again.text and "flash-success" in again.text
    s = geneva.tables.signals
    with geneva.engine().connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s)).scalar_one() == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "settled", "payload": "{nope"}, "The payload is not JSON: "),
        ({"name": "settled", "payload": '"' + "x" * 70_000 + '"'}, "GENEVA_MAX_SIGNAL_PAYLOAD"),
        ({"name": ""}, "a signal name must be a non-empty string"),
    ],
)
def test_the_form_shows_a_bad_payload_or_name_and_stores_nothing(admin, data, expected):
    workflow = waiting_refund()
    response = hx_post(admin, f"/workflows/{workflow.id}/signal", data=data)
    assert response.status_code == 200
    assert "flash-error" in response.text and expected in response.text
    assert_waiting_for(workflow, "settled")
    s = geneva.tables.signals
    with geneva.engine().connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s)).scalar_one() == 0


def test_signalling_a_finished_workflow_is_shown_as_an_error(admin):
    workflow = waiting_refund()
    deliver_signal(workflow, "settled")
    speedrun(workflow)
    response = hx_post(admin, f"/workflows/{workflow.id}/signal", data={"name": "settled"})
    assert response.status_code == 200
    assert "Cannot signal &#39;settled&#39; to a finished workflow" in response.text
    assert "flash-error" in response.text


def test_the_form_needs_the_csrf_token_and_the_signal_action(app, admin):
    workflow = waiting_refund()
    refused = admin.post(f"{PREFIX}/workflows/{workflow.id}/signal", data={"name": "settled"})
    assert refused.status_code == 403
    asked: list[str] = []

    def authorize(action: str) -> bool:
        asked.append(action)
        return action != "signal"

    app.config["GENEVA_ADMIN_AUTHORIZE"] = authorize
    denied = hx_post(admin, f"/workflows/{workflow.id}/signal", data={"name": "settled"})
    assert denied.status_code == 403
    assert asked[-1] == "signal"
    assert_waiting_for(workflow, "settled")


def test_the_overview_shows_each_schedule_in_words_and_its_next_tick(admin):
    with travel(timedelta(days=40)):
        html = admin.get(f"{PREFIX}/").text
        upcoming = NightlyReport.__geneva_definition__.schedule.next_tick(clock.now())
    table = html.split('<table class="geneva-table schedules">')[1].split("</table>")[0]
    assert "NightlyReport" in table and "Refund" not in table
    assert NightlyReport.__geneva_definition__.schedule.describe() in table
    assert f"{upcoming:%Y-%m-%d %H:%M} UTC</span> (in " in table


# -- the audit: a signal sent from the form is an operator action ----------------------------


def _actions(workflow_id: int) -> list[tuple[Any, ...]]:
    a = geneva.tables.actions
    query = (
        sa.select(a.c.action, a.c.step_name, a.c.actor, a.c.reason, a.c.detail)
        .where(a.c.workflow_id == workflow_id)
        .order_by(a.c.id)
    )
    with geneva.engine().connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def test_the_form_records_the_hook_s_actor_and_the_reason_and_the_page_shows_them(app, admin):
    workflow = waiting_refund()
    assert 'name="reason"' in page(admin, workflow.id).split('id="geneva-send-signal"')[1]
    app.config["GENEVA_ADMIN_AUTHORIZE"] = lambda action: "ops@example.com"
    data = {"name": "settled", "idempotency_key": "k-2", "reason": "bank confirmed by phone"}
    response = hx_post(admin, f"/workflows/{workflow.id}/signal", data=data)
    assert "woke step &#39;record&#39;" in response.text and "flash-success" in response.text
    assert _actions(workflow.id) == [
        (
            "signal",
            "record",
            "ops@example.com",
            "bank confirmed by phone",
            {"signal": "settled", "idempotency_key": "k-2"},
        )
    ]
    again = hx_post(admin, f"/workflows/{workflow.id}/signal", data=data)
    assert "duplicate of signal" in again.text
    assert len(_actions(workflow.id)) == 1  # a duplicate records nothing new

    html = page(admin, workflow.id)
    (item,) = re.findall(r'<li data-action="signal".*?</li>', html)
    assert '<strong>signal settled sent</strong> by <a href="' in item
    assert ">ops@example.com</a> <span title=" in item
    assert ': <q class="reason">bank confirmed by phone</q>' in item
    assert '<span class="muted">(woke step record)</span>' in item
    assert "<title>signal settled sent by ops@example.com</title>" in html  # the timeline
    # The actor's link lists the workflows they acted on: this one.
    listed = admin.get(f"{PREFIX}/workflows", query_string={"actor": "ops@example.com"}).text
    ids = {int(i) for i in re.findall(rf'href="{PREFIX}/workflows/(\d+)"', listed)}
    assert ids == {workflow.id}


def test_a_hook_that_names_nobody_still_records_the_signal_by_an_operator(app, admin):
    workflow = waiting_refund()
    app.config["GENEVA_ADMIN_AUTHORIZE"] = lambda action: True
    response = hx_post(admin, f"/workflows/{workflow.id}/signal", data={"name": "early"})
    assert "pending" in response.text
    assert _actions(workflow.id) == [("signal", None, None, None, {"signal": "early"})]
    (item,) = re.findall(r'<li data-action="signal".*?</li>', page(admin, workflow.id))
    assert "<strong>signal early sent</strong> by an operator <span" in item
    assert "woke step" not in item


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("bell\x07", "Reason= holds a control character"), ("r" * 2001, "at most 2,000")],
)
def test_a_bad_reason_is_shown_and_nothing_is_stored(admin, reason, expected):
    workflow = waiting_refund()
    data = {"name": "settled", "reason": reason}
    response = hx_post(admin, f"/workflows/{workflow.id}/signal", data=data)
    assert "flash-error" in response.text and expected in response.text
    assert _actions(workflow.id) == []
    assert_waiting_for(workflow, "settled")
    s = geneva.tables.signals
    with geneva.engine().connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s)).scalar_one() == 0


def test_a_refused_signal_from_the_form_records_nothing(admin):
    workflow = waiting_refund()
    deliver_signal(workflow, "settled")
    speedrun(workflow)
    data = {"name": "settled", "reason": "too late"}
    response = hx_post(admin, f"/workflows/{workflow.id}/signal", data=data)
    assert "Cannot signal &#39;settled&#39; to a finished workflow" in response.text
    assert _actions(workflow.id) == []
