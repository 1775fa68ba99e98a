"""The demo's pages: start workflows, flip fault switches, read the outbox and gateway log."""

from __future__ import annotations

import random
from typing import Any

import sqlalchemy as sa
from flask import Blueprint
from flask import abort
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from werkzeug.wrappers import Response

from flask_geneva import InvalidStateError

from . import fakes
from . import timing
from .models import BankDelays
from .models import BankSwitches
from .models import BankWebhook
from .models import Document
from .models import GatewayCall
from .models import GatewayCharge
from .models import Mail
from .models import Reconciliation
from .models import SearchEntry
from .models import Switches
from .models import Transfer
from .models import User
from .models import db
from .models import geneva
from .workflows import DocumentPipeline
from .workflows import OnboardingWorkflow
from .workflows import ReindexDocuments
from .workflows import TransferWorkflow

bp = Blueprint("demo", __name__)

NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Guido"]
FILES = ["invoice.pdf", "contract.docx", "report.pdf", "slides.pptx", "eicar-test.pdf", "memo.txt"]


@bp.get("/")
def home() -> str:
    return render_template("home.html", **_status(), seconds_per_day=timing.days(1).total_seconds())


@bp.get("/status")
def status() -> str:
    return render_template("_status.html", **_status())


@bp.post("/transfers")
def start_transfers() -> Response:
    for _ in range(_count()):
        amount = request.form.get("amount", type=float) or round(random.uniform(5, 900), 2)
        transfer = Transfer(
            recipient=request.form.get("recipient") or f"{random.choice(NAMES).lower()}@demo.test",
            amount_cents=round(amount * 100),
        )
        db.session.add(transfer)
        db.session.flush()
        # The transfer and its workflow commit together: no transfer without a workflow.
        TransferWorkflow.create(hero=transfer, commit=False)
    db.session.commit()
    return redirect(url_for(".home"))


@bp.post("/transfers/<int:transfer_id>/settle")
def bank_settles(transfer_id: int) -> Response:
    """The "bank settles" button: the fake bank settles the charge and posts its webhook."""
    try:
        fakes.bank_settles(transfer_id)
    except fakes.GatewayError:
        abort(409)  # not charged (yet): nothing to settle
    return redirect(url_for(".home"))


@bp.post("/webhooks/bank")
def bank_webhook() -> tuple[str, int]:
    """The bank's settlement webhook: store the signal with the transfer's update, once.

    The bank may deliver a webhook more than once; its ``X-Delivery-Id`` is the signal's
    idempotency key, so a redelivery returns the signal stored the first time
    (``duplicate``) and changes nothing. The signal and the transfer's new status commit
    together: the waiting step is woken only after that commit.
    """
    delivery_id = request.headers.get("X-Delivery-Id")
    body = request.get_json(silent=True)
    if not delivery_id or not isinstance(body, dict) or "transfer_id" not in body:
        abort(400)
    transfer = db.get_or_404(Transfer, body["transfer_id"])
    try:
        received = TransferWorkflow.signal_for(
            transfer, "settled", payload=body, idempotency_key=delivery_id, commit=False
        )
    except InvalidStateError:
        return "no transfer waits for this settlement", 409
    if received.duplicate:
        result = "duplicate: already received"
    else:
        transfer.status = "settlement received"
        result = "signal stored"
    db.session.add(BankWebhook(delivery_id=delivery_id, transfer_id=transfer.id, result=result))
    db.session.commit()
    return "", 204


@bp.post("/users")
def sign_up() -> Response:
    for _ in range(_count()):
        name = request.form.get("name") or random.choice(NAMES)
        user = User(name=name, email=f"{name.lower()}.{random.randint(1, 999)}@demo.test")
        db.session.add(user)
        db.session.flush()
        OnboardingWorkflow.create(hero=user, commit=False)
    db.session.commit()
    return redirect(url_for(".home"))


@bp.post("/users/<int:user_id>/<action>")
def change_user(user_id: int, action: str) -> Response:
    user = db.get_or_404(User, user_id)
    if action == "deactivate":
        user.active = False  # the next drip step sees it and cancels the workflow
    elif action == "complete-profile":
        user.profile_completed = True
    elif action == "upgrade":
        user.plan = "paid"
    elif action == "confirm-email":
        return confirm_email(user)
    else:
        abort(404)
    db.session.commit()
    return redirect(url_for(".home"))


def confirm_email(user: User) -> Response:
    """The "confirm e-mail" link: deliver the signal the onboarding drip waits for.

    The key is the user's: a second click (or a click before the drip waits) stores
    nothing new, and the drip's waiting step consumes the one signal whenever it comes due.
    """
    try:
        OnboardingWorkflow.signal_for(
            user, "email_confirmed", idempotency_key=f"confirm-email-{user.id}"
        )
    except InvalidStateError:
        abort(409)  # the drip is over (finished or canceled): nothing waits any more
    return redirect(url_for(".home"))


@bp.post("/documents")
def upload() -> Response:
    for _ in range(_count()):
        document = Document(filename=request.form.get("filename") or random.choice(FILES))
        db.session.add(document)
        db.session.flush()
        DocumentPipeline.create(hero=document, commit=False)
    db.session.commit()
    return redirect(url_for(".home"))


@bp.post("/reindex")
def reindex() -> Response:
    """Start the re-index (a resumable step); one at a time."""
    w = geneva.Workflow
    ongoing = db.session.scalar(
        sa.select(w.id).where(
            w.type == "ReindexDocuments", w.state.not_in(("finished", "canceled"))
        )
    )
    if ongoing is None:
        ReindexDocuments.create()
    return redirect(url_for(".home"))


@bp.post("/switches/<name>")
def toggle(name: str) -> Response:
    if name in Switches.NAMES:
        switches: Any = db.session.get(Switches, 1)
    elif name in BankSwitches.NAMES:
        switches = db.session.get(BankSwitches, 1)
    elif name in BankDelays.NAMES:
        switches = db.session.get(BankDelays, 1)
    else:
        abort(404)
    setattr(switches, name, not getattr(switches, name))
    db.session.commit()
    return redirect(url_for(".home"))


@bp.get("/outbox")
def outbox() -> str:
    mails = db.session.scalars(sa.select(Mail).order_by(Mail.id.desc()).limit(200)).all()
    return render_template("outbox.html", mails=mails)


@bp.get("/gateway")
def gateway() -> str:
    calls = db.session.scalars(sa.select(GatewayCall).order_by(GatewayCall.id.desc()).limit(200))
    charges = db.session.scalar(sa.select(sa.func.count()).select_from(GatewayCharge))
    webhooks = db.session.scalars(sa.select(BankWebhook).order_by(BankWebhook.id.desc()).limit(50))
    return render_template(
        "gateway.html", calls=calls.all(), charges=charges, webhooks=webhooks.all()
    )


@bp.app_template_global()
def admin_url(workflow_id: int | None = None) -> str | None:
    """The admin page of a workflow (or the admin's overview); None without the admin."""
    if "geneva" not in current_app.blueprints:
        return None
    if workflow_id is None:
        return url_for("geneva.overview")
    return url_for("geneva.workflow_detail", workflow_id=workflow_id)


def _count() -> int:
    return min(max(request.form.get("count", 1, type=int), 1), 1000)


def _status() -> dict[str, Any]:
    """Recent heroes with their latest workflow, for the home page's live tables."""
    w = geneva.Workflow

    def with_workflow(model: Any) -> list[tuple[Any, Any]]:
        rows = db.session.scalars(sa.select(model).order_by(model.id.desc()).limit(8)).all()
        flows = db.session.scalars(
            sa.select(w)
            .where(w.hero_type == model.__name__, w.hero_id.in_([str(r.id) for r in rows]))
            .order_by(w.id)
        )
        latest = {flow.hero_id: flow for flow in flows}
        return [(row, latest.get(str(row.id))) for row in rows]

    counts = dict(db.session.execute(sa.select(w.state, sa.func.count()).group_by(w.state)).all())
    return {
        "transfers": with_workflow(Transfer),
        "users": with_workflow(User),
        "documents": with_workflow(Document),
        "counts": counts,
        "switches": db.session.get(Switches, 1),
        "bank": db.session.get(BankSwitches, 1),
        "bank_delays": db.session.get(BankDelays, 1),
        "reconciliation": db.session.scalars(
            sa.select(Reconciliation).order_by(Reconciliation.id.desc()).limit(1)
        ).first(),
        "outbox_size": db.session.scalar(sa.select(sa.func.count()).select_from(Mail)),
        "indexed": db.session.scalar(sa.select(sa.func.count()).select_from(SearchEntry)),
        "reindex": db.session.scalars(
            sa.select(w).where(w.type == "ReindexDocuments").order_by(w.id.desc()).limit(1)
        ).first(),
    }
