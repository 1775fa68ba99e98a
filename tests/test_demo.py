"""The demo app boots, and each of its workflows runs to the end with a real worker.

The demo runs as shipped (SQLite in its instance folder, SqliteHuey), with a Huey
consumer in this process and demo time scaled near zero (``DEMO_TIME_SCALE``), so
the drip's "days" and the gateway's delays take milliseconds. What remains is Huey's
scheduler tick (1 s) for each delayed step.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import clock
from flask_geneva.testing import assert_waiting_for
from flask_geneva.testing import travel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Read when demo_app.timing is imported: the workflows' waits are class definitions.
os.environ["DEMO_TIME_SCALE"] = "0.01"

from demo_app import create_app  # noqa: E402
from demo_app import fakes  # noqa: E402
from demo_app.models import BankDelays  # noqa: E402
from demo_app.models import BankSwitches  # noqa: E402
from demo_app.models import BankWebhook  # noqa: E402
from demo_app.models import Document  # noqa: E402
from demo_app.models import GatewayCall  # noqa: E402
from demo_app.models import GatewayCharge  # noqa: E402
from demo_app.models import Mail  # noqa: E402
from demo_app.models import Reconciliation  # noqa: E402
from demo_app.models import SearchEntry  # noqa: E402
from demo_app.models import Settlement  # noqa: E402
from demo_app.models import Switches  # noqa: E402
from demo_app.models import Transfer  # noqa: E402
from demo_app.models import User  # noqa: E402
from demo_app.models import db  # noqa: E402
from demo_app.models import geneva  # noqa: E402
from demo_app.timing import seconds  # noqa: E402
from demo_app.workflows import BANK_TIMEOUT  # noqa: E402
from demo_app.workflows import Reconcile  # noqa: E402
from demo_app.workflows import TransferWorkflow  # noqa: E402

HAS_ADMIN = (ROOT / "flask_geneva" / "admin" / "__init__.py").exists()
TERMINAL = ("finished", "canceled")

#: A real consumer and its scheduler tick, and the demo command as a process.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The demo app on a fresh instance folder, with a worker consuming its queue."""
    instance = tmp_path_factory.mktemp("demo-instance")
    app = create_app(
        {
            "INSTANCE_PATH": str(instance),
            "TESTING": True,
            "GENEVA_HUEY_NAME": f"demo-{uuid.uuid4().hex[:8]}",
            # The tests press "bank settles"; those about the bank's own post turn it on.
            "DEMO_BANK_POSTS": False,
        }
    )
    assert (instance / "demo.db").exists(), "the first run creates the database"
    huey = app.extensions["geneva"].huey
    try:
        with running_consumer(huey, workers=4, periodic=False):
            yield app
    finally:
        with app.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()


@pytest.fixture
def client(demo: Flask) -> Iterator[FlaskClient]:
    with demo.app_context():
        switches = db.session.get(Switches, 1)
        switches.gateway_down = switches.mail_down = False
        switches.random_faults = False  # each test turns on the faults it means
        db.session.get(BankSwitches, 1).duplicate_webhooks = False
        delays = db.session.get(BankDelays, 1)
        delays.bank_slow = delays.bank_silent = False
        db.session.commit()
        yield demo.test_client()
        db.session.remove()


@pytest.fixture
def bank_posts(demo: Flask) -> Iterator[None]:
    """The fake bank posts its settlement webhook by itself, as in the running demo."""
    demo.config["DEMO_BANK_POSTS"] = True
    try:
        yield
    finally:
        demo.config["DEMO_BANK_POSTS"] = False


def latest(model: Any) -> Any:
    return db.session.scalars(sa.select(model).order_by(model.id.desc()).limit(1)).one()


def workflow_of(hero: Any) -> Any:
    w = geneva.Workflow
    return db.session.scalars(
        sa.select(w).where(w.hero_type == type(hero).__name__, w.hero_id == str(hero.id))
    ).one()


def reread(workflow: Any) -> Any:
    """``workflow`` as committed now: the read snapshot ended, the worker's commits seen."""
    db.session.rollback()
    db.session.refresh(workflow)
    return workflow


def wait_for(workflow: Any, states: tuple[str, ...] = TERMINAL, timeout: float = 20) -> Any:
    """Poll until the worker has brought ``workflow`` to one of ``states``."""

    def failure() -> str:
        steps = [(e.step_name, e.state, e.outcome) for e in workflow.executions]
        return f"{workflow} did not reach {states}; executions: {steps}"

    wait_until(lambda: reread(workflow).state in states, timeout=timeout, message=failure)
    return workflow


def executions(workflow: Any, step: str) -> list[tuple[str, str]]:
    return [(e.state, e.outcome) for e in workflow.executions if e.step_name == step]


def assert_admin_shows(client: FlaskClient, workflow: Any, *texts: str) -> None:
    if not HAS_ADMIN:
        return
    response = client.get(f"/admin/workflows/workflows/{workflow.id}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for text in (type(workflow).__name__, *texts):
        assert text in page


def bank_settles(client: FlaskClient, transfer: Any) -> None:
    """Press "bank settles" once the transfer is charged (the button shows only then)."""
    wait_until(
        lambda: reread(transfer).status == "charged",
        timeout=20,
        message=lambda: f"transfer {transfer.id} was never charged: {transfer.status}",
        interval=0.02,
    )
    assert client.post(f"/transfers/{transfer.id}/settle").status_code == 302


def key_with_luck(*wanted: Callable[[float], bool]) -> str:
    """A transfer reference whose first gateway calls draw the luck ``wanted`` describes."""
    for n in range(100_000):
        key = f"demo-test-{n}"
        if all(ok(fakes.draw(key, calls)) for calls, ok in enumerate(wanted)):
            return key
    raise AssertionError("no key found")


def test_home_page_offers_each_workflow_and_links_to_the_admin(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    for text in ("Money transfer", "Onboarding drip", "Document pipeline", "Start 100 transfers"):
        assert text in page
    assert ('href="/admin/workflows/"' in page) is HAS_ADMIN


def test_a_rate_limited_then_timed_out_charge_is_made_once_and_confirmed(
    client: FlaskClient,
) -> None:
    # Rate limited (reattempt after retry-after), then charged but timed out (policy
    # reattempt), then asked again with the same key: the gateway replays the charge.
    key = key_with_luck(
        lambda luck: luck < 0.25, lambda luck: 0.25 <= luck < 0.40, lambda luck: 0.40 <= luck
    )
    client.post("/switches/random_faults")
    transfer = Transfer(recipient="ada@demo.test", amount_cents=12_500, reference=key)
    db.session.add(transfer)
    db.session.commit()
    workflow = TransferWorkflow.create(hero=transfer)
    bank_settles(client, transfer)
    wait_for(workflow)
    key = workflow.idempotency_key_for("charge")  # what the gateway was sent

    assert workflow.state == "finished"
    charge_results = db.session.scalars(
        sa.select(GatewayCall.result)
        .where(GatewayCall.idempotency_key == key, GatewayCall.operation == "charge")
        .order_by(GatewayCall.id)
    ).all()
    assert charge_results == [
        "429 rate limited",
        "201 charged, but the answer timed out",
        "200 replayed (already charged)",
    ]
    charges = db.session.scalars(
        sa.select(GatewayCharge).where(GatewayCharge.idempotency_key == key)
    ).all()
    assert [c.status for c in charges] == ["settled"]
    assert executions(workflow, "charge") == [
        ("completed", "reattempted"),
        ("completed", "reattempted"),
        ("completed", "success"),
    ]
    db.session.refresh(transfer)
    assert transfer.status == "confirmed"
    assert transfer.charge_id == charges[0].id
    mails = db.session.scalars(sa.select(Mail).where(Mail.to == "ada@demo.test")).all()
    assert [m.subject for m in mails] == ["You received 125.00 EUR"]
    assert_admin_shows(client, workflow, "record_settlement", "send_confirmation")


def test_gateway_down_pauses_the_transfer_with_its_error_until_resumed(
    client: FlaskClient,
) -> None:
    client.post("/switches/gateway_down")
    client.post("/transfers", data={"recipient": "grace@demo.test", "amount": "42"})
    workflow = wait_for(workflow_of(latest(Transfer)), ("paused",))

    failed = [e for e in workflow.executions if e.state == "failed"]
    assert [e.step_name for e in failed] == ["charge"]
    assert failed[0].error_class.endswith("GatewayUnavailable")
    assert "charge_id = fakes.charge(" in failed[0].error_traceback
    assert_admin_shows(client, workflow, "503 Service Unavailable")

    client.post("/switches/gateway_down")
    workflow.resume()
    bank_settles(client, latest(Transfer))
    wait_for(workflow)
    assert workflow.state == "finished"
    assert executions(workflow, "charge")[-1] == ("completed", "success")


def test_a_mail_outage_reattempts_only_the_confirmation_never_the_charge(
    client: FlaskClient,
) -> None:
    client.post("/switches/mail_down")
    client.post("/transfers", data={"recipient": "alan@demo.test", "amount": "7"})
    transfer = latest(Transfer)
    bank_settles(client, transfer)
    workflow = wait_for(workflow_of(transfer), ("paused",))
    # Three reattempts, then the policy's terminal action: pause.
    assert [outcome for _, outcome in executions(workflow, "send_confirmation")] == [
        "reattempted",
        "reattempted",
        "reattempted",
        "failed",
    ]

    client.post("/switches/mail_down")
    workflow.resume()
    wait_for(workflow)
    assert workflow.state == "finished"
    assert executions(workflow, "charge") == [("completed", "success")]
    charges = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(GatewayCharge)
        .where(GatewayCharge.idempotency_key == workflow.idempotency_key_for("charge"))
    )
    assert charges == 1
    assert db.session.scalar(sa.select(sa.func.count()).where(Mail.to == "alan@demo.test")) == 1


def test_a_transfer_waits_for_the_bank_and_a_webhook_sent_twice_settles_it_once(
    client: FlaskClient,
) -> None:
    client.post("/switches/duplicate_webhooks")
    client.post("/transfers", data={"recipient": "radia@demo.test", "amount": "30"})
    transfer = latest(Transfer)
    workflow = workflow_of(transfer)
    wait_until(
        lambda: [s for s, _ in executions(reread(workflow), "record_settlement")] == ["waiting"],
        timeout=20,
        message="the transfer never started waiting for the bank",
        interval=0.02,
    )
    assert_waiting_for(workflow, "settled")
    assert workflow.state == "ready"  # waiting holds no worker and no queued message
    assert_admin_shows(client, workflow, "record_settlement")

    bank_settles(client, transfer)
    wait_for(workflow)

    assert workflow.state == "finished"
    assert executions(workflow, "record_settlement") == [("completed", "success")]
    hooks = db.session.scalars(
        sa.select(BankWebhook)
        .where(BankWebhook.transfer_id == transfer.id)
        .order_by(BankWebhook.id)
    ).all()
    assert [h.result for h in hooks] == ["signal stored", "duplicate: already received"]
    assert hooks[0].delivery_id == hooks[1].delivery_id
    settlements = db.session.scalars(
        sa.select(Settlement).where(Settlement.transfer_id == transfer.id)
    ).all()
    assert [s.delivery_id for s in settlements] == [hooks[0].delivery_id]
    db.session.refresh(transfer)
    assert transfer.status == "confirmed"
    mails = db.session.scalars(sa.select(Mail.subject).where(Mail.to == "radia@demo.test")).all()
    assert mails == ["You received 30.00 EUR"]


def test_a_transfer_the_bank_never_settles_pauses_when_its_wait_times_out(
    client: FlaskClient,
) -> None:
    client.post("/transfers", data={"recipient": "margaret@demo.test", "amount": "12"})
    workflow = workflow_of(latest(Transfer))
    wait_until(
        lambda: [s for s, _ in executions(reread(workflow), "record_settlement")] == ["waiting"],
        timeout=20,
        message="the transfer never started waiting for the bank",
        interval=0.02,
    )
    waiting = next(e for e in workflow.executions if e.step_name == "record_settlement")
    with travel(BANK_TIMEOUT + timedelta(seconds=1)):
        geneva.execute(waiting.id)  # what the timeout's Huey message runs at the due time
    wait_for(workflow, ("paused",))
    failed = [e for e in workflow.executions if e.step_name == "record_settlement"]
    assert [e.state for e in failed] == ["failed"]
    assert "settled" in (failed[0].error_message or "")
    assert db.session.scalar(sa.select(sa.func.count()).where(Mail.to == "margaret@demo.test")) == 0


def webhooks_for(transfer: Any) -> list[Any]:
    return list(
        db.session.scalars(
            sa.select(BankWebhook)
            .where(BankWebhook.transfer_id == transfer.id)
            .order_by(BankWebhook.id)
        )
    )


def charge_of(workflow: Any) -> Any:
    key = workflow.idempotency_key_for("charge")
    return db.session.scalars(
        sa.select(GatewayCharge).where(GatewayCharge.idempotency_key == key)
    ).one()


def test_the_bank_posts_its_settlement_webhook_by_itself_a_few_seconds_after_the_charge(
    client: FlaskClient, bank_posts: None
) -> None:
    client.post("/transfers", data={"recipient": "guido@demo.test", "amount": "15"})
    transfer = latest(Transfer)
    workflow = wait_for(workflow_of(transfer))  # nobody presses "bank settles"

    assert workflow.state == "finished"
    assert executions(workflow, "record_settlement") == [("completed", "success")]
    hooks = webhooks_for(transfer)
    assert [h.result for h in hooks] == ["signal stored"]
    charge = charge_of(workflow)
    assert charge.status == "settled"
    assert hooks[0].at - charge.created_at >= timedelta(seconds=seconds(fakes.POST_AFTER))
    # A late press of the button finds the charge settled: the bank sends nothing more.
    assert client.post(f"/transfers/{transfer.id}/settle").status_code == 302
    assert len(webhooks_for(transfer)) == 1
    db.session.refresh(transfer)
    assert transfer.status == "confirmed"


def test_a_slow_bank_posts_long_after_the_charge_and_the_transfer_still_settles(
    client: FlaskClient, bank_posts: None
) -> None:
    assert client.post("/switches/bank_slow").status_code == 302
    client.post("/transfers", data={"recipient": "edsger@demo.test", "amount": "16"})
    transfer = latest(Transfer)
    workflow = wait_for(workflow_of(transfer))

    assert workflow.state == "finished"
    hooks = webhooks_for(transfer)
    assert [h.result for h in hooks] == ["signal stored"]
    slow = timedelta(seconds=seconds(fakes.SLOW_POST_AFTER))
    assert hooks[0].at - charge_of(workflow).created_at >= slow
    assert slow > timedelta(seconds=seconds(fakes.POST_AFTER))


def test_a_bank_set_to_duplicate_posts_each_webhook_twice_by_itself(
    client: FlaskClient, bank_posts: None
) -> None:
    client.post("/switches/duplicate_webhooks")
    client.post("/transfers", data={"recipient": "ada.twice@demo.test", "amount": "17"})
    transfer = latest(Transfer)
    workflow = wait_for(workflow_of(transfer))

    assert workflow.state == "finished"
    hooks = webhooks_for(transfer)
    assert [h.result for h in hooks] == ["signal stored", "duplicate: already received"]
    assert hooks[0].delivery_id == hooks[1].delivery_id
    settled = db.session.scalar(
        sa.select(sa.func.count()).where(Settlement.transfer_id == transfer.id)
    )
    assert settled == 1


def test_a_silent_bank_never_posts_and_the_transfer_pauses_when_its_wait_times_out(
    client: FlaskClient, bank_posts: None
) -> None:
    assert client.post("/switches/bank_silent").status_code == 302
    status = client.get("/status").get_data(as_text=True)
    assert re.search(r'Bank silent:\s*<span class="on">on</span>', status)
    client.post("/transfers", data={"recipient": "grace.silent@demo.test", "amount": "18"})
    transfer = latest(Transfer)
    workflow = workflow_of(transfer)
    wait_until(
        lambda: [s for s, _ in executions(reread(workflow), "record_settlement")] == ["waiting"],
        timeout=20,
        message="the transfer never started waiting for the bank",
        interval=0.02,
    )
    key = workflow.idempotency_key_for("charge")
    huey = geneva.huey
    queued = [*huey.scheduled(), *huey.pending()]
    assert [t for t in queued if t.name == fakes.BANK_TASK and key in t.args] == []
    # Longer than a normal bank's delay and the scheduler's tick: still no word.
    threading.Event().wait(seconds(fakes.POST_AFTER) + 1.5)
    assert webhooks_for(transfer) == []
    assert_waiting_for(reread(workflow), "settled")

    waiting = next(e for e in workflow.executions if e.step_name == "record_settlement")
    with travel(BANK_TIMEOUT + timedelta(seconds=1)):
        geneva.execute(waiting.id)  # the timeout's own Huey message, at the due time
    wait_for(workflow, ("paused",))
    assert [e.state for e in workflow.executions if e.step_name == "record_settlement"] == [
        "failed"
    ]
    assert charge_of(workflow).status == "pending"  # the bank never settled it


def signals_of(workflow: Any) -> list[tuple[str, str | None, str | None]]:
    rows = db.session.execute(
        sa.text(
            "SELECT name, idempotency_key, consumed_step FROM geneva_signals"
            " WHERE workflow_id = :id ORDER BY id"
        ),
        {"id": workflow.id},
    )
    return [tuple(row) for row in rows]


def test_the_confirm_e_mail_click_is_the_signal_the_drip_waits_for_once_however_often(
    client: FlaskClient,
) -> None:
    client.post("/users", data={"name": "Radia"})
    user = latest(User)
    assert "confirm e-mail" in client.get("/status").get_data(as_text=True)
    for _ in range(2):  # a second click changes nothing
        assert client.post(f"/users/{user.id}/confirm-email").status_code == 302
    workflow = wait_for(workflow_of(user))

    assert workflow.state == "finished"
    assert executions(workflow, "confirm_email") == [("completed", "success")]
    key = f"confirm-email-{user.id}"
    assert signals_of(workflow) == [("email_confirmed", key, "confirm_email")]
    subjects = db.session.scalars(
        sa.select(Mail.subject).where(Mail.to == user.email).order_by(Mail.id)
    ).all()
    assert subjects == [
        "Welcome aboard",
        "Your e-mail is confirmed",
        "Three tips for your first week",
        "Your profile is almost done",
        "20% off the paid plan",
    ]


def test_without_the_click_the_drip_stops_waiting_at_its_timeout_and_goes_on(
    client: FlaskClient,
) -> None:
    client.post("/users", data={"name": "Alan"})
    user = latest(User)
    workflow = wait_for(workflow_of(user))  # the timeout's message skips the wait

    assert workflow.state == "finished"
    assert [s for s, _ in executions(workflow, "confirm_email")] == ["skipped"]
    assert signals_of(workflow) == []
    subjects = db.session.scalars(sa.select(Mail.subject).where(Mail.to == user.email)).all()
    assert "Your e-mail is confirmed" not in subjects
    assert "Three tips for your first week" in subjects
    # The drip is over: a late click has nothing to wake.
    assert client.post(f"/users/{user.id}/confirm-email").status_code == 409


def test_a_webhook_for_a_transfer_nobody_waits_for_is_refused_and_stores_nothing(
    client: FlaskClient,
) -> None:
    client.post("/transfers", data={"recipient": "linus@demo.test", "amount": "20000"})
    transfer = latest(Transfer)
    assert wait_for(workflow_of(transfer)).state == "canceled"  # over the limit: refused
    body = {"transfer_id": transfer.id, "settled_at": "2031-01-01T00:00:00"}
    response = client.post("/webhooks/bank", json=body, headers={"X-Delivery-Id": "bank-x"})
    assert response.status_code == 409
    assert client.post("/webhooks/bank", json=body).status_code == 400  # no delivery id
    db.session.refresh(transfer)
    assert transfer.status == "refused"
    hooks = db.session.scalar(
        sa.select(sa.func.count()).where(BankWebhook.transfer_id == transfer.id)
    )
    assert hooks == 0


def test_the_reconciliation_starts_once_at_its_five_minute_tick_and_shows_on_the_home_page(
    client: FlaskClient,
) -> None:
    # The latest five-minute tick already passed, so the started step is due at once.
    now = clock.now()
    tick = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    moment = tick + timedelta(seconds=1) if now - tick > timedelta(seconds=1) else now
    huey = geneva.huey
    with travel(moment - clock.now()):
        for _ in range(2):  # two workers run the periodic task in the same minute
            for task in huey.read_periodic(moment):
                if task.name == "geneva.schedules":
                    huey.execute(task)
    runs = db.session.scalars(sa.select(Reconcile)).all()
    assert len(runs) == 1
    wait_for(runs[0])
    assert runs[0].state == "finished"
    report = latest(Reconciliation)
    transfers = db.session.scalar(sa.select(sa.func.count()).select_from(Transfer))
    assert (report.transfers, report.mismatches) == (transfers, 0)
    page = client.get("/").get_data(as_text=True)
    assert f"{report.transfers} transfers" in page and "0 mismatches" in page


def test_the_onboarding_drip_skips_what_no_longer_applies(client: FlaskClient) -> None:
    client.post("/users", data={"name": "Barbara"})
    user = latest(User)
    client.post(f"/users/{user.id}/complete-profile")
    workflow = wait_for(workflow_of(user))

    assert workflow.state == "finished"
    assert executions(workflow, "remind_profile") == [("skipped", "skipped")]
    subjects = db.session.scalars(
        sa.select(Mail.subject).where(Mail.to == user.email).order_by(Mail.id)
    ).all()
    assert subjects == ["Welcome aboard", "Three tips for your first week", "20% off the paid plan"]
    assert_admin_shows(client, workflow, "remind_profile")


def test_deactivating_a_user_cancels_the_rest_of_the_drip(client: FlaskClient) -> None:
    client.post("/users", data={"name": "Ken"})
    user = latest(User)
    workflow = workflow_of(user)
    wait_until(
        lambda: executions(reread(workflow), "send_welcome") == [("completed", "success")],
        timeout=10,
        message="the welcome e-mail was never sent",
        interval=0.02,
    )
    # The next step waits a demo day (and at least Huey's scheduler tick).
    client.post(f"/users/{user.id}/deactivate")
    wait_for(workflow)

    assert workflow.state == "canceled"
    assert executions(workflow, "offer_upgrade") == []
    subjects = db.session.scalars(sa.select(Mail.subject).where(Mail.to == user.email)).all()
    assert "Welcome aboard" in subjects
    assert "20% off the paid plan" not in subjects


def test_the_document_dag_fans_out_and_joins_before_publishing(client: FlaskClient) -> None:
    client.post("/documents", data={"filename": "report.pdf"})
    client.post("/documents", data={"filename": "eicar-sample.pdf"})
    infected, clean = db.session.scalars(sa.select(Document).order_by(Document.id.desc()).limit(2))
    published = wait_for(workflow_of(clean))
    quarantined = wait_for(workflow_of(infected))

    assert published.state == "finished"
    steps = {e.step_name: e for e in published.executions if e.item_index is None}
    pages = [e for e in published.executions if e.step_name == "summarise_page"]
    branches = [steps[name] for name in ("make_thumbnails", "analyse_text", "scan_for_viruses")]
    assert all(b.started_at >= steps["extract"].finished_at for b in branches + pages)
    assert steps["publish"].started_at >= max(b.finished_at for b in branches + pages)
    db.session.refresh(clean)
    assert clean.published_at is not None and clean.thumbnails == clean.pages
    # Data along the edges: one summary per page, in page order, joined by publish.
    assert sorted(e.item_index for e in pages) == list(range(clean.pages))
    summaries = published.output_of("summarise_page")
    assert [s["page"] for s in summaries] == list(range(1, clean.pages + 1))
    assert clean.words == sum(s["words"] for s in summaries)
    assert len(published.output_of("publish")["contents"]) == clean.pages

    assert quarantined.state == "canceled"
    assert executions(quarantined, "publish") == []
    db.session.refresh(infected)
    assert infected.infected and infected.published_at is None
    assert_admin_shows(
        client, published, "summarise_page", "make_thumbnails", "analyse_text", "scan_for_viruses"
    )

    # A fix to the text analysis: re-run it, and what comes after it, on the published
    # document (what the admin's "Re-run from here" on the analyse_text node does).
    rerun = published.rerun_from("analyse_text", actor="demo", reason="language model fixed")
    assert rerun == ("analyse_text", "publish")
    wait_for(published)
    assert published.state == "finished"
    runs = {
        name: len([e for e in published.executions if e.step_name == name])
        for name in ("extract", "make_thumbnails", "analyse_text", "publish")
    }
    assert runs == {"extract": 1, "make_thumbnails": 1, "analyse_text": 2, "publish": 2}
    assert_admin_shows(client, published, "rerun from step analyse_text", "language model fixed")


def test_reindex_walks_every_document_with_a_resumable_step_in_continuations(
    client: FlaskClient,
) -> None:
    for name in ("a.pdf", "b.pdf", "c.pdf", "d.pdf", "e.pdf", "f.pdf"):
        db.session.add(Document(filename=name, words=10))
    db.session.commit()
    documents = db.session.scalar(sa.select(sa.func.count()).select_from(Document))
    assert client.post("/reindex").status_code == 302
    w = geneva.Workflow
    flow = db.session.scalars(
        sa.select(w).where(w.type == "ReindexDocuments").order_by(w.id.desc())
    ).first()
    wait_for(flow, timeout=60)
    assert reread(flow).state == "finished"
    indexed = db.session.scalar(sa.select(sa.func.count()).select_from(SearchEntry))
    assert indexed == documents
    outcomes = [e.outcome for e in flow.executions]
    assert outcomes[-1] == "success" and "continued" in outcomes  # five per execution
    assert flow.executions[-1].continues_id == flow.executions[-2].id
    assert_admin_shows(client, flow, "reindex", "continues #")


def test_start_100_creates_a_hundred_transfers_each_with_its_workflow(
    client: FlaskClient,
) -> None:
    before = db.session.scalar(sa.select(sa.func.count()).select_from(Transfer))
    client.post("/switches/gateway_down")  # keep the worker idle: only creation is checked
    client.post("/transfers", data={"count": "100"})
    w = geneva.Workflow
    transfers = db.session.scalar(sa.select(sa.func.count()).select_from(Transfer))
    flows = db.session.scalar(
        sa.select(sa.func.count()).where(w.type == "TransferWorkflow", w.hero_type == "Transfer")
    )
    assert transfers - before == 100
    assert flows == transfers


def test_the_demo_command_runs_web_and_worker_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env.update(DEMO_INSTANCE_PATH=str(tmp_path), DEMO_TIME_SCALE="0.01", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "demo_app", "--port", "0", "--workers", "2"]
    demo = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:
        url = poll(lambda: _banner_url(output), "the demo printed no URL", output)
        assert "Money transfer" in fetch(url)
        # A fresh demo starts with every fault off, so its first transfer goes through.
        switches = re.findall(r"<button>([^:<]+):\s*(?:<span class=\"on\">)?(on|off)", fetch(url))
        assert ("Random gateway faults", "off") in switches
        assert {state for _, state in switches} == {"off"}
        fetch(url + "transfers", data={"recipient": "cli@demo.test", "amount": "5"})
        # The first transfer of a fresh demo: the bank settles it once it is charged.
        poll(lambda: "bank settles" in fetch(url + "status"), "never charged", output)
        fetch(url + "transfers/1/settle", data={})
        # The confirmation e-mail is the transfer's last step: the worker ran them all.
        poll(lambda: "cli@demo.test" in fetch(url + "outbox"), "no confirmation", output)
        log = fetch(url + "gateway")
        assert "201 charged" in log and "rate limited" not in log and "timed out" not in log
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        returncode = demo.wait(30)
        reader.join(5)
        if demo.stdout is not None:
            demo.stdout.close()
    text = "".join(output)
    assert returncode == 0, text
    assert "demo: stopped." in text and "ignored Ctrl-C" not in text
    with pytest.raises(OSError):
        fetch(url)


def _banner_url(output: list[str]) -> str | None:
    found = re.search(r"flask-geneva demo: (http://\S+)", "".join(output))
    return found.group(1) if found else None


def fetch(url: str, data: dict[str, str] | None = None) -> str:
    body = None if data is None else urllib.parse.urlencode(data).encode()
    with urllib.request.urlopen(url, data=body, timeout=5) as response:
        return str(response.read().decode())


def poll(check: Callable[[], Any], failure: str, output: list[str], timeout: float = 30) -> Any:
    return wait_until(
        check, timeout=timeout, message=lambda: f"{failure}\n{''.join(output)}", interval=0.1
    )
