"""The admin in real headless Chromium, served by a real server, with a real Huey worker.

The manual's screenshots come from ``scripts/screenshots.py``, which photographs the
running demo.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import browser_helpers
import pytest
import sqlalchemy as sa
from browser_helpers import serving
from browser_helpers import wait_for_state
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed
from helpers import wait_until

from flask_geneva import Geneva
from flask_geneva import step

#: ``browser`` and also ``slow``: the quick loop (``-m "not slow"``) leaves them out.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]

#: The shared fixtures, bound in this module: pytest finds a module's fixtures by name.
browser = browser_helpers.browser
watched = browser_helpers.watched

db = SQLAlchemy()
geneva = Geneva(db)

APP_CONFIG = {
    "GENEVA_ADMIN_POLL_INTERVAL": 0.3,
    "GENEVA_ADMIN_LOGS_URL": "https://logs.example.com/search?workflow={workflow_id}",
}

#: Set by the test to let ``RefundWorkflow.wait_for_bank`` finish.
release = threading.Event()


class Refund(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "adminb_refunds"
    id = sa.Column(sa.Integer, primary_key=True)
    amount = sa.Column(sa.Integer, nullable=False, default=42)

    def __str__(self) -> str:
        return f"Refund of {self.amount} EUR"


class BankRejected(Exception):
    pass


class RefundWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def check(self) -> None:
        time.sleep(0.2)

    @step
    def wait_for_bank(self) -> None:
        release.wait(timeout=20)

    @step(after="check")
    def notify_customer(self) -> None:
        pass

    @step(after=["wait_for_bank", "notify_customer"])
    def close(self) -> None:
        pass


class PayoutWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def validate(self) -> None:
        pass

    @step
    def transfer(self) -> None:
        iban = "DE00 0000"
        raise BankRejected(f"IBAN {iban} rejected: account closed")

    @step
    def confirm(self) -> None:
        pass


@pytest.fixture
def live(app: Flask, huey: Any) -> Iterator[str]:
    """Serve the app with a real Huey consumer; ``release`` ends a held step before it stops."""
    with serving(app, geneva, huey) as url:
        release.clear()
        try:
            yield url
        finally:
            release.set()  # before the consumer stops: a held step must end


committed = Committed(geneva)


def _wait_for_state(workflow_id: int, state: str, timeout: float = 10) -> None:
    wait_for_state(committed, workflow_id, state, timeout)


def _refund() -> Refund:
    refund = Refund()
    db.session.add(refund)
    db.session.commit()
    return refund


def test_the_detail_page_follows_a_running_workflow_and_its_pause_and_resume(watched, live):
    workflow = RefundWorkflow.create(hero=_refund())
    page = watched.page
    answer = page.goto(f"{live}/workflows/{workflow.id}")
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    page.evaluate("window.__notReloaded = true")
    badge = page.locator("#geneva-status .badge")

    # The worker runs check, then blocks in wait_for_bank: the page follows by polling.
    page.locator('g.node[data-step="wait_for_bank"][data-state="in_progress"]').wait_for()
    page.locator('g.node[data-step="check"][data-state="completed"]').wait_for()
    assert badge.get_attribute("data-state") == "performing"

    page.click('button[data-op="pause"]')
    page.locator('#geneva-status .badge[data-state="paused"]').wait_for()
    _wait_for_state(workflow.id, "paused")
    assert page.locator('button[data-op="resume"]').is_visible()
    assert page.locator('button[data-op="pause"]').count() == 0

    release.set()  # the running step finishes and is recorded; close waits for resume
    page.locator('g.node[data-step="wait_for_bank"][data-state="completed"]').wait_for()
    page.click('button[data-op="resume"]')
    page.locator('#geneva-status .badge[data-state="finished"]').wait_for(timeout=10_000)
    _wait_for_state(workflow.id, "finished")
    assert page.locator('g.node[data-step="close"][data-state="completed"]').count() == 1
    assert page.evaluate("window.__notReloaded") is True  # all of it without a reload
    # Nothing applies any more but a rerun (of any step: all of them are done).
    ops = page.locator("button[data-op]").evaluate_all("bs => bs.map(b => b.dataset.op)")
    assert ops == ["rerun-preview"]
    assert watched.violations() == []  # polling and the buttons ran under the policy


def test_a_failed_step_shows_its_failing_line_highlighted(watched, live):
    workflow = PayoutWorkflow.create(hero=_refund())
    _wait_for_state(workflow.id, "paused")
    page = watched.page
    page.goto(f"{live}/workflows/{workflow.id}")
    highlighted = page.locator(".failure .geneva-source .hll")
    assert highlighted.count() == 1
    assert "raise BankRejected" in highlighted.inner_text()
    assert "account closed" in page.locator(".failure .error-message").inner_text()
    assert page.locator('g.node.focus[data-step="transfer"][data-state="failed"]').count() == 1
    assert page.locator('button[data-op="resume"]').is_visible()


class ReminderWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait=timedelta(hours=1))
    def remind(self) -> None:
        pass


def test_the_list_runs_a_bulk_pause_with_preview_and_swaps_the_changed_rows(watched, live):
    reminders = [ReminderWorkflow.create(hero=_refund()) for _ in range(3)]
    page = watched.page
    page.goto(f"{live}/classes/ReminderWorkflow")
    page.evaluate("window.__notReloaded = true")
    for workflow in reminders[:2]:
        page.check(f'input[name="ids"][value="{workflow.id}"]')
    page.click('button[name="op"][value="pause"]')
    assert page.locator(".bulk-preview .bulk-count").inner_text() == "2"
    _wait_for_state(reminders[0].id, "ready")  # the preview changed nothing
    page.click('button[data-confirm="pause"]')
    assert page.locator('[data-mode="done"] strong.bulk-done').inner_text() == "2"
    for workflow in reminders[:2]:
        _wait_for_state(workflow.id, "paused")
        # The row poll swaps the changed rows in place.
        page.locator(f'#geneva-row-{workflow.id} .badge[data-state="paused"]').wait_for()
    assert page.locator(f"#geneva-row-{reminders[2].id} .badge").get_attribute("data-state") == (
        "ready"
    )
    assert page.evaluate("window.__notReloaded") is True
    assert watched.violations() == []


def test_select_all_dismiss_and_a_confirmed_cancel_work_under_the_policy(watched, live):
    reminders = [ReminderWorkflow.create(hero=_refund()) for _ in range(2)]
    page = watched.page
    page.goto(f"{live}/classes/ReminderWorkflow")
    page.check('input[data-geneva-select-all="ids"]')
    assert page.locator('input[name="ids"]:checked').count() == 2
    page.click('button[name="op"][value="cancel"]')
    assert page.locator(".bulk-preview .bulk-count").inner_text() == "2"
    page.click("button[data-geneva-dismiss]")  # the preview's Cancel: nothing happens
    page.locator(".bulk-preview").wait_for(state="detached")
    page.uncheck('input[data-geneva-select-all="ids"]')
    assert page.locator('input[name="ids"]:checked').count() == 0
    # The detail page's cancel button asks first (hx-confirm; the dialog is accepted).
    page.goto(f"{live}/workflows/{reminders[0].id}")
    page.click('button[data-op="cancel"]')
    page.locator('#geneva-status .badge[data-state="canceled"]').wait_for()
    _wait_for_state(reminders[0].id, "canceled")
    _wait_for_state(reminders[1].id, "ready")
    # htmx injected no <style> of its own, and the timeline draws without inline styles.
    assert page.evaluate("document.querySelectorAll('style').length") == 0
    assert page.locator(".tl-track rect.tl-seg").count() >= 3
    assert watched.violations() == []


class SettlementWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def submit(self) -> None:
        pass

    @step(wait_for="settled", timeout=timedelta(days=3))
    def record(self) -> None:
        assert self.received_signal is not None

    @step
    def close(self) -> None:
        pass


def test_a_signal_sent_through_the_form_wakes_the_waiting_step(watched, live):
    workflow = SettlementWorkflow.create(hero=_refund())
    page = watched.page
    page.goto(f"{live}/workflows/{workflow.id}")
    page.evaluate("window.__notReloaded = true")
    page.locator('g.node[data-step="record"][data-state="waiting"]').wait_for()
    reasons = page.locator("#geneva-status .reasons")
    reasons.get_by_text("step `record` is waiting for signal `settled` since").wait_for()
    assert "(times out in 2 d)" in reasons.inner_text()

    form = page.locator("#geneva-send-signal")
    form.locator('input[name="name"]').fill("settled")
    form.locator('textarea[name="payload"]').fill('{"note": "' + "<b>x</b>" * 20 + '"}')
    form.locator('input[name="idempotency_key"]').fill("bank-17")
    # The answer's message is read from the answer itself: the worker may finish the
    # workflow so fast that the next poll clears the message (stale once the state moved
    # on) before a locator sees it.
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/signal")
    ) as answer:
        form.locator('button[data-form="signal"]').click()
    assert answer.value.status == 200
    assert "flash-success" in answer.value.text()
    assert "woke step &#39;record&#39;" in answer.value.text() or (
        "woke step 'record'" in answer.value.text()
    )

    page.locator('#geneva-status .badge[data-state="finished"]').wait_for(timeout=10_000)
    _wait_for_state(workflow.id, "finished")
    assert page.locator('g.node[data-step="record"][data-state="completed"]').count() == 1
    row = page.locator("#geneva-signals tr[data-signal]")
    assert row.count() == 1
    assert "bank-17" in row.inner_text() and "record" in row.locator(".consumed").inner_text()
    preview = row.locator(".payload details")
    assert not preview.locator("pre").is_visible()
    preview.locator("summary").click()  # expands without any script of ours
    assert ("<b>x</b>" * 20) in preview.locator("pre").inner_text()
    assert page.locator("#geneva-signals b").count() == 0  # escaped, never markup
    assert page.evaluate("window.__notReloaded") is True
    assert watched.violations() == []


class BatchWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """A map step over 12 rows, two at a time, and one long output."""

    @step
    def split(self) -> list[int]:
        return list(range(12))

    @step(for_each="split", max_parallel=2)
    def load(self) -> dict[str, Any]:
        return {"row": self.item, "note": "<script>window.__pwned = true</script>"}

    @step
    def report(self, load: list[Any]) -> list[Any]:
        return load


def test_a_map_shows_its_progress_and_an_output_expands(watched, live):
    workflow = BatchWorkflow.create()
    _wait_for_state(workflow.id, "finished")
    page = watched.page
    page.goto(f"{live}/workflows/{workflow.id}")
    node = page.locator('g.node[data-step="load"]')
    assert node.get_attribute("data-state") == "completed"
    assert node.locator("text.progress").text_content() == "12/12 done"
    # Items are collapsed under their step: opening the map's row lists the first 12.
    items_row = page.locator('tr.map-row[data-map="load"]')
    assert not page.locator('tr[data-item="3"]').is_visible()
    items_row.locator("summary").first.click()
    assert page.locator('tr[data-item="3"]').is_visible()
    # The report's output is a long list: a cut line that expands into the whole value.
    report = page.locator("tr[data-execution]", has_text="report").first
    value = report.locator("details.output-value")
    assert value.locator("summary").inner_text().endswith("…")
    assert not value.locator("pre").is_visible()
    value.locator("summary").click()
    assert value.locator("pre").is_visible()
    assert "<script>window.__pwned = true</script>" in value.locator("pre").inner_text()
    assert page.evaluate("window.__pwned") is None
    page.locator('a:text("all items")').click()
    page.wait_for_url("**/steps/load/items")
    assert page.locator("#geneva-progress").inner_text() == "12/12 done"
    page.locator('a[data-filter="done"]').click()
    assert page.locator("tr[data-item]").count() == 12


def test_a_rerun_from_a_graph_node_with_its_preview_and_the_audit_in_the_timeline(
    watched, live, app
):
    # The hook answers with the operator's name: the actions record it.
    app.config["GENEVA_ADMIN_AUTHORIZE"] = lambda action: "ops@example.com"
    release.set()
    workflow = RefundWorkflow.create(hero=_refund())
    _wait_for_state(workflow.id, "finished")
    page = watched.page
    page.goto(f"{live}/workflows/{workflow.id}")
    # Click a node of the graph: the plan shows, nothing has changed yet.
    page.click('a.node-link g.node[data-step="notify_customer"]')
    plan = page.locator('.rerun-plan[data-step="notify_customer"]')
    plan.wait_for()
    assert plan.locator("code.rerun-step").all_inner_texts() == ["notify_customer", "close"]
    assert "check" in plan.inner_text() and "wait_for_bank" in plan.inner_text()
    assert committed.state(workflow.id) == "finished"
    plan.locator('input[name="reason"]').fill("customer mail bounced")
    plan.locator('button[data-op="rerun_from"]').click()  # confirmed (the dialog is accepted)
    # The page follows the rerun to its end without a reload.
    page.locator('#geneva-status .badge[data-state="finished"]').wait_for(timeout=10_000)
    page.locator(".executions tr.superseded").first.wait_for()
    assert page.locator(".executions tr.superseded").count() == 2
    entry = page.locator('.audit li[data-action="rerun_from"]')
    entry.wait_for()
    text = entry.inner_text()
    assert text.startswith("rerun from step notify_customer by ops@example.com at ")
    assert "customer mail bounced" in text and "re-runs notify_customer, close" in text
    assert page.locator(".tl-audit rect.tl-mark").count() == 1
    # The actor's name filters the list to the workflows they acted on.
    other = RefundWorkflow.create(hero=_refund())
    entry.locator("a").click()
    page.wait_for_url(lambda url: "actor=ops" in url)
    ids = page.locator('input[name="ids"]').evaluate_all("boxes => boxes.map(b => b.value)")
    assert ids == [str(workflow.id)] and str(other.id) not in ids
    assert watched.violations() == []


def test_the_overview_follows_the_fleet_without_a_reload(watched, live):
    page = watched.page
    page.goto(f"{live}/")
    page.evaluate("window.__notReloaded = true")
    ready = page.locator('tr[data-type="PayoutWorkflow"] a[data-state="paused"]')
    assert ready.count() == 0
    for _ in range(3):
        PayoutWorkflow.create()  # the worker runs validate, then transfer fails: paused
    ready.wait_for(timeout=10_000)
    wait_until(lambda: ready.inner_text() == "3", timeout=10, message=lambda: ready.inner_text())
    group = page.locator('tr[data-failure-group^="PayoutWorkflow:transfer:"]')
    group.wait_for()
    assert group.locator(".failure-count").inner_text() == "3"
    assert page.evaluate("window.__notReloaded") is True
    assert watched.violations() == []


def _background(page: Any) -> str:
    return str(page.evaluate("getComputedStyle(document.body).backgroundColor"))


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(browser, live):
    light = browser.new_page(color_scheme="light")
    light.goto(f"{live}/")
    assert _background(light) == "rgb(255, 255, 255)"
    light.click("button[data-geneva-theme]")
    assert light.evaluate("document.documentElement.dataset.theme") == "dark"
    assert _background(light) == "rgb(13, 17, 23)"
    light.reload()  # the choice is kept by the browser
    assert _background(light) == "rgb(13, 17, 23)"
    light.click("button[data-geneva-theme]")
    assert _background(light) == "rgb(255, 255, 255)"
    light.close()
    dark = browser.new_page(color_scheme="dark")
    dark.goto(f"{live}/")
    assert _background(dark) == "rgb(13, 17, 23)"  # no toggle pressed: the system's
    dark.close()


def test_keyboard_moves_through_rows_opens_one_and_shows_help(watched, live):
    workflows = [ReminderWorkflow.create(hero=_refund()) for _ in range(3)]
    page = watched.page
    page.goto(f"{live}/classes/ReminderWorkflow")
    help_box = page.locator("#geneva-kb-help")
    assert help_box.is_hidden()
    page.keyboard.press("?")
    assert help_box.is_visible()
    page.keyboard.press("Escape")
    assert help_box.is_hidden()
    page.keyboard.press("j")
    page.keyboard.press("j")
    current = page.locator("tr.kb-current")
    assert current.count() == 1
    second = str(workflows[1].id)  # newest first: the second row is the middle one
    assert current.locator('input[name="ids"]').get_attribute("value") == second
    page.keyboard.press("k")
    assert page.locator('tr.kb-current input[name="ids"]').get_attribute("value") == str(
        workflows[2].id
    )
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.closest('#geneva-filters') !== null")
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/workflows/{workflows[1].id}")
    assert watched.violations() == []


#: The elements that reach past the viewport's right edge (for the failure message).
WIDEST = """[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > innerWidth + 1)
  .slice(0, 5)
  .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""


def test_at_a_phone_s_width_no_page_scrolls_sideways(browser, live):
    workflow = PayoutWorkflow.create()
    _wait_for_state(workflow.id, "paused")
    page = browser.new_page(viewport={"width": 390, "height": 844})
    for path in ("/", "/workflows", f"/workflows/{workflow.id}", "/definitions"):
        page.goto(f"{live}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        widest = page.evaluate(WIDEST)
        assert width <= 390, f"{path} is {width} px wide at 390 px: {widest}"
    page.close()


def test_the_fleet_charts_render_with_data(watched, live):
    workflows = [PayoutWorkflow.create() for _ in range(3)]
    for workflow in workflows:
        _wait_for_state(workflow.id, "paused")
    page = watched.page
    page.goto(f"{live}/fleet?window=1h")
    row = page.locator('tr[data-step="PayoutWorkflow:transfer"]')
    assert row.locator("td[data-runs]").get_attribute("data-runs") == "3"
    assert row.locator("td[data-failure-rate]").get_attribute("data-failure-rate") == "1.0"
    widths = row.locator("svg.bar rect").evaluate_all("rs => rs.map(r => r.getBBox().width)")
    assert len(widths) == 3 and widths[0] > 0  # the runs bar is drawn
    share = page.locator('tr[data-type="PayoutWorkflow"] svg.bar rect').evaluate(
        "r => r.getBBox().width"
    )
    assert share == 100  # every ongoing PayoutWorkflow is paused
    page.click('a[href="?window=24h"]')
    page.wait_for_url("**/fleet?window=24h")
    assert page.locator('.windows a[aria-current="page"]').inner_text() == "24h"
    assert watched.violations() == []
