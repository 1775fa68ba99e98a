"""End to end through a real Huey consumer: workflows run to ``finished`` by themselves.

A consumer with thread workers is started in this process (``consumer.start()``) on a
SqliteHuey file or on Redis, and stopped gracefully; ``flask geneva worker`` is run as
a real process and stopped with SIGINT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import TIMEOUT
from helpers import queue_url
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import Geneva
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)

REPO = Path(__file__).resolve().parents[2]

#: A real consumer in this process, or ``flask geneva worker`` as a process.
pytestmark = pytest.mark.slow


class Parcel(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "cons_parcels"
    id = sa.Column(sa.Integer, primary_key=True)
    steps = sa.Column(sa.Integer, nullable=False, default=0)


def count_step(workflow: Any) -> None:
    db.session.execute(
        sa.update(Parcel).where(Parcel.id == int(workflow.hero_id)).values(steps=Parcel.steps + 1)
    )


class DeliveryWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def pick(self) -> None:
        count_step(self)

    @step(after="pick")
    def pack(self) -> None:
        count_step(self)

    @step(after="pick")
    def label(self) -> None:
        count_step(self)

    @step(after="pick")
    def invoice(self) -> None:
        count_step(self)

    @step(after=["pack", "label", "invoice"])
    def ship(self) -> None:
        count_step(self)


class ReminderWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def send(self) -> None:
        count_step(self)

    @step(wait=timedelta(seconds=1))
    def remind(self) -> None:
        count_step(self)


@pytest.fixture
def huey_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return queue_url(getattr(request, "param", "memory"), tmp_path)


matrix = pytest.mark.parametrize(
    ("db_url", "huey_url"),
    [
        ("sqlite", "sqlite"),
        ("sqlite", "redis"),
        ("postgresql", "sqlite"),
        ("postgresql", "redis"),
        ("mariadb", "redis"),
    ],
    indirect=True,
)


def states(workflow_ids: list[int]) -> list[str]:
    w = geneva.tables.workflows
    with geneva.engine().connect() as conn:
        return [
            conn.execute(sa.select(w.c.state).where(w.c.id == wid)).scalar_one()
            for wid in workflow_ids
        ]


def step_counts(parcel_ids: list[int]) -> list[int]:
    p = Parcel.__table__
    with geneva.engine().connect() as conn:
        return [
            conn.execute(sa.select(p.c.steps).where(p.c.id == pid)).scalar_one()
            for pid in parcel_ids
        ]


def start_workflows(cls: Any, count: int) -> tuple[list[int], list[int]]:
    parcels = [Parcel(steps=0) for _ in range(count)]
    db.session.add_all(parcels)
    db.session.commit()
    workflow_ids = [cls.create(hero=parcel).id for parcel in parcels]
    return workflow_ids, [p.id for p in parcels]


@matrix
def test_a_consumer_runs_several_dag_workflows_to_the_end(app, huey):
    with running_consumer(huey):
        workflow_ids, parcel_ids = start_workflows(DeliveryWorkflow, 6)
        wait_until(lambda: set(states(workflow_ids)) == {"finished"})
    assert step_counts(parcel_ids) == [5] * 6
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        outcomes = conn.execute(sa.select(e.c.outcome, sa.func.count()).group_by(e.c.outcome)).all()
    assert outcomes == [("success", 30)]


@pytest.mark.parametrize(
    ("db_url", "huey_url"), [("sqlite", "sqlite"), ("postgresql", "redis")], indirect=True
)
def test_when_the_queue_delivers_every_trigger_twice_each_body_still_runs_once(app, huey):
    seen: set[str] = set()
    lock = threading.Lock()

    @huey.pre_execute(name="deliver-twice")  # type: ignore[untyped-decorator]
    def deliver_twice(task: Any) -> None:
        # Fault injection: the first delivery of each message puts a copy back on the
        # queue, where another worker may pick it up while the first one runs. (The
        # periodic housekeeping task may run too; it is left alone.)
        if task.name != "geneva.perform_step":
            return
        with lock:
            first = task.id not in seen
            seen.add(task.id)
        if first:
            huey.enqueue(task)

    try:
        with running_consumer(huey):
            workflow_ids, parcel_ids = start_workflows(DeliveryWorkflow, 4)
            wait_until(lambda: set(states(workflow_ids)) == {"finished"})
            # Let the last duplicates arrive, so they are proven harmless too.
            wait_until(lambda: huey.pending_count() == 0, timeout=10)
    finally:
        huey.unregister_pre_execute("deliver-twice")
    assert step_counts(parcel_ids) == [5] * 4
    assert len(seen) == 20


@pytest.mark.parametrize(
    ("db_url", "huey_url"), [("sqlite", "sqlite"), ("postgresql", "redis")], indirect=True
)
def test_a_step_with_a_short_wait_runs_through_the_huey_scheduler(app, huey):
    with running_consumer(huey, workers=2):
        started = time.monotonic()
        workflow_ids, parcel_ids = start_workflows(ReminderWorkflow, 2)
        wait_until(lambda: set(states(workflow_ids)) == {"finished"}, timeout=15)
        elapsed = time.monotonic() - started
    assert elapsed >= 1.0
    assert step_counts(parcel_ids) == [2, 2]


WORKER_APP = '''
"""A small app for the worker command test."""

import os

import click
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step

HERE = os.path.dirname(os.path.abspath(__file__))

db = SQLAlchemy()
geneva = Geneva(db)


class Crate(db.Model):
    __tablename__ = "worker_crates"
    id = sa.Column(sa.Integer, primary_key=True)
    steps = sa.Column(sa.Integer, nullable=False, default=0)


def count(workflow):
    db.session.execute(
        sa.update(Crate).where(Crate.id == int(workflow.hero_id)).values(steps=Crate.steps + 1)
    )


class CrateWorkflow(geneva.Workflow):
    @step
    def fill(self):
        count(self)

    @step(after="fill")
    def weigh(self):
        count(self)

    @step(after="fill")
    def seal(self):
        count(self)

    @step(after=["weigh", "seal"])
    def dispatch(self):
        count(self)


app = Flask(__name__, instance_path=os.path.join(HERE, "instance"))
app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(HERE, "app.db")
app.config["GENEVA_HUEY"] = "sqlite:///" + os.path.join(HERE, "huey.db")
db.init_app(app)
geneva.init_app(app)
with app.app_context():
    db.create_all()  # the consumer process uses the database before any worker starts


@app.cli.command("create-crates")
@click.argument("count", type=int)
def create_crates(count):
    for _ in range(count):
        crate = Crate(steps=0)
        db.session.add(crate)
        db.session.commit()
        CrateWorkflow.create(hero=crate)
'''


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_the_worker_command_runs_workflows_and_stops_cleanly_on_sigint(tmp_path, worker_type):
    (tmp_path / "worker_app.py").write_text(textwrap.dedent(WORKER_APP))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    flask = [sys.executable, "-m", "flask", "--app", "worker_app"]
    subprocess.run(
        [*flask, "create-crates", "3"], cwd=tmp_path, env=env, check=True, timeout=TIMEOUT
    )

    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [*flask, "geneva", "worker", "-w", "2", "-k", worker_type],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:

        def finished() -> bool:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT state FROM geneva_workflows")).all()
            return len(rows) == 3 and {r[0] for r in rows} == {"finished"}

        wait_until(finished)
        with engine.connect() as conn:
            counts = conn.execute(sa.text("SELECT steps FROM worker_crates")).scalars().all()
        assert counts == [4, 4, 4]
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            code = worker.wait(timeout=TIMEOUT)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=TIMEOUT)
            log.close()
            engine.dispose()
    output = (tmp_path / "worker.log").read_text()
    assert code == 0, output
    assert f"flask-geneva worker: 2 {worker_type} worker(s) on SqliteHuey" in output
