"""Shared set-up for the benchmarks: URLs, a throwaway app, no-op workflows, timers."""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step

DATABASES = {
    "sqlite": lambda: f"sqlite:///{tempfile.mkdtemp(prefix='geneva-bench-')}/bench.db",
    "postgresql": lambda: os.environ.get(
        "GENEVA_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": lambda: os.environ.get(
        "GENEVA_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
    ),
}
QUEUES = {
    "sqlite": lambda: f"sqlite:///{tempfile.mkdtemp(prefix='geneva-bench-q-')}/huey.db",
    "redis": lambda: os.environ.get("GENEVA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    "memory": lambda: "memory://",
}

db = SQLAlchemy()
geneva = Geneva(db)

#: Body start/end times per (workflow id, step), filled by the steps below.
marks: dict[tuple[int, str], tuple[float, float]] = {}
_marks_lock = threading.Lock()


def _mark(workflow: Any, name: str, started: float) -> None:
    with _marks_lock:
        marks[(workflow.id, name)] = (started, time.time())


class ThreeSteps(geneva.Workflow):  # type: ignore[misc,name-defined]
    """Three no-op steps in a line: the shape of the SPEC's throughput target."""

    @step
    def first(self) -> None:
        _mark(self, "first", time.time())

    @step
    def second(self) -> None:
        _mark(self, "second", time.time())

    @step
    def third(self) -> None:
        _mark(self, "third", time.time())


class FanOut(geneva.Workflow):  # type: ignore[misc,name-defined]
    """A root, eight parallel branches and a join."""

    @step
    def start(self) -> None:
        pass

    branches = [step(lambda self: None, after="start") for _ in range(8)]

    @step(after=[f"step_{i}" for i in range(2, 10)])
    def join(self) -> None:
        pass


def make_app(db_url: str, huey_url: str) -> Flask:
    app = Flask("geneva_bench", instance_path=tempfile.mkdtemp(prefix="geneva-bench-i-"))
    app.config.update(SQLALCHEMY_DATABASE_URI=db_url, GENEVA_HUEY=huey_url)
    if db_url.startswith("postgresql"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 20}
    db.init_app(app)
    geneva.init_app(app)
    with app.app_context():
        db.drop_all()
        db.create_all()
        geneva.huey.flush()
    return app


def count_finished(app: Flask, cls: type) -> int:
    w = geneva.tables.workflows
    with app.app_context(), geneva.engine().connect() as conn:
        query = sa.select(sa.func.count()).where(
            w.c.state == "finished", w.c.type == cls.__geneva_identity__
        )
        return int(conn.execute(query).scalar_one())


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not complete in time")
        time.sleep(interval)


@contextmanager
def running_consumer(huey: Any, workers: int, worker_type: str = "thread") -> Iterator[Any]:
    # The internal helper behind geneva.make_consumer(), because the raw-Huey baseline of
    # bench/throughput.py has no app: both sides must poll with the same settings.
    from flask_geneva.tasks import make_consumer

    consumer = make_consumer(huey, workers=workers, worker_type=worker_type, periodic=False)
    consumer.start()
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def median(values: list[float]) -> float:
    return statistics.median(values)
