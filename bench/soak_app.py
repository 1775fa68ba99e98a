"""The app the kill -9 soak runs in its worker subprocesses (``bench/soak.py``).

Configured by environment variables so the driver and every ``flask geneva worker`` it
starts share one database and one queue:

``SOAK_DATABASE_URL``  the SQLAlchemy URL (required)
``SOAK_HUEY``          the ``GENEVA_HUEY`` value (required)
``SOAK_HUEY_NAME``     the queue name (default ``geneva-soak``)
``SOAK_LOG``           the external run log, appended to by every step body
``SOAK_STEP_MS``       a step body sleeps up to this many milliseconds (default 20)
``SOAK_FLUSH_EARLY``   ``1``: a body flushes its effect row before it sleeps (and waits
                       for ``SOAK_HOLD``), so a kill finds it written but uncommitted;
                       ``0`` (the default): the row is added last and flushed by the
                       executor (on SQLite a flushed write holds the one write lock)
``SOAK_HOLD``          a file path: while it exists, step bodies wait (for a kill test);
                       a body that starts waiting touches ``SOAK_HOLD + ".reached"``
``SOAK_DELIVER_TWICE`` ``1``: every step message is put back on the queue once
``SOAK_STUCK_AFTER``   ``GENEVA_STUCK_IN_PROGRESS_AFTER`` in seconds (default 2)
``SOAK_OVERDUE_AFTER`` ``GENEVA_STUCK_SCHEDULED_AFTER`` in seconds (default 10)
``SOAK_RAISE_RATE``    the share of body runs that raise, after writing their effect row:
                       an ``Exception``, ``SystemExit``, ``GeneratorExit`` or a custom
                       ``BaseException``, chosen at random (default 0). The class
                       reattempts any of them, so every workflow still finishes.

Each step body leaves two traces, so a soak can tell how often a body *ran* from how
often its effect *happened*:

* a **run** line appended to ``SOAK_LOG`` first, before anything else (what a call to
  another service looks like: it cannot be rolled back). A body that runs again after
  its worker was lost leaves a second line: bodies run at least once.
* an **effect**: one ``soak_effects`` row written through ``db.session`` and never
  committed by the body. The executor commits it in the same transaction as the
  execution's outcome, so a step has exactly one effect row however often its body ran.

Both carry the execution's id and ``self.idempotency_key``, which must be the same for
every run of a step and different for every other step and workflow.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)

STEP_MS = float(os.environ.get("SOAK_STEP_MS", "20"))
FLUSH_EARLY = os.environ.get("SOAK_FLUSH_EARLY") == "1"
HOLD = os.environ.get("SOAK_HOLD")
RAISE_RATE = float(os.environ.get("SOAK_RAISE_RATE", "0"))


class SoakBaseError(BaseException):
    """A BaseException of the application's own (not an Exception)."""


def _exit() -> None:
    raise SystemExit(3)


def _generator_exit() -> None:
    raise GeneratorExit("closed")


def _base() -> None:
    raise SoakBaseError("ours")


def _error() -> None:
    raise ValueError("gateway said no")


#: What a raising body raises, by the name its run line records.
RAISERS = {"error": _error, "exit": _exit, "generator_exit": _generator_exit, "base": _base}


class SoakEffect(db.Model):  # type: ignore[name-defined,misc]
    """The database effect of a step: one row per step per workflow, whatever the runs."""

    __tablename__ = "soak_effects"
    id = sa.Column(sa.Integer, primary_key=True)
    workflow_id = sa.Column(sa.Integer, nullable=False, index=True)
    step_name = sa.Column(sa.String(50), nullable=False)
    execution_id = sa.Column(sa.Integer, nullable=True)
    # Not unique on purpose: a duplicated effect must be counted, not refused.
    idempotency_key = sa.Column(sa.String(64), nullable=False)
    pid = sa.Column(sa.Integer, nullable=False)


def running_execution(workflow: Any, step_name: str) -> int | None:
    """The id of the execution running this body (one active execution per step)."""
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        return conn.execute(
            sa.select(e.c.id).where(
                e.c.workflow_id == workflow.id,
                e.c.step_name == step_name,
                e.c.state == "in_progress",
            )
        ).scalar()


def append_run(line: str) -> None:
    """Append one line to the run log: one write(2) on an O_APPEND file, never torn."""
    log = os.environ.get("SOAK_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def side_effects(workflow: Any, step_name: str) -> None:
    """Log the run, write the effect row through ``db.session`` (no commit), take time."""
    execution_id = running_execution(workflow, step_name)
    key = workflow.idempotency_key
    raises = random.choice(list(RAISERS)) if random.random() < RAISE_RATE else "-"
    append_run(f"{workflow.id} {step_name} {execution_id} {os.getpid()} {key} {raises}\n")
    effect = SoakEffect(
        workflow_id=workflow.id,
        step_name=step_name,
        execution_id=execution_id,
        idempotency_key=key,
        pid=os.getpid(),
    )
    if FLUSH_EARLY:
        # Written now, committed only with the outcome: a kill during the wait below
        # leaves an uncommitted row that the database must throw away.
        db.session.add(effect)
        db.session.flush()
    if HOLD and os.path.exists(HOLD):
        Path(HOLD + ".reached").touch()
        while os.path.exists(HOLD):
            time.sleep(0.02)
    if STEP_MS:
        time.sleep(random.uniform(0, STEP_MS) / 1000)
    if not FLUSH_EARLY:
        # Added last and not flushed: on SQLite a flushed write would hold the
        # database's write lock for the rest of the body.
        db.session.add(effect)
    if raises != "-":
        RAISERS[raises]()  # after the write: it must go with the failure


class SoakWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """A small DAG: ``receive`` fans out to ``check`` and ``reserve``, joined by ``ship``."""

    on_exception = ExceptionPolicy("reattempt", wait=0, max_reattempts=None)

    @step
    def receive(self) -> None:
        side_effects(self, "receive")

    @step(after="receive")
    def check(self) -> None:
        side_effects(self, "check")

    @step(after="receive")
    def reserve(self) -> None:
        side_effects(self, "reserve")

    @step(after=["check", "reserve"])
    def ship(self) -> None:
        side_effects(self, "ship")


STEPS = ("receive", "check", "reserve", "ship")

#: The iterations of :class:`SoakWalk`'s resumable step, and the one a kill test holds.
WALK_ITERATIONS = 10
WALK_HOLD_AT = 5


class SoakWalk(geneva.Workflow):  # type: ignore[name-defined,misc]
    """One resumable step: an effect row per iteration, committed with its checkpoint.

    With ``SOAK_HOLD`` present, iteration ``WALK_HOLD_AT`` writes its row (flushed,
    not committed) and waits: a kill there must lose that row alone.
    """

    @step(resumable=True)
    def walk(self) -> None:
        for index in range((self.cursor or 0) + 1, WALK_ITERATIONS + 1):
            append_run(f"{self.id} walk {index} {os.getpid()}\n")
            db.session.add(
                SoakEffect(
                    workflow_id=self.id,
                    step_name=f"walk {index}",
                    execution_id=running_execution(self, "walk"),
                    idempotency_key=self.idempotency_key,
                    pid=os.getpid(),
                )
            )
            db.session.flush()
            if index == WALK_HOLD_AT and HOLD and os.path.exists(HOLD):
                Path(HOLD + ".reached").touch()
                while os.path.exists(HOLD):
                    time.sleep(0.02)
            self.checkpoint(index)


def create_app() -> Flask:
    """Build the soak app from the environment."""
    app = Flask(__name__, instance_path=os.environ.get("SOAK_INSTANCE", os.getcwd()))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["SOAK_DATABASE_URL"],
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 10, "max_overflow": 10}
        if not os.environ["SOAK_DATABASE_URL"].startswith("sqlite")
        else {},
        GENEVA_HUEY=os.environ["SOAK_HUEY"],
        GENEVA_HUEY_NAME=os.environ.get("SOAK_HUEY_NAME", "geneva-soak"),
        GENEVA_STUCK_IN_PROGRESS_AFTER=float(os.environ.get("SOAK_STUCK_AFTER", "2")),
        GENEVA_STUCK_SCHEDULED_AFTER=float(os.environ.get("SOAK_OVERDUE_AFTER", "10")),
        # The soak driver runs housekeeping itself, every second.
        GENEVA_HOUSEKEEPING_INTERVAL=None,
    )
    db.init_app(app)
    geneva.init_app(app)
    if os.environ.get("SOAK_DELIVER_TWICE") == "1":
        with app.app_context():
            _deliver_twice(geneva.huey)
    return app


def _deliver_twice(huey: Any) -> None:
    """Fault injection: the first delivery of each step message re-enqueues a copy."""
    seen: set[str] = set()
    lock = threading.Lock()

    @huey.pre_execute(name="soak-deliver-twice")  # type: ignore[untyped-decorator]
    def deliver_twice(task: Any) -> None:
        if task.name != "geneva.perform_step":
            return
        with lock:
            first = task.id not in seen
            seen.add(task.id)
        if first:
            huey.enqueue(task)


if "SOAK_DATABASE_URL" in os.environ:
    #: ``flask --app bench.soak_app geneva worker`` finds this.
    app = create_app()
