"""The console's finding and deciding in real headless Chromium: the list's filters and
error search, the overview's failure groups leading to their workflows, and the Skip
button's confirmation. On each database, against a real server (and a real worker
where steps should run on their own).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import browser_helpers
import pytest
import sqlalchemy as sa
from browser_helpers import wait_for_state
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import travel

#: ``browser`` and also ``slow``: the quick loop (``-m "not slow"``) leaves them out.
pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: The shared fixtures, bound in this module: pytest finds a module's fixtures by name.
browser = browser_helpers.browser
watched = browser_helpers.watched
live = browser_helpers.live
served = browser_helpers.served

db = SQLAlchemy()
geneva = Geneva(db)

APP_CONFIG = {"GENEVA_ADMIN_POLL_INTERVAL": 0.3}

committed = Committed(geneva)


def _listed(page: Any) -> list[int]:
    """The ids of the list's rows, in their order (newest first)."""
    values = page.locator('input[name="ids"]').evaluate_all("boxes => boxes.map(b => b.value)")
    return [int(v) for v in values]


def _newest_first(*workflows: Any) -> list[int]:
    return sorted((w.id for w in workflows), reverse=True)


class Busy(Exception):
    pass


class DiskWriter(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def write(self) -> None:
        raise RuntimeError("disk full on /var")


class QuotaCheck(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def check(self) -> None:
        raise RuntimeError("quota exceeded for tenant 7")


class FlakyCall(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(on_exception=ExceptionPolicy("reattempt", wait=600, max_reattempts=5))
    def call(self) -> None:
        raise Busy("gateway busy")


class Errand(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def only(self) -> None:
        pass


def test_the_list_filters_by_error_text_attention_and_state_and_clears(watched, served):
    # No worker: each step runs here, when the test says.
    disks = [DiskWriter.create() for _ in range(2)]
    quota = QuotaCheck.create()
    for workflow in [*disks, quota]:
        with pytest.raises(RuntimeError):
            perform_next_step(workflow)  # failed: paused
    flaky = FlakyCall.create()
    with pytest.raises(Busy):
        perform_next_step(flaky)  # its next attempt is due in 10 min
    due = Errand.create()  # due now, and no worker takes it
    held = Errand.create()
    held.pause()  # its due step waits for resume: never overdue
    everyone = _newest_first(*disks, quota, flaky, due, held)
    page = watched.page
    page.goto(f"{served}/workflows")
    assert _listed(page) == everyone
    form = page.locator("#geneva-filters")

    # The error text, in another case than the message's, finds the two disk failures.
    form.locator('input[name="error"]').fill("DISK FULL")
    form.locator('button[type="submit"]').click()
    page.wait_for_url("**/workflows?*error=DISK+FULL*")
    assert _listed(page) == _newest_first(*disks)
    assert page.locator(".list-total").get_attribute("data-total") == "2"
    assert form.locator('input[name="error"]').input_value() == "DISK FULL"
    assert "disk full on /var" in page.locator("#geneva-rows").inner_text()

    # Running but failing: the workflow whose step reattempts, and no failure that stays.
    form.locator('input[name="error"]').fill("")
    form.locator('select[name="attention"]').select_option(label="running but failing")
    form.locator('button[type="submit"]').click()
    page.wait_for_url("**/workflows?*attention=reattempting*")
    assert _listed(page) == [flaky.id]
    assert form.locator('select[name="attention"]').input_value() == "reattempting"
    assert form.locator('input[name="error"]').input_value() == ""

    with travel(timedelta(hours=2)):  # the server reads the same clock
        # Two hours on, the reattempt and the errand no worker took are overdue; the
        # paused errand is not. The class narrows it to the errand.
        form.locator('select[name="attention"]').select_option("overdue")
        form.locator('button[type="submit"]').click()
        page.wait_for_url("**/workflows?*attention=overdue*")
        assert _listed(page) == _newest_first(flaky, due)
        form.locator('select[name="type"]').select_option("Errand")
        form.locator('button[type="submit"]').click()
        page.wait_for_url("**/workflows?*type=Errand*")
        assert _listed(page) == [due.id]
        assert form.locator('select[name="attention"]').input_value() == "overdue"
        assert form.locator('select[name="type"]').input_value() == "Errand"

    # A state and the error text together; the state stays checked.
    form.locator('select[name="attention"]').select_option("")
    form.locator('select[name="type"]').select_option("")
    form.locator('input[name="state"][value="paused"]').check()
    form.locator('button[type="submit"]').click()
    page.wait_for_url("**/workflows?*state=paused*")
    assert _listed(page) == _newest_first(*disks, quota, held)
    form.locator('input[name="error"]').fill("quota")
    form.locator('button[type="submit"]').click()
    page.wait_for_url("**/workflows?*error=quota*")
    assert _listed(page) == [quota.id]
    checked = form.locator('input[name="state"]:checked')
    assert checked.evaluate_all("bs => bs.map(b => b.value)") == ["paused"]
    form.locator('input[name="state"][value="paused"]').uncheck()
    form.locator('input[name="state"][value="ready"]').check()
    form.locator('button[type="submit"]').click()
    page.wait_for_url("**/workflows?*state=ready*")
    assert _listed(page) == []  # no ready workflow failed on a quota
    assert page.locator(".list-total").get_attribute("data-total") == "0"

    # "clear" drops every filter: all of them again, and an empty form.
    form.get_by_role("link", name="clear").click()
    page.wait_for_url(lambda url: "error=" not in url and "state=" not in url)
    assert _listed(page) == everyone
    assert form.locator('input[name="error"]').input_value() == ""
    assert form.locator('select[name="attention"]').input_value() == ""
    assert form.locator('input[name="state"]:checked').count() == 0


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "adminc_accounts"
    id = sa.Column(sa.Integer, primary_key=True)
    amount = sa.Column(sa.Integer, nullable=False)


class BankRejected(Exception):
    pass


class Transfer(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Fails at ``validate`` for an empty account, else at ``send``."""

    @step
    def validate(self) -> None:
        if not self.hero.amount:
            raise ValueError("nothing to transfer")

    @step
    def send(self) -> None:
        raise BankRejected(f"IBAN rejected for account {self.hero.id}")


def _account(amount: int) -> Account:
    account = Account(amount=amount)
    db.session.add(account)
    db.session.commit()
    return account


def test_a_failure_group_s_count_leads_to_exactly_its_workflows(watched, live):
    rejected = [Transfer.create(hero=_account(42)) for _ in range(3)]
    empty = Transfer.create(hero=_account(0))
    for workflow in [*rejected, empty]:
        wait_for_state(committed, workflow.id, "paused")  # the worker ran it to its failure
    page = watched.page
    page.goto(f"{live}/")
    groups = page.locator('tr[data-failure-group^="Transfer:"]')
    keys = groups.evaluate_all("rows => rows.map(r => r.dataset.failureGroup)")
    # One group per (class, step, error class); a class of ours is named with its module.
    assert sorted(keys) == [
        "Transfer:send:test_admin_browser_console.BankRejected",
        "Transfer:validate:ValueError",
    ]
    sent = page.locator('tr[data-failure-group^="Transfer:send:"]')
    validated = page.locator('tr[data-failure-group^="Transfer:validate:"]')
    assert sent.locator(".failure-count").inner_text() == "3"
    assert validated.locator(".failure-count").inner_text() == "1"
    assert "IBAN rejected" in sent.locator(".message").inner_text()

    sent.locator(".failure-count").click()
    page.wait_for_url("**/classes/Transfer?*")
    assert "state=paused" in page.url and "step=send" in page.url
    assert _listed(page) == _newest_first(*rejected)
    form = page.locator("#geneva-filters")
    assert form.locator('select[name="step"]').input_value() == "send"
    assert form.locator('input[name="state"]:checked').evaluate_all(
        "bs => bs.map(b => b.value)"
    ) == ["paused"]

    page.go_back()
    validated.locator(".failure-count").click()
    page.wait_for_url("**/classes/Transfer?*step=validate*")
    assert _listed(page) == [empty.id]


class Reminder(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step(wait=timedelta(hours=1))
    def remind(self) -> None:
        pass

    @step
    def close(self) -> None:
        pass


def test_skip_asks_first_and_only_an_ok_skips_the_step(watched, live):
    workflow = Reminder.create()
    page = watched.page
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url}"))
    page.goto(f"{live}/workflows/{workflow.id}")
    page.evaluate("window.__notReloaded = true")
    button = page.locator('button[data-op="skip"]')
    assert button.inner_text() == "Skip remind"

    watched.answer = False  # the operator thinks again
    button.click()
    assert watched.dialogs == [
        f"Skip step remind of workflow #{workflow.id}? It will not run; the steps after it go on."
    ]
    # Nothing was sent (htmx would have sent it before the page's next poll), nothing
    # changed: the step still waits for its hour.
    with page.expect_request(lambda r: r.method == "GET"):
        pass
    assert [r for r in sent if r.startswith("POST")] == []
    assert committed.state(workflow.id) == "ready"
    assert committed.history(workflow.id, "remind") == [("remind", "scheduled", None)]
    assert page.locator('g.node[data-step="remind"]').get_attribute("data-state") == "scheduled"
    assert button.is_visible()

    watched.answer = True
    button.click()
    assert len(watched.dialogs) == 2
    # Skipped, and the worker goes on with the step after it; the page follows.
    page.locator('#geneva-status .badge[data-state="finished"]').wait_for(timeout=10_000)
    wait_for_state(committed, workflow.id, "finished")
    assert [r for r in sent if r.startswith("POST")] == [
        f"POST {live}/workflows/{workflow.id}/skip"
    ]
    assert committed.history(workflow.id, "remind") == [("remind", "skipped", "skipped")]
    assert committed.history(workflow.id, "close") == [("close", "completed", "success")]
    assert page.locator('g.node[data-step="remind"]').get_attribute("data-state") == "skipped"
    assert page.locator('button[data-op="skip"]').count() == 0
    assert page.evaluate("window.__notReloaded") is True
