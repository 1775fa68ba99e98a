"""Admin actions change the database: single-workflow buttons and batched bulk actions."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from admin_helpers import PREFIX
from admin_helpers import csrf_token
from admin_helpers import hx_post
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.admin import actions
from flask_geneva.testing import perform_next_step

db = SQLAlchemy()
geneva = Geneva(db)


class Parcel(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "admina_parcels"
    id = sa.Column(sa.Integer, primary_key=True)


class Lost(Exception):
    pass


class DeliveryWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def pick(self) -> None:
        pass

    @step(wait=timedelta(hours=2))
    def deliver(self) -> None:
        pass


class FlakyWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def scan(self) -> None:
        raise Lost("scanner offline")

    @step
    def file(self) -> None:
        pass


committed = Committed(geneva)
_state = committed.state


def _executions(workflow_id: int) -> list[tuple[str, str]]:
    """(step, state) of each execution, oldest first, as committed."""
    return [(name, state) for name, state, _ in committed.history(workflow_id)]


def _parcel() -> Parcel:
    parcel = Parcel()
    db.session.add(parcel)
    db.session.commit()
    return parcel


def test_pause_resume_and_cancel_buttons_answer_with_the_updated_fragments(admin):
    workflow = DeliveryWorkflow.create(hero=_parcel())
    paused = hx_post(admin, f"/workflows/{workflow.id}/pause")
    assert paused.status_code == 200
    assert _state(workflow.id) == "paused"
    assert "<html" not in paused.text
    assert 'id="geneva-status" class="panel status" hx-swap-oob="true"' in paused.text
    assert 'data-state="paused"' in paused.text and 'data-op="resume"' in paused.text
    assert 'data-op="pause"' not in paused.text
    assert f"Paused workflow {workflow.id}." in paused.text

    assert hx_post(admin, f"/workflows/{workflow.id}/resume").status_code == 200
    assert _state(workflow.id) == "ready"
    assert hx_post(admin, f"/workflows/{workflow.id}/cancel").status_code == 200
    assert _state(workflow.id) == "canceled"
    assert _executions(workflow.id) == [("pick", "canceled")]


def test_skip_and_reattempt_act_on_the_due_or_failed_step(admin):
    flaky = FlakyWorkflow.create(hero=_parcel())
    with pytest.raises(Lost):
        perform_next_step(flaky)
    reattempted = hx_post(admin, f"/workflows/{flaky.id}/reattempt", data={"step": "scan"})
    assert reattempted.status_code == 200
    assert _state(flaky.id) == "ready"
    assert _executions(flaky.id) == [("scan", "failed"), ("scan", "scheduled")]

    skipped = hx_post(admin, f"/workflows/{flaky.id}/skip")
    assert skipped.status_code == 200
    assert _executions(flaky.id) == [
        ("scan", "failed"),
        ("scan", "skipped"),
        ("file", "scheduled"),
    ]


def test_an_action_that_does_not_apply_reports_why_and_changes_nothing(admin):
    workflow = DeliveryWorkflow.create(hero=_parcel())
    response = hx_post(admin, f"/workflows/{workflow.id}/resume")
    assert response.status_code == 200
    assert "Cannot resume a ready workflow" in response.text
    assert "flash-error" in response.text
    assert _state(workflow.id) == "ready"


def test_a_plain_form_post_redirects_back_to_the_detail_page_with_a_message(admin):
    workflow = DeliveryWorkflow.create(hero=_parcel())
    token = csrf_token(admin)
    response = admin.post(f"{PREFIX}/workflows/{workflow.id}/pause", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"{PREFIX}/workflows/{workflow.id}")
    assert _state(workflow.id) == "paused"
    page = admin.get(response.headers["Location"])
    assert f"Paused workflow {workflow.id}." in page.text


def test_bulk_on_selected_rows_previews_the_count_then_applies_it(admin):
    workflows = [DeliveryWorkflow.create(hero=_parcel()) for _ in range(3)]
    workflows[0].pause()
    ids = [str(w.id) for w in workflows]
    preview = hx_post(
        admin, "/workflows/bulk", data={"op": "pause", "scope": "selected", "ids": ids}
    )
    assert preview.status_code == 200
    assert re.search(r'class="bulk-count">2<', preview.text)  # one is already paused
    assert all(_state(w.id) == "ready" for w in workflows[1:])  # a preview changes nothing

    done = hx_post(
        admin,
        "/workflows/bulk",
        data={"op": "pause", "scope": "selected", "ids": ids, "confirm": "1"},
    )
    assert 'data-mode="done"' in done.text and re.search(r'class="bulk-done">2<', done.text)
    assert [_state(w.id) for w in workflows] == ["paused"] * 3


def test_bulk_on_the_whole_filter_runs_in_batches_until_every_match_is_done(admin, monkeypatch):
    monkeypatch.setattr(actions, "BULK_BATCH", 2)
    monkeypatch.setattr(actions, "BULK_SECONDS", 0.0)  # one batch per request
    workflows = [DeliveryWorkflow.create(hero=_parcel()) for _ in range(5)]
    other = FlakyWorkflow.create(hero=_parcel())
    form = {"op": "cancel", "scope": "filter", "type": "DeliveryWorkflow", "state": "ready"}

    preview = hx_post(admin, "/workflows/bulk", data=form)
    assert re.search(r'class="bulk-count">5<', preview.text)

    data = dict(form, confirm="1")
    rounds = 0
    while True:
        rounds += 1
        response = hx_post(admin, "/workflows/bulk", data=data)
        mode = re.search(r'data-mode="(\w+)"', response.text).group(1)
        if mode == "done":
            break
        assert mode == "progress" and 'hx-trigger="load' in response.text
        data.update(
            before=re.search(r'name="before" value="(\d+)"', response.text).group(1),
            done=re.search(r'name="done" value="(\d+)"', response.text).group(1),
            failed="0",
        )
    assert rounds == 3
    assert re.search(r'class="bulk-done">5<', response.text)
    assert [_state(w.id) for w in workflows] == ["canceled"] * 5
    assert _state(other.id) == "ready"


def _actions(workflow_id: int) -> list[tuple[str, str | None, str | None, str | None]]:
    a = geneva.tables.actions
    query = (
        sa.select(a.c.action, a.c.step_name, a.c.actor, a.c.reason)
        .where(a.c.workflow_id == workflow_id)
        .order_by(a.c.id)
    )
    with geneva.engine().connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def _finished(workflow: object) -> None:
    while perform_next_step(workflow) is not None:
        pass


def test_a_bulk_rerun_by_filter_previews_the_rerunnable_count_and_records_the_reason(admin):
    done = [DeliveryWorkflow.create(hero=_parcel()) for _ in range(3)]
    for workflow in done:
        _finished(workflow)
    going = DeliveryWorkflow.create(hero=_parcel())  # ready: not rerunnable
    form = {
        "op": "rerun_from",
        "scope": "filter",
        "type": "DeliveryWorkflow",
        "rerun_step": "deliver",
        "reason": "carrier API fixed",
    }
    preview = hx_post(admin, "/workflows/bulk", data=form)
    assert re.search(r'class="bulk-count">3<', preview.text)
    assert "re-run from step deliver" in preview.text
    assert all(_state(w.id) == "finished" for w in done)  # a preview changes nothing

    response = hx_post(admin, "/workflows/bulk", data=dict(form, confirm="1"))
    assert re.search(r'class="bulk-done">3<', response.text)
    assert [_state(w.id) for w in done] == ["ready"] * 3 and _state(going.id) == "ready"
    assert _actions(done[0].id) == [("rerun_from", "deliver", None, "carrier API fixed")]
    assert _actions(going.id) == []


def test_a_bulk_rerun_needs_its_step(admin):
    response = hx_post(
        admin, "/workflows/bulk", data={"op": "rerun_from", "scope": "filter", "type": "x"}
    )
    assert response.status_code == 400 and "rerun_step" in response.text


def test_a_rerun_preview_changes_nothing_and_the_hook_s_name_is_the_actor(admin, app):
    workflow = DeliveryWorkflow.create(hero=_parcel())
    _finished(workflow)
    page = admin.get(f"{PREFIX}/workflows/{workflow.id}/rerun?step=pick")
    assert page.status_code == 200
    assert re.findall(r'<code class="rerun-step">(\w+)</code>', page.text) == ["pick", "deliver"]
    assert _state(workflow.id) == "finished" and _actions(workflow.id) == []
    assert admin.get(f"{PREFIX}/workflows/{workflow.id}/rerun?step=nope").status_code == 400
    assert admin.get(f"{PREFIX}/workflows/999999/rerun?step=pick").status_code == 404

    app.config["GENEVA_ADMIN_AUTHORIZE"] = lambda action: "ops@example.com"
    response = hx_post(
        admin,
        f"/workflows/{workflow.id}/rerun_from",
        data={"step": "deliver", "reason": "resend"},
    )
    assert "runs again: deliver" in response.text
    assert _actions(workflow.id) == [("rerun_from", "deliver", "ops@example.com", "resend")]
    detail = admin.get(f"{PREFIX}/workflows/{workflow.id}")
    assert "rerun from step deliver</strong> by" in detail.text and "ops@example.com" in detail.text


def test_a_reason_with_a_control_character_is_refused_with_a_message(admin):
    workflow = DeliveryWorkflow.create(hero=_parcel())
    response = hx_post(admin, f"/workflows/{workflow.id}/pause", data={"reason": "bell\x07"})
    assert "control character" in response.text and "flash-error" in response.text
    assert _state(workflow.id) == "ready"
