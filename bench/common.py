"""Shared set-up for the benchmarks: URLs, a throwaway app, no-op workflows, timers."""

from __future__ import annotations

import atexit
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

#: Names this process's server database and Huey queues, so that benchmark runs never
#: share state: not with the test suite (databases ``test`` and ``geneva_<token>``, Redis
#: databases 15 and 3), and not with another benchmark running at the same time (two
#: runs on one Huey queue would execute each other's triggers).
RUN_TOKEN = os.environ.get("GENEVA_BENCH_TOKEN") or str(os.getpid())

#: A server database whose name starts with this is the benchmarks' own: make_app creates
#: it afresh and drops it when the process exits. Any other name (set through the
#: environment variables below) only has its two tables dropped and re-created.
BENCH_DATABASE_PREFIX = "bench_"

DATABASES = {
    "sqlite": lambda: f"sqlite:///{tempfile.mkdtemp(prefix='geneva-bench-')}/bench.db",
    "postgresql": lambda: os.environ.get(
        "GENEVA_BENCH_POSTGRESQL_URL",
        f"postgresql+psycopg://postgres@127.0.0.1:5432/bench_geneva_{RUN_TOKEN}",
    ),
    "mariadb": lambda: os.environ.get(
        "GENEVA_BENCH_MARIADB_URL",
        f"mysql+pymysql://root@127.0.0.1:3306/bench_geneva_{RUN_TOKEN}?charset=utf8mb4",
    ),
}
#: Redis database 14, with queue names of this run's own (see RUN_TOKEN).
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


class OneStep(geneva.Workflow):  # type: ignore[misc,name-defined]
    """One no-op step: the unit a map item is compared with (one claim, body, finalize)."""

    @step
    def only(self) -> None:
        pass


class FanOut(geneva.Workflow):  # type: ignore[misc,name-defined]
    """A root, eight parallel branches and a join."""

    @step
    def start(self) -> None:
        pass

    branches = [step(lambda self: None, after="start") for _ in range(8)]

    @step(after=[f"step_{i}" for i in range(2, 10)])
    def join(self) -> None:
        pass


def _server_statements(url: str, *statements: str) -> None:
    parsed = sa.make_url(url)
    # A server-level connection, to a database that always exists (URL.set(database=None)
    # would keep the bench database, which may not exist yet).
    admin_url = parsed.set(
        database="postgres" if parsed.get_backend_name() == "postgresql" else "mysql"
    )
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        admin.dispose()


def _drop_statement(url: str) -> str:
    parsed = sa.make_url(url)
    force = " WITH (FORCE)" if parsed.get_backend_name() == "postgresql" else ""
    return f"DROP DATABASE IF EXISTS {parsed.database}{force}"


def fresh_database(url: str) -> bool:
    """Create ``url``'s database afresh if it is a bench database; say whether it was.

    A whole database of its own (not just the two tables) keeps runs of different engine
    versions, whose schemas may differ, from seeing each other's leftovers. It is dropped
    when this process exits (forked worker processes exit without running atexit).
    """
    parsed = sa.make_url(url)
    name = parsed.database or ""
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "mysql") or not name.startswith(BENCH_DATABASE_PREFIX):
        return False
    _server_statements(url, _drop_statement(url), f"CREATE DATABASE {name}")
    creator = os.getpid()

    def drop() -> None:
        if os.getpid() == creator:
            _server_statements(url, _drop_statement(url))

    atexit.register(drop)
    return True


def make_app(db_url: str, huey_url: str, config: dict[str, Any] | None = None) -> Flask:
    """A throwaway app on ``db_url`` and ``huey_url`` (plus ``config``), tables made afresh."""
    fresh_database(db_url)
    app = Flask("geneva_bench", instance_path=tempfile.mkdtemp(prefix="geneva-bench-i-"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=db_url,
        GENEVA_HUEY=huey_url,
        GENEVA_HUEY_NAME=f"geneva-bench-{RUN_TOKEN}",
    )
    app.config.update(config or {})
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


def wait_for_count(
    count: Any, target: int, *, stall: float = 120, timeout: float = 3600, interval: float = 0.05
) -> None:
    """Poll ``count()`` until it reaches ``target``; fail if it stops moving for ``stall`` s."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while (current := int(count())) < target:
        now = time.monotonic()
        if current != last:
            last, moved = current, now
        elif now - moved > stall:
            raise TimeoutError(f"stalled at {current} of {target} for {stall:.0f} s")
        if now > deadline:
            raise TimeoutError(f"only {current} of {target} done after {timeout:.0f} s")
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


def hop_latencies_ms() -> list[float]:
    """Each ThreeSteps hop seen in :data:`marks`: a body's end to its successor's start."""
    hops = []
    for (wid, name), (_, end) in list(marks.items()):
        following = {"first": "second", "second": "third"}.get(name)
        if following and (wid, following) in marks:
            hops.append((marks[(wid, following)][0] - end) * 1000)
    return hops


#: The two timing modes of the throughput benchmarks, and what each figure means.
MODES = {
    "outside": "created outside the window: all work is queued first, the clock starts "
    "with the consumer",
    "inside": "started inside the window: the consumer is idle and ready, the clock starts, "
    "then each workflow is started one by one (its own commit / enqueue)",
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def median(values: list[float]) -> float:
    return statistics.median(values)
