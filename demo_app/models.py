"""The demo's data: the heroes of its workflows, and the fakes' tables.

Everything lives in one SQLite file in the instance folder, shared by the web process
and the worker process (flask-geneva puts SQLite in WAL mode, so they do not block
each other's reads).
"""

from __future__ import annotations

import uuid
from datetime import UTC
from datetime import datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva

db = SQLAlchemy()
geneva = Geneva(db)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Transfer(db.Model):  # type: ignore[name-defined,misc]
    """A money transfer: the hero of :class:`~demo_app.workflows.TransferWorkflow`."""

    __tablename__ = "demo_transfers"
    id = sa.Column(sa.Integer, primary_key=True)
    recipient = sa.Column(sa.String(200), nullable=False)
    amount_cents = sa.Column(sa.Integer, nullable=False)
    #: The transfer's own reference; the fake gateway draws its random faults from it, so
    #: a test can choose a transfer whose charge is rate limited, then times out. (The
    #: column keeps its first name, so an existing demo database still opens.)
    reference = sa.Column(
        "idempotency_key",
        sa.String(36),
        nullable=False,
        unique=True,
        default=lambda: str(uuid.uuid4()),
    )
    status = sa.Column(sa.String(20), nullable=False, default="new")
    charge_id = sa.Column(sa.Integer)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    @property
    def amount(self) -> str:
        return f"{self.amount_cents / 100:,.2f} EUR"

    def __str__(self) -> str:  # how the admin names the hero
        return f"{self.amount} to {self.recipient} ({self.status})"


class User(db.Model):  # type: ignore[name-defined,misc]
    """A new user: the hero of :class:`~demo_app.workflows.OnboardingWorkflow`."""

    __tablename__ = "demo_users"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(100), nullable=False)
    email = sa.Column(sa.String(200), nullable=False)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    profile_completed = sa.Column(sa.Boolean, nullable=False, default=False)
    plan = sa.Column(sa.String(20), nullable=False, default="free")

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>{'' if self.active else ' (deactivated)'}"


class Document(db.Model):  # type: ignore[name-defined,misc]
    """An uploaded document: the hero of :class:`~demo_app.workflows.DocumentPipeline`."""

    __tablename__ = "demo_documents"
    id = sa.Column(sa.Integer, primary_key=True)
    filename = sa.Column(sa.String(200), nullable=False)
    pages = sa.Column(sa.Integer)
    words = sa.Column(sa.Integer)
    thumbnails = sa.Column(sa.Integer)
    language = sa.Column(sa.String(10))
    infected = sa.Column(sa.Boolean)
    published_at = sa.Column(sa.DateTime)

    def __str__(self) -> str:
        return str(self.filename)


class SearchEntry(db.Model):  # type: ignore[name-defined,misc]
    """A document in the demo's search index, written by :class:`ReindexDocuments`."""

    __tablename__ = "demo_search_index"
    document_id = sa.Column(sa.Integer, primary_key=True)
    words = sa.Column(sa.Integer)
    indexed_at = sa.Column(sa.DateTime, nullable=False)


class Mail(db.Model):  # type: ignore[name-defined,misc]
    """The local outbox: every e-mail the demo "sends" lands here."""

    __tablename__ = "demo_outbox"
    id = sa.Column(sa.Integer, primary_key=True)
    to = sa.Column(sa.String(200), nullable=False)
    subject = sa.Column(sa.String(200), nullable=False)
    body = sa.Column(sa.Text, nullable=False)
    sent_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class GatewayCharge(db.Model):  # type: ignore[name-defined,misc]
    """A charge on the fake payment gateway's side (one per idempotency key)."""

    __tablename__ = "demo_gateway_charges"
    id = sa.Column(sa.Integer, primary_key=True)
    idempotency_key = sa.Column(sa.String(64), nullable=False, unique=True)
    amount_cents = sa.Column(sa.Integer, nullable=False)
    status = sa.Column(sa.String(20), nullable=False, default="pending")
    settles_at = sa.Column(sa.DateTime, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class GatewayCall(db.Model):  # type: ignore[name-defined,misc]
    """One request to the fake gateway and how it answered."""

    __tablename__ = "demo_gateway_calls"
    id = sa.Column(sa.Integer, primary_key=True)
    idempotency_key = sa.Column(sa.String(64), nullable=False, index=True)
    operation = sa.Column(sa.String(20), nullable=False)
    result = sa.Column(sa.String(40), nullable=False)
    at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Settlement(db.Model):  # type: ignore[name-defined,misc]
    """A settlement the bank confirmed, recorded by the transfer's waiting step (one each)."""

    __tablename__ = "demo_settlements"
    id = sa.Column(sa.Integer, primary_key=True)
    transfer_id = sa.Column(sa.Integer, nullable=False, unique=True)
    #: The ``X-Delivery-Id`` of the webhook that brought it.
    delivery_id = sa.Column(sa.String(64), nullable=False)
    settled_at = sa.Column(sa.String(40), nullable=False)
    recorded_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class BankWebhook(db.Model):  # type: ignore[name-defined,misc]
    """One webhook the fake bank sent to ``POST /webhooks/bank``, and what the app did."""

    __tablename__ = "demo_bank_webhooks"
    id = sa.Column(sa.Integer, primary_key=True)
    delivery_id = sa.Column(sa.String(64), nullable=False, index=True)
    transfer_id = sa.Column(sa.Integer, nullable=False)
    result = sa.Column(sa.String(40), nullable=False)
    at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Reconciliation(db.Model):  # type: ignore[name-defined,misc]
    """One run of the scheduled :class:`~demo_app.workflows.Reconcile` workflow."""

    __tablename__ = "demo_reconciliations"
    id = sa.Column(sa.Integer, primary_key=True)
    transfers = sa.Column(sa.Integer, nullable=False)
    charges = sa.Column(sa.Integer, nullable=False)
    #: Settled at the bank and recorded by the transfer's workflow.
    settled = sa.Column(sa.Integer, nullable=False)
    #: Transfers marked charged whose charge the gateway does not know (should be 0).
    mismatches = sa.Column(sa.Integer, nullable=False)
    at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class BankSwitches(db.Model):  # type: ignore[name-defined,misc]
    """The fake bank's switch (a table of its own, so an existing demo database still opens)."""

    __tablename__ = "demo_bank_switches"
    id = sa.Column(sa.Integer, primary_key=True)
    #: The bank sends every settlement webhook twice, with the same delivery id.
    duplicate_webhooks = sa.Column(sa.Boolean, nullable=False, default=False)

    NAMES = ("duplicate_webhooks",)


class BankDelays(db.Model):  # type: ignore[name-defined,misc]
    """How soon the fake bank posts its webhook after a charge (one row; its own table, too)."""

    __tablename__ = "demo_bank_delays"
    id = sa.Column(sa.Integer, primary_key=True)
    #: The bank posts long after the charge (still well within the transfer's wait).
    bank_slow = sa.Column(sa.Boolean, nullable=False, default=False)
    #: The bank never posts: the transfer's wait times out and the workflow pauses.
    bank_silent = sa.Column(sa.Boolean, nullable=False, default=False)

    NAMES = ("bank_slow", "bank_silent")


class Switches(db.Model):  # type: ignore[name-defined,misc]
    """The fault switches on the home page (one row), read by the fakes at every call."""

    __tablename__ = "demo_switches"
    id = sa.Column(sa.Integer, primary_key=True)
    #: Every gateway call fails with 503: transfers pause until you resume them.
    gateway_down = sa.Column(sa.Boolean, nullable=False, default=False)
    #: The mail server refuses mail: confirmations are reattempted, then pause.
    mail_down = sa.Column(sa.Boolean, nullable=False, default=False)
    #: The gateway sometimes rate-limits, times out after charging, or answers 502. Off
    #: until turned on, so a first transfer goes through as the home page describes.
    random_faults = sa.Column(sa.Boolean, nullable=False, default=False)

    NAMES = ("gateway_down", "mail_down", "random_faults")
