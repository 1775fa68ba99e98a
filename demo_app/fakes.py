"""Stand-ins for the outside world: a payment gateway, its bank and a mail server.

The gateway keeps its own tables and commits them in its own session, like a remote
service would: when a step fails after calling it, rolling back the step's work does
not undo the charge. That is why the transfer sends an idempotency key with every
charge request. The fault switches on the home page (and, once "random gateway faults"
is on, a seeded random draw per call) decide how each call answers. Every switch is off
in a fresh demo.

The bank settles each charge by itself a few (demo) seconds after it was made, and says
so the way a real one would: it posts a webhook to the app (``POST /webhooks/bank``,
with an ``X-Delivery-Id`` header), through the app's whole WSGI stack. The bank is not
part of any workflow: when the gateway records a charge, it leaves the bank a delayed
Huey message of the demo's own (``demo.bank_posts_settlement``), which a worker runs at
the due time. The "bank settles" button on the home page settles a charge at once.

The bank's switches on the home page: "slow" posts long after the charge, "silent"
never posts (the transfer's wait times out and it pauses), and "twice" posts each
webhook twice, with the same delivery id. ``DEMO_BANK_POSTS = False`` in the app's
config turns the automatic post off (the tests press the button instead).
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from .models import BankDelays
from .models import BankSwitches
from .models import GatewayCall
from .models import GatewayCharge
from .models import Mail
from .models import Switches
from .models import Transfer
from .models import db
from .models import utcnow
from .timing import seconds

#: Name of the demo's own Huey task: the bank posting its webhook, outside any workflow.
BANK_TASK = "demo.bank_posts_settlement"

#: Demo seconds between a charge and the bank's webhook, and with the "slow" switch on.
#: Both are well within the transfer's wait (``workflows.BANK_TIMEOUT``).
POST_AFTER = 3.0
SLOW_POST_AFTER = 120.0


class GatewayError(Exception):
    """The payment gateway answered with an error."""


class GatewayUnavailable(GatewayError):
    """The gateway is down (the "gateway down" switch)."""


class GatewayTimeout(GatewayError):
    """No answer in time: the charge may or may not have gone through."""


class RateLimited(GatewayError):
    """HTTP 429: call again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429 Too Many Requests (retry after {retry_after:.1f} s)")
        self.retry_after = retry_after


class MailServerDown(Exception):
    """The mail server refused the message (the "mail server down" switch)."""


def switches(session: Session | None = None) -> Switches:
    """Return the fault switches (defaults if the row does not exist yet)."""
    row = (session or db.session).get(Switches, 1)
    return row if row is not None else Switches(id=1, **DEFAULT_SWITCHES)


#: A fresh demo starts with every fault off; the home page's switches turn them on.
DEFAULT_SWITCHES = {"gateway_down": False, "mail_down": False, "random_faults": False}


def charge(idempotency_key: str, amount_cents: int, *, reference: str) -> int:
    """Charge ``amount_cents`` once per key and return the gateway's charge id.

    A second call with the same key returns the first charge instead of charging again.
    ``reference`` (the transfer's) seeds the random faults, so a test can choose them.

    :raises RateLimited: too many requests; call again after ``retry_after``.
    :raises GatewayTimeout: no answer in time (the charge may have been made).
    :raises GatewayError: any other failure (503 when down, sometimes a 502).
    """
    with Session(db.engine) as session:
        faults = switches(session)
        calls = session.scalar(
            sa.select(sa.func.count())
            .select_from(GatewayCall)
            .where(GatewayCall.idempotency_key == idempotency_key)
        )
        luck = draw(reference, calls or 0)

        def answer(result: str) -> None:
            _log(session, idempotency_key, "charge", result)
            session.commit()

        if faults.gateway_down:
            answer("503 unavailable")
            raise GatewayUnavailable("503 Service Unavailable: the payment gateway is down")
        if faults.random_faults and luck < 0.25:
            answer("429 rate limited")
            raise RateLimited(retry_after=seconds(1 + 2 * luck))
        if faults.random_faults and luck > 0.97:
            answer("502 bad gateway")
            raise GatewayError("502 Bad Gateway: the payment gateway failed to process the charge")
        existing = session.scalar(
            sa.select(GatewayCharge).where(GatewayCharge.idempotency_key == idempotency_key)
        )
        if existing is not None:
            answer("200 replayed (already charged)")
            return int(existing.id)
        new = GatewayCharge(
            idempotency_key=idempotency_key,
            amount_cents=amount_cents,
            settles_at=utcnow() + timedelta(seconds=seconds(2 + 4 * luck)),
        )
        session.add(new)
        timed_out = faults.random_faults and luck < 0.40
        answer("201 charged, but the answer timed out" if timed_out else "201 charged")
        charge_id = int(new.id)
        delays = bank_delays(session)
    # Committed first, so the bank finds the charge when its message runs.
    bank_posts_later(idempotency_key, reference, delays)
    if timed_out:
        raise GatewayTimeout("read timed out after 10 s; the charge may have gone through")
    return charge_id


def bank_switches(session: Session | None = None) -> BankSwitches:
    """Return the bank's switch (its default if the row does not exist yet)."""
    row = (session or db.session).get(BankSwitches, 1)
    return row if row is not None else BankSwitches(id=1, duplicate_webhooks=False)


def bank_delays(session: Session | None = None) -> BankDelays:
    """Return the bank's "slow" and "silent" switches (off if the row does not exist yet)."""
    row = (session or db.session).get(BankDelays, 1)
    return row if row is not None else BankDelays(id=1, bank_slow=False, bank_silent=False)


def bank_posts_later(idempotency_key: str, reference: str, delays: BankDelays) -> None:
    """Leave the bank a delayed message: it settles the new charge and posts its webhook.

    Nothing is left while the "silent" switch is on, or with ``DEMO_BANK_POSTS`` off.
    """
    if delays.bank_silent or not current_app.config.get("DEMO_BANK_POSTS", True):
        return
    delay = seconds(SLOW_POST_AFTER if delays.bank_slow else POST_AFTER)
    task = current_app.extensions["demo_bank"]
    task.schedule(args=(idempotency_key, reference), delay=delay)


def bank_posts_settlement(idempotency_key: str, reference: str) -> list[int]:
    """What the bank's delayed message runs: settle the charge made with this key, post.

    :return: the HTTP status of each webhook delivery (none if the charge was already
        settled with the button, or is unknown).
    """
    with Session(db.engine) as session:
        found = session.scalar(
            sa.select(GatewayCharge).where(GatewayCharge.idempotency_key == idempotency_key)
        )
        transfer_id = session.scalar(sa.select(Transfer.id).where(Transfer.reference == reference))
        if found is None or transfer_id is None:
            return []
        return _settle(session, found, transfer_id)


def bank_settles(transfer_id: int) -> list[int]:
    """The "bank settles" button: settle the transfer's charge now and post the webhook.

    :return: the HTTP status of each webhook delivery (two with the duplicate switch on;
        none if the bank had already settled the charge by itself).
    :raises GatewayError: the transfer has no charge to settle.
    """
    with Session(db.engine) as session:
        transfer = session.get(Transfer, transfer_id)
        found = session.get(GatewayCharge, transfer.charge_id) if transfer else None
        if found is None:
            raise GatewayError(f"404 Not Found: transfer {transfer_id} has no charge to settle")
        return _settle(session, found, transfer_id)


def _settle(session: Session, found: GatewayCharge, transfer_id: int) -> list[int]:
    # A bank settles a charge once: a later press of the button (or a late message)
    # finds it settled and sends nothing.
    if found.status == "settled":
        return []
    found.status = "settled"
    _log(session, found.idempotency_key, "settle", "settled; webhook sent")
    times = 2 if bank_switches(session).duplicate_webhooks else 1
    body = {
        "transfer_id": transfer_id,
        "charge_id": found.id,
        "settled_at": utcnow().isoformat(),
    }
    session.commit()
    delivery_id = f"bank-{uuid.uuid4()}"
    client = current_app.test_client()
    return [
        client.post("/webhooks/bank", json=body, headers={"X-Delivery-Id": delivery_id}).status_code
        for _ in range(times)
    ]


def send_mail(to: str, subject: str, body: str) -> None:
    """Put a message in the outbox (committed with the step that sends it).

    :raises MailServerDown: while the "mail server down" switch is on.
    """
    if switches().mail_down:
        raise MailServerDown("421 mail.demo.test: service not available, try again later")
    db.session.add(Mail(to=to, subject=subject, body=body))


def draw(reference: str, calls: int) -> float:
    """The gateway's luck for a call: seeded by the key and the calls made before it.

    Replayable (the same transfer meets the same faults in the same order), yet varied
    across transfers, whose keys are random.
    """
    return random.Random(f"{reference}:{calls}").random()


def _log(session: Session, idempotency_key: str, operation: str, result: str) -> None:
    session.add(GatewayCall(idempotency_key=idempotency_key, operation=operation, result=result))
