"""The demo's workflows: a transfer, an onboarding drip, a document DAG, a re-index, a schedule.

Each step is an ordinary method that a worker runs later; flask-geneva records every
attempt as a row, so the admin can show what happened and an operator can resume.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

import sqlalchemy as sa
from huey import crontab

from flask_geneva import ExceptionPolicy
from flask_geneva import step

from . import fakes
from .models import Document
from .models import GatewayCharge
from .models import Reconciliation
from .models import SearchEntry
from .models import Settlement
from .models import Transfer
from .models import db
from .models import geneva
from .models import utcnow
from .timing import days
from .timing import seconds

#: Transfers above this amount are refused before any money moves.
TRANSFER_LIMIT_CENTS = 1_000_000

#: How long a transfer waits for the bank's webhook before it pauses for a person. Not
#: scaled with demo time, so that "bank settles" can still be pressed by hand; a silent
#: bank (the home page's switch) shows the timeout.
BANK_TIMEOUT = timedelta(minutes=10)

#: How long the drip waits for the user's "confirm e-mail" click before it goes on without.
CONFIRM_TIMEOUT = days(2)


class TransferWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Charge the sender once, wait for the bank's settlement webhook, then confirm by e-mail.

    The e-mail is a step of its own: if the mail server is down, only that step is
    reattempted (and the workflow paused if it stays down); the charge, already
    completed, is never run again.
    """

    on_exception = [
        # The request may have gone through: ask again with the same idempotency key.
        ExceptionPolicy(
            "reattempt", exceptions=(fakes.GatewayTimeout,), wait=seconds(1), max_reattempts=5
        ),
        # Anything else (gateway down, a 502, a bug): stop and let a person look.
        ExceptionPolicy("pause"),
    ]

    @step
    def check_limits(self) -> None:
        if self.hero.amount_cents > TRANSFER_LIMIT_CENTS:
            self.hero.status = "refused"
            self.cancel()

    @step
    def charge(self) -> None:
        try:
            # The same key on every run of this step (reattempts, a recovery, a resume):
            # the gateway answers a repeated request with the first charge.
            charge_id = fakes.charge(
                self.idempotency_key, self.hero.amount_cents, reference=self.hero.reference
            )
        except fakes.RateLimited as error:
            self.reattempt(wait=error.retry_after)  # the gateway said when to come back
        self.hero.charge_id = charge_id
        self.hero.status = "charged"

    # No polling: the step waits (no worker, no queued message) until the bank's
    # webhook delivers "settled"; a redelivered webhook is recognised by its delivery id.
    @step(wait_for="settled", timeout=BANK_TIMEOUT, on_timeout="pause")
    def record_settlement(self) -> None:
        settlement = self.received_signal
        db.session.add(
            Settlement(
                transfer_id=self.hero.id,
                delivery_id=settlement.idempotency_key,
                settled_at=settlement.payload["settled_at"],
            )
        )
        self.hero.status = "settled"

    @step(
        on_exception=ExceptionPolicy(
            "reattempt", exceptions=(fakes.MailServerDown,), wait=seconds(3), max_reattempts=3
        )
    )
    def send_confirmation(self) -> None:
        fakes.send_mail(
            self.hero.recipient,
            f"You received {self.hero.amount}",
            f"Transfer #{self.hero.id} of {self.hero.amount} has settled.",
        )
        self.hero.status = "confirmed"


class OnboardingWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """A drip of e-mails over a new user's first week (a demo day lasts a few seconds).

    After the welcome, the drip waits (no worker, no polling) for the user's "confirm
    e-mail" click, for two days at most; without it, that step is skipped and the drip
    goes on. Deactivating the user cancels the rest; steps that no longer apply are skipped.
    """

    cancel_if = "user_deactivated"
    on_exception = ExceptionPolicy(
        "reattempt", exceptions=(fakes.MailServerDown,), wait=seconds(5), max_reattempts=3
    )

    def user_deactivated(self) -> bool:
        return not self.hero.active

    @step
    def send_welcome(self) -> None:
        self._mail("Welcome aboard", "Thanks for signing up!")

    @step(wait_for="email_confirmed", timeout=CONFIRM_TIMEOUT, on_timeout="skip")
    def confirm_email(self) -> None:
        self._mail("Your e-mail is confirmed", "Thanks: we will write to this address from now on.")

    @step(wait=days(1))
    def send_tips(self) -> None:
        self._mail("Three tips for your first week", "1. ... 2. ... 3. ...")

    @step(wait=days(2), skip_if=lambda wf: wf.hero.profile_completed)
    def remind_profile(self) -> None:
        self._mail("Your profile is almost done", "Add a photo so your team knows you.")

    @step(wait=days(3), skip_if=lambda wf: wf.hero.plan == "paid")
    def offer_upgrade(self) -> None:
        self._mail("20% off the paid plan", "This week only.")

    def _mail(self, subject: str, body: str) -> None:
        fakes.send_mail(self.hero.email, subject, f"Hello {self.hero.name},\n\n{body}")


def work(low: float, high: float) -> None:
    """Simulate a piece of work that takes a few (scaled) seconds."""
    time.sleep(seconds(random.uniform(low, high)))


class DocumentPipeline(geneva.Workflow):  # type: ignore[name-defined,misc]
    """extract → (summarise each page ∥ thumbnails ∥ text analysis ∥ virus scan) → publish.

    Data flows along the edges: ``extract`` returns the pages, ``summarise_page`` is a
    map step that runs once per page (at most three at once), and ``publish`` receives
    every page's summary, in page order, as a parameter. The four middle branches run
    at the same time on different worker threads; publish waits for all of them. A
    file whose name contains "eicar" fails the virus scan, which cancels the workflow:
    it is never published.
    """

    @step
    def extract(self) -> list[dict[str, object]]:
        work(1, 2)
        rng = random.Random(self.hero.filename)
        self.hero.pages = rng.randint(2, 12)
        return [
            {"page": n, "text": " ".join(rng.choices(WORDS, k=rng.randint(200, 500)))}
            for n in range(1, self.hero.pages + 1)
        ]

    @step(for_each="extract", max_parallel=3)
    def summarise_page(self) -> dict[str, object]:
        work(0.3, 0.8)
        words = str(self.item["text"]).split()
        common = max(set(words), key=words.count)
        return {"page": self.item["page"], "words": len(words), "about": common}

    # Thumbnails of a big file can take long; the worker renews its lease while the body
    # runs, so this is how long a *silent* worker is trusted, not how long the step may
    # take: five minutes after its last heartbeat, housekeeping runs it again.
    @step(after="extract", stuck_after=timedelta(minutes=5))
    def make_thumbnails(self) -> None:
        work(2, 4)
        self.hero.thumbnails = self.hero.pages

    @step(after="extract")
    def analyse_text(self, extract: list[dict[str, object]]) -> str:
        work(1, 3)
        self.hero.language = random.Random(self.hero.filename).choice(["en", "fr", "de"])
        return f"{len(extract)} pages in {self.hero.language}"

    @step(after="extract")
    def scan_for_viruses(self) -> None:
        work(1, 2)
        self.hero.infected = "eicar" in self.hero.filename.lower()
        if self.hero.infected:
            self.cancel()  # quarantine: never publish

    @step(after=["summarise_page", "make_thumbnails", "analyse_text", "scan_for_viruses"])
    def publish(self, summarise_page: list[dict[str, object]]) -> dict[str, object]:
        self.hero.words = sum(int(str(page["words"])) for page in summarise_page)
        self.hero.published_at = utcnow()
        return {
            "words": self.hero.words,
            "contents": [f"p.{page['page']}: {page['about']}" for page in summarise_page],
        }


#: The vocabulary of the demo's generated documents.
WORDS = (
    "invoice payment ledger settlement refund quarter audit balance transfer account "
    "forecast revenue expense budget contract supplier customer report summary review"
).split()


class ReindexDocuments(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Re-index every document, a few at a time: a resumable step with a visible cursor.

    The cursor is the last document id indexed. Each checkpoint commits that
    document's index row with the cursor; after five the execution ends as
    ``continued`` and a new one carries on from the cursor, so other work runs in
    between. A worker killed half-way resumes after the last checkpoint: no document
    is indexed twice.
    """

    @step(resumable=True, max_iterations=5)
    def reindex(self) -> int:
        after = self.cursor or 0
        documents = db.session.scalars(
            sa.select(Document).where(Document.id > after).order_by(Document.id)
        )
        for document in documents:
            work(0.1, 0.3)
            db.session.merge(
                SearchEntry(document_id=document.id, words=document.words, indexed_at=utcnow())
            )
            self.checkpoint(document.id)
        return int(self.cursor or 0)


class Reconcile(geneva.Workflow):  # type: ignore[name-defined,misc]
    """Every five minutes: compare the transfers with the gateway's charges.

    Started by the workers' periodic task at each tick, once, however many workers run.
    """

    schedule = crontab(minute="*/5")

    @step
    def compare(self) -> None:
        def count(query: sa.Select[tuple[int]]) -> int:
            return int(db.session.scalar(query) or 0)

        charged = sa.select(sa.func.count()).where(Transfer.charge_id.is_not(None))
        unknown = Transfer.charge_id.not_in(sa.select(GatewayCharge.id))
        db.session.add(
            Reconciliation(
                transfers=count(sa.select(sa.func.count()).select_from(Transfer)),
                charges=count(sa.select(sa.func.count()).select_from(GatewayCharge)),
                settled=count(sa.select(sa.func.count()).select_from(Settlement)),
                mismatches=count(charged.where(unknown)),
            )
        )
