"""Admin pages through the test client, as a full page and as htmx fragments."""

from __future__ import annotations

import re
from datetime import datetime
from datetime import timedelta

import pytest
import sqlalchemy as sa
from admin_helpers import PREFIX
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import ConfigurationError
from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.config import check_admin_settings
from flask_geneva.failures import group_failures
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

APP_CONFIG = {"GENEVA_ADMIN_LOGS_URL": "https://logs.example.com/?q=workflow:{workflow_id}+{step}"}


class Customer(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "adminv_customers"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(50), nullable=False, default="Ada")

    def __str__(self) -> str:
        return f"Customer {self.name}"


class Declined(Exception):
    pass


class OrderWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def reserve(self) -> None:
        pass

    @step(wait=timedelta(hours=1))
    def capture(self) -> None:
        pass

    @step(after="reserve")
    def notify(self) -> None:
        pass

    @step(after=["capture", "notify"])
    def receipt(self) -> None:
        pass


#: How many times LongHistory.spin has run, per workflow id.
_spins: dict[int, int] = {}


class LongHistory(geneva.Workflow):  # type: ignore[name-defined,misc]
    """A step due in an hour beside a step that reattempts itself 210 times first."""

    @step(wait=timedelta(hours=1))
    def gate(self) -> None:
        pass

    @step(after=[])
    def spin(self) -> None:
        _spins[self.id] = _spins.get(self.id, 0) + 1
        if _spins[self.id] < 211:
            self.reattempt()


class FlakyGateway(Exception):
    pass


class RetryingWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception=ExceptionPolicy("reattempt", wait=timedelta(minutes=5), max_reattempts=3))
    def call_gateway(self) -> None:
        raise FlakyGateway("gateway busy")


class ChargeWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def charge(self) -> None:
        amount = 3
        raise Declined(f"card declined for {amount} EUR")


def _customer(name: str = "Ada") -> Customer:
    customer = Customer(name=name)
    db.session.add(customer)
    db.session.commit()
    return customer


def _failed_charge() -> ChargeWorkflow:
    workflow = ChargeWorkflow.create(hero=_customer())
    with pytest.raises(Declined):
        perform_next_step(workflow)
    return workflow


def test_the_overview_counts_each_class_per_state_and_links_to_the_filtered_list(admin):
    for _ in range(2):
        OrderWorkflow.create(hero=_customer())
    failed = _failed_charge()

    page = admin.get(f"{PREFIX}/")
    assert page.status_code == 200
    assert "<html" in page.text and "htmx-2.0.11.min.js" in page.text
    row = re.search(r'<tr data-type="OrderWorkflow">.*?</tr>', page.text, re.S).group(0)
    assert f'href="{PREFIX}/classes/OrderWorkflow?state=ready" data-state="ready">2</a>' in row
    assert f'href="{PREFIX}/classes/ChargeWorkflow?state=paused"' in page.text
    assert f'href="{PREFIX}/workflows/{failed.id}"' in page.text  # recent failures
    assert "Declined" in page.text

    fragment = admin.get(f"{PREFIX}/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'data-type="OrderWorkflow"' in fragment.text


def test_the_list_filters_by_state_and_pages_newest_first_with_load_more(admin):
    created = [OrderWorkflow.create(hero=_customer()) for _ in range(5)]
    created[0].pause()
    ids = [w.id for w in created]

    page = admin.get(f"{PREFIX}/classes/OrderWorkflow?state=ready&limit=2")
    assert page.status_code == 200 and "<html" in page.text
    shown = [int(i) for i in re.findall(r'name="ids" value="(\d+)"', page.text)]
    assert shown == [ids[4], ids[3]]
    more = re.search(r'hx-get="([^"]+)"', page.text.split('id="geneva-more"')[1]).group(1)
    more = more.replace("&amp;", "&")
    assert f"before={ids[3]}" in more

    fragment = admin.get(more, headers={"HX-Request": "true"})
    assert "<html" not in fragment.text
    assert [int(i) for i in re.findall(r'name="ids" value="(\d+)"', fragment.text)] == [
        ids[2],
        ids[1],
    ]
    last = admin.get(more.replace(f"before={ids[3]}", f"before={ids[1]}"))
    assert re.findall(r'name="ids" value="(\d+)"', last.text) == []  # ids[0] is paused
    assert "geneva-more" not in last.text

    paused = admin.get(f"{PREFIX}/workflows?state=paused")
    assert re.findall(r'name="ids" value="(\d+)"', paused.text) == [str(ids[0])]
    by_hero = admin.get(f"{PREFIX}/workflows?hero_type=Customer&hero_id={created[2].hero_id}")
    assert re.findall(r'name="ids" value="(\d+)"', by_hero.text) == [str(ids[2])]


def test_the_detail_page_draws_the_dag_and_says_when_the_next_step_is_due(admin):
    workflow = OrderWorkflow.create(hero=_customer("Grace"))
    perform_next_step(workflow)  # reserve; capture (1 h) and notify scheduled
    perform_next_step(workflow)  # notify (due now)

    page = admin.get(f"{PREFIX}/workflows/{workflow.id}")
    assert page.status_code == 200
    text = page.text
    assert 'data-state="ready"' in text and "Customer Grace" in text
    assert 'data-step="reserve" data-state="completed"' in text
    assert 'data-step="capture" data-state="scheduled"' in text
    assert 'data-step="receipt" data-state="pending"' in text
    assert 'data-edge="capture->receipt"' in text and 'data-edge="reserve->notify"' in text
    # After 23:00 UTC the due time is tomorrow, and the page shows its date too.
    due = r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d"
    assert re.search(rf"step `capture` is scheduled for {due} UTC \(in (59|60) min\)", text)
    assert 'hx-trigger="every 3.0s"' in text  # ongoing: the page polls
    # The right buttons: no resume on a running workflow.
    assert {"pause", "cancel", "skip", "reattempt"} == set(re.findall(r'data-op="(\w+)"', text))

    with travel(timedelta(hours=1, minutes=12)):
        later = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    assert re.search(r"overdue by 1[12] min — no worker has picked it up", later)


def test_a_reattempted_step_says_when_its_next_attempt_is(admin):
    workflow = RetryingWorkflow.create()
    for _ in range(2):
        with pytest.raises(FlakyGateway):
            perform_next_step(workflow)
    text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    assert re.search(
        r"step `call_gateway` failed 2 times in a row; next attempt in (4|5) min "
        r"\(at (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d UTC\)",
        text,
    ), text


def test_skip_and_reattempt_stay_offered_for_a_step_older_than_the_newest_200_rows(admin):
    _spins.clear()
    workflow = LongHistory.create()
    for _ in range(211):
        perform_next_step(workflow)  # spin, 211 times; gate stays scheduled, oldest row
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        rows = conn.execute(
            sa.select(sa.func.count()).where(e.c.workflow_id == workflow.id)
        ).scalar_one()
    assert rows == 212
    text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    assert {"pause", "cancel", "skip", "reattempt"} == set(re.findall(r'data-op="(\w+)"', text))
    assert "<code>gate</code>" in text


def test_a_failed_step_shows_the_exception_and_its_source_line_highlighted(admin):
    workflow = _failed_charge()
    page = admin.get(f"{PREFIX}/workflows/{workflow.id}")
    text = page.text
    assert f"{__name__}.Declined" in text and "card declined for 3 EUR" in text
    highlighted = re.search(r'<span class="hll">(.*?)</span>\n', text, re.S).group(1)
    assert "raise" in highlighted and "Declined" in highlighted
    assert "Traceback" in text
    assert 'href="https://logs.example.com/?q=workflow:' in text
    assert "step `charge` failed with" in text
    assert {"resume", "cancel", "skip", "reattempt"} == set(re.findall(r'data-op="(\w+)"', text))


def test_a_poll_answers_only_changed_fragments_and_stops_when_the_workflow_ends(admin):
    workflow = OrderWorkflow.create(hero=_customer())
    url = f"{PREFIX}/workflows/{workflow.id}"
    page = admin.get(url).text
    digests = dict(re.findall(r'name="(h_\w+)" value="(\w+)"', page))
    assert set(digests) >= {"h_status", "h_actions", "h_dag", "h_timeline", "h_executions"}

    unchanged = admin.get(url, query_string=digests, headers={"HX-Request": "true"})
    assert unchanged.status_code == 204

    perform_next_step(workflow)  # reserve completes
    changed = admin.get(url, query_string=digests, headers={"HX-Request": "true"})
    assert changed.status_code == 200
    assert 'id="geneva-dag" class="panel" hx-swap-oob="true"' in changed.text
    assert "<html" not in changed.text

    workflow.cancel()
    final = admin.get(url, query_string=digests, headers={"HX-Request": "true"})
    assert final.status_code == 286  # htmx stops polling
    assert 'data-state="canceled"' in final.text
    # A new status clears the last action's message, which spoke of the old one.
    assert '<div id="geneva-message" hx-swap-oob="true" aria-live="polite"></div>' in final.text
    assert "hx-trigger" not in admin.get(url).text  # a terminal page does not poll


def test_list_rows_poll_swaps_changed_rows_and_stops_when_none_is_ongoing(admin):
    workflow = OrderWorkflow.create(hero=_customer())
    page = admin.get(f"{PREFIX}/workflows").text
    assert f'hx-get="{PREFIX}/workflows/poll"' in page
    digests = dict(re.findall(r'name="(h_row_\d+)" value="(\w+)"', page))
    assert list(digests) == [f"h_row_{workflow.id}"]
    poll = f"{PREFIX}/workflows/poll"
    assert admin.get(poll, query_string=digests, headers={"HX-Request": "true"}).status_code == 204
    workflow.pause()
    changed = admin.get(poll, query_string=digests, headers={"HX-Request": "true"})
    assert changed.status_code == 200
    assert f'<template><tr id="geneva-row-{workflow.id}"' in changed.text
    assert 'data-state="paused"' in changed.text
    workflow.cancel()
    assert admin.get(poll, query_string=digests, headers={"HX-Request": "true"}).status_code == 286


def test_unknown_ids_classes_and_operations_are_404_and_bad_filters_400(admin):
    assert admin.get(f"{PREFIX}/workflows/999999").status_code == 404
    assert admin.get(f"{PREFIX}/workflows/abc").status_code == 404
    assert admin.get(f"{PREFIX}/classes/NoSuchWorkflow").status_code == 404
    assert admin.get(f"{PREFIX}/workflows?state=done").status_code == 400
    assert admin.get(f"{PREFIX}/workflows?created_after=yesterday").status_code == 400
    assert admin.get(f"{PREFIX}/workflows?before=x").status_code == 400
    assert admin.get(f"{PREFIX}/classes/OrderWorkflow").status_code == 200  # no rows yet


def test_the_admin_serves_its_vendored_htmx_and_stylesheets(admin):
    htmx = admin.get(f"{PREFIX}/static/geneva/htmx-2.0.11.min.js")
    assert htmx.status_code == 200 and b"htmx" in htmx.data
    htmx.close()
    css = admin.get(f"{PREFIX}/static/geneva/geneva.css")
    assert css.status_code == 200 and b".badge" in css.data
    css.close()
    assert ".geneva-source" in admin.get(f"{PREFIX}/source.css").text


def test_times_keep_their_seconds_and_skip_asks_first_like_cancel(admin):
    workflow = OrderWorkflow.create(hero=_customer())
    created = workflow.created_at
    with travel(timedelta(hours=3)):
        text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    # Three hours later the creation time still reads to the second.
    assert created.strftime("%H:%M:%S") in text
    skip = re.search(r'<form [^>]*workflows/\d+/skip"[^>]*>', text).group(0)
    assert 'hx-confirm="Skip step reserve of workflow' in skip
    cancel = re.search(r'<form [^>]*workflows/\d+/cancel"[^>]*>', text).group(0)
    assert "hx-confirm=" in cancel


def test_an_attempt_that_raised_and_was_reattempted_is_not_shown_as_completed(admin):
    workflow = RetryingWorkflow.create()
    with pytest.raises(FlakyGateway):
        perform_next_step(workflow)
    text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    rows = re.findall(r'<tr data-execution="\d+">.*?</tr>', text, re.S)
    (failed,) = [row for row in rows if "FlakyGateway" in row]
    assert 'data-state="reattempted"' in failed and 'data-state="completed"' not in failed


def test_a_canceled_workflow_says_who_canceled_it_and_why_and_its_unrun_steps_did_not_run(admin):
    workflow = OrderWorkflow.create(hero=_customer())
    perform_next_step(workflow)  # reserve
    workflow.cancel(actor="ops@example.com", reason="duplicate order")
    text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    assert re.search(r"canceled by ops@example.com at \d\d:\d\d:\d\d UTC: duplicate order", text)
    assert 'data-step="receipt" data-state="not_run"' in text
    assert 'data-step="reserve" data-state="completed"' in text


def test_recent_failures_are_grouped_so_a_different_one_is_not_pushed_off(admin):
    same = [_failed_charge() for _ in range(25)]
    other = RetryingWorkflow.create()
    other.pause()  # paused, but with no failed step: not a failure
    odd = OrderWorkflow.create(hero=_customer())
    odd.pause()
    text = admin.get(f"{PREFIX}/").text
    groups = re.findall(r'<tr data-failure-group="([^"]+)">', text)
    assert groups == [f"ChargeWorkflow:charge:{__name__}.Declined"]
    row = re.search(r"<tr data-failure-group=.*?</tr>", text, re.S).group(0)
    assert re.search(r'class="failure-count">25<', row)
    assert f"{PREFIX}/classes/ChargeWorkflow?state=paused&amp;step=charge" in row
    assert f'href="{PREFIX}/workflows/{same[-1].id}"' in row  # the newest as the example
    assert "card declined for 3 EUR" in row


def test_group_failures_orders_groups_by_their_last_failure():
    def row(ident, cls, error, minute):
        return dict(
            id=ident,
            type=cls,
            step_name="s",
            error_class=error,
            failed_at=datetime(2026, 1, 1, 10, minute),
            error_message="m",
        )

    groups = group_failures(
        [row(1, "A", "X", 1), row(2, "A", "X", 5), row(3, "B", "Y", 3), row(4, "A", "Z", 2)]
    )
    assert [(g.type, g.error_class, g.count) for g in groups] == [
        ("A", "X", 2),
        ("B", "Y", 1),
        ("A", "Z", 1),
    ]
    assert groups[0].first_seen.minute == 1 and groups[0].newest["id"] == 2


def test_the_list_shows_its_total_and_each_failure_in_an_error_column(admin):
    failed = _failed_charge()
    for _ in range(2):
        OrderWorkflow.create(hero=_customer())
    text = admin.get(f"{PREFIX}/workflows").text
    assert 'data-total="3"' in text and "<strong>3</strong> workflows match" in text
    row = re.search(rf'<tr id="geneva-row-{failed.id}".*?</tr>', text, re.S).group(0)
    assert re.search(
        r'<td class="error"><span title="card declined for 3 EUR"><strong>'
        rf"{__name__}.Declined</strong>: card declined for 3 EUR",
        row,
    )
    one = admin.get(f"{PREFIX}/classes/ChargeWorkflow").text
    assert "<strong>1</strong> workflow matches" in one


def test_error_pages_are_the_admin_s_own_with_what_went_wrong(admin, app):
    missing = admin.get(f"{PREFIX}/workflows/999999")
    assert missing.status_code == 404
    assert "geneva.css" in missing.text and 'data-status="404"' in missing.text
    assert "No workflow with id 999999." in missing.text and "Back to the overview" in missing.text
    bad = admin.get(f"{PREFIX}/workflows?state=sleeping")
    assert bad.status_code == 400 and "Unknown state &#39;sleeping&#39;" in bad.text
    assert '<h1><span class="muted">400</span> Bad request</h1>' in bad.text
    fragment = admin.get(f"{PREFIX}/workflows/999999", headers={"HX-Request": "true"})
    assert fragment.status_code == 404 and "<html" not in fragment.text
    assert "No workflow with id 999999." in fragment.text
    app.config["GENEVA_ADMIN_AUTHORIZE"] = lambda action: False
    refused = admin.get(f"{PREFIX}/")
    assert refused.status_code == 403 and "Not allowed" in refused.text
    assert "GENEVA_ADMIN_AUTHORIZE" in refused.text and "geneva.css" in refused.text


def test_the_timeline_draws_the_pauses_after_a_failure_and_by_an_operator(admin):
    failed = _failed_charge()  # paused by its failure: a pause that lasts until now
    with travel(timedelta(hours=5)):
        text = admin.get(f"{PREFIX}/workflows/{failed.id}").text
    assert len(re.findall(r'<rect class="tl-pause"', text)) == 1
    assert "paused after step charge failed" in text and "paused 1 time" in text
    workflow = OrderWorkflow.create(hero=_customer())
    workflow.pause(actor="ops")
    with travel(timedelta(minutes=30)):
        workflow.resume(actor="ops")
        text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    (width,) = re.findall(r'<rect class="tl-pause" x="[\d.]+%" y="0" width="([\d.]+)%"', text)
    assert float(width) > 90  # the half hour paused is nearly all of this timeline
    assert "paused by an operator" in text


def test_the_hero_links_to_the_app_s_own_page_when_a_template_is_set(admin, app):
    workflow = OrderWorkflow.create(hero=_customer())
    assert "hero-link" not in admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    app.config["GENEVA_ADMIN_HERO_URL"] = "/shop/{hero_type}/{hero_id}?from=workflow-{workflow_id}"
    text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    expected = f"/shop/Customer/{workflow.hero_id}?from=workflow-{workflow.id}"
    assert f'<a href="{expected}" class="hero-link"' in text


def test_the_hero_url_may_be_a_callable_and_only_web_links_are_shown(admin, app):
    workflow = OrderWorkflow.create(hero=_customer())
    app.config["GENEVA_ADMIN_HERO_URL"] = lambda kind, ident: f"https://crm.example.com/{ident}"
    text = admin.get(f"{PREFIX}/workflows/{workflow.id}").text
    assert f'<a href="https://crm.example.com/{workflow.hero_id}" class="hero-link"' in text
    app.config["GENEVA_ADMIN_HERO_URL"] = lambda kind, ident: "javascript:alert(1)"
    assert "hero-link" not in admin.get(f"{PREFIX}/workflows/{workflow.id}").text


def test_a_hero_url_with_an_unknown_placeholder_is_refused():
    with pytest.raises(ConfigurationError, match=r"unknown placeholder \{step\}"):
        check_admin_settings({"GENEVA_ADMIN_HERO_URL": "/x/{step}"})
