"""Helpers shared by the test modules: import them with ``from helpers import ...``.

(``tests/`` is on ``sys.path`` because ``tests/conftest.py`` lives there; a module named
``conftest`` must not be imported a second time as ``tests.conftest``, which would give
it a second ``RUN_TOKEN`` and a second cache of which servers answer.)

* Servers: ``IN_CI``, the database and Redis URLs, ``RUN_TOKEN``, ``require`` and
  ``queue_url``. ``conftest.py`` builds its fixtures on them.
* Effect rows: ``mark_model`` makes a module's ``Mark`` model (a row a step body writes
  to prove it ran); ``Rows`` reads workflows, executions and marks back through the
  test's session and runs a scheduled step; ``Committed`` reads what is committed, on a
  connection of its own, as another process would see it.
* Waiting: ``wait_until`` polls a condition, ``running_consumer`` runs a Huey consumer
  in this process; ``close`` compares two timestamps.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_geneva.executor import execute
from flask_geneva.tasks import make_consumer

# -- servers ---------------------------------------------------------------------------

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

DATABASE_URLS = {
    "postgresql": os.environ.get(
        "GENEVA_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "GENEVA_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
    ),
}
REDIS_URL = os.environ.get("GENEVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

#: Each test run works in databases and queues of its own, so runs in parallel never collide.
RUN_TOKEN = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"

_availability: dict[str, str | None] = {}


def connect_args(name: str) -> dict[str, Any]:
    """Connection arguments for server ``name``: a short connect timeout."""
    return {"connect_timeout": 3} if name in ("postgresql", "mariadb") else {}


def _probe(name: str) -> str | None:
    """Return None if the server answers, else the reason it does not."""
    if name not in _availability:
        try:
            if name == "redis":
                import redis

                redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
            else:
                engine = sa.create_engine(DATABASE_URLS[name], connect_args=connect_args(name))
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                finally:
                    engine.dispose()
            _availability[name] = None
        except Exception as error:  # any failure to connect means "not available"
            _availability[name] = f"{name} is not reachable: {type(error).__name__}: {error}"
    return _availability[name]


def require(name: str) -> None:
    """Skip (locally) or fail (under CI=true) when a server is not available."""
    reason = _probe(name)
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires {name}: {reason}")
        pytest.skip(reason)


def queue_url(kind: str, tmp_path: Path) -> str:
    """Return a GENEVA_HUEY URL for ``kind`` (sqlite, redis, memory)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'huey.db'}"
    if kind == "redis":
        require("redis")
        return REDIS_URL
    return "memory://"


# -- effect rows -----------------------------------------------------------------------


def _id(workflow: Any) -> Any:
    """A workflow's id, given the workflow or the id itself."""
    return getattr(workflow, "id", workflow)


def mark_model(db: Any, tablename: str, **columns: sa.Column[Any]) -> Any:
    """A ``Mark`` model on ``db``: one row per step body run (workflow id and a name).

    ``columns`` adds columns a module's bodies record besides the name.
    """
    attributes: dict[str, Any] = {
        "__tablename__": tablename,
        "id": sa.Column(sa.Integer, primary_key=True),
        "workflow_id": sa.Column(sa.Integer, nullable=False),
        "name": sa.Column(sa.String(200), nullable=False),
        **columns,
    }
    return type("Mark", (db.Model,), attributes)


class Rows:
    """Fresh reads of workflows, executions and marks for one test module, and runs.

    Every read first ends the session's transaction, so MariaDB's REPEATABLE READ never
    shows a snapshot older than the step that just ran. ``ignore_schedule=True`` makes
    ``run`` run a step before its time unless the call says otherwise.
    """

    def __init__(
        self, db: Any, geneva: Any, mark_model: Any = None, *, ignore_schedule: bool = False
    ) -> None:
        self.db = db
        self.geneva = geneva
        self.mark_model = mark_model
        self.ignore_schedule = ignore_schedule

    def mark(self, workflow: Any, name: str, **values: Any) -> None:
        """Record, in the body's session, that ``workflow`` ran ``name``."""
        self.db.session.add(self.mark_model(workflow_id=workflow.id, name=name, **values))

    def fresh(self, instance: Any) -> Any:
        """Reload a row after ending the session's transaction (drops an old snapshot)."""
        self.db.session.commit()
        self.db.session.refresh(instance)
        return instance

    def executions(self, workflow: Any, step_name: str | None = None) -> list[Any]:
        """The workflow's executions (optionally of one step), oldest first, re-read."""
        self.db.session.commit()
        model = self.geneva.StepExecution
        query = (
            sa.select(model)
            .where(model.workflow_id == _id(workflow))
            .order_by(model.id)
            .execution_options(populate_existing=True)
        )
        if step_name is not None:
            query = query.where(model.step_name == step_name)
        return list(self.db.session.scalars(query))

    def history(self, workflow: Any) -> list[tuple[str, str, str | None]]:
        """(step, state, outcome) of each of the workflow's executions, oldest first."""
        return [(e.step_name, e.state, e.outcome) for e in self.executions(workflow)]

    def marks(self, workflow: Any) -> list[str]:
        """The names the workflow's step bodies marked, in the order they committed."""
        self.db.session.commit()
        mark = self.mark_model
        query = sa.select(mark.name).where(mark.workflow_id == _id(workflow)).order_by(mark.id)
        return list(self.db.session.scalars(query))

    def count_marks(self, workflow: Any, name: str) -> int:
        """How many times the workflow's bodies marked ``name`` (in the session's view)."""
        mark = self.mark_model
        query = sa.select(sa.func.count()).where(
            mark.workflow_id == _id(workflow), mark.name == name
        )
        return int(self.db.session.scalar(query) or 0)

    def scheduled(self, workflow: Any, step_name: str | None = None) -> Any:
        """The one scheduled execution of ``step_name`` (of any step if None)."""
        found = [e for e in self.executions(workflow, step_name) if e.state == "scheduled"]
        what = step_name or "execution"
        assert len(found) == 1, f"expected one scheduled {what}: {self.history(workflow)}"
        return found[0]

    def execute(self, app: Any, execution_id: int, **kwargs: Any) -> Any:
        """Run one execution as a worker would, between two commits of the session."""
        self.db.session.commit()  # the body shares this session: give it a fresh snapshot
        report = execute(self.geneva, app.extensions["geneva"], execution_id, **kwargs)
        self.db.session.commit()
        return report

    def run(self, app: Any, workflow: Any, step_name: str | None = None, **kwargs: Any) -> Any:
        """Run the one scheduled execution of ``step_name``, then reload ``workflow``."""
        if self.ignore_schedule:
            kwargs.setdefault("ignore_schedule", True)
        report = self.execute(app, self.scheduled(workflow, step_name).id, **kwargs)
        self.db.session.refresh(workflow)
        return report


class Committed:
    """What is committed, read on a connection of the engine's own (not the session).

    This is what a worker or another process sees, whatever the test's session holds.
    ``mark_model`` is the module's ``Mark`` model, for ``marks``.
    """

    def __init__(self, geneva: Any, mark_model: Any = None) -> None:
        self.geneva = geneva
        self.mark_model = mark_model

    def state(self, workflow: Any) -> str:
        """The workflow's state."""
        w = self.geneva.tables.workflows
        query = sa.select(w.c.state).where(w.c.id == _id(workflow))
        with self.geneva.engine().connect() as conn:
            return str(conn.execute(query).scalar_one())

    def history(
        self, workflow: Any, step_name: str | None = None
    ) -> list[tuple[str, str, str | None]]:
        """(step, state, outcome) of the workflow's executions (of one step), oldest first."""
        e = self.geneva.tables.executions
        query = (
            sa.select(e.c.step_name, e.c.state, e.c.outcome)
            .where(e.c.workflow_id == _id(workflow))
            .order_by(e.c.id)
        )
        if step_name is not None:
            query = query.where(e.c.step_name == step_name)
        with self.geneva.engine().connect() as conn:
            return [(r.step_name, r.state, r.outcome) for r in conn.execute(query)]

    def scheduled(self, workflow: Any) -> dict[str, int]:
        """Step name → id of its scheduled execution."""
        e = self.geneva.tables.executions
        query = sa.select(e.c.step_name, e.c.id).where(
            e.c.workflow_id == _id(workflow), e.c.state == "scheduled"
        )
        with self.geneva.engine().connect() as conn:
            return {name: ident for name, ident in conn.execute(query)}

    def marks(self, workflow: Any) -> list[str]:
        """The names the workflow's step bodies marked, in the order they committed."""
        t = self.mark_model.__table__
        query = sa.select(t.c.name).where(t.c.workflow_id == _id(workflow)).order_by(t.c.id)
        with self.geneva.engine().connect() as conn:
            return list(conn.execute(query).scalars())


# -- waiting ---------------------------------------------------------------------------

#: How long a test waits for a worker before it fails: generous, for a loaded CI machine.
TIMEOUT = 30


def wait_until(
    condition: Callable[[], Any],
    timeout: float = TIMEOUT,
    message: str | Callable[[], str] | None = None,
    interval: float = 0.05,
) -> Any:
    """Poll ``condition`` until it returns something true, and return that.

    Fails the test after ``timeout`` seconds with ``message`` (a string, or a callable
    asked for the string then, to show the state at the time).
    """
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            if callable(message):
                message = message()
            raise AssertionError(message or f"condition not met within {timeout} s")
        time.sleep(interval)
    return result


@contextmanager
def running_consumer(huey: Any, workers: int = 4, **options: Any) -> Iterator[Any]:
    """Run a thread-worker consumer in this process; stop it gracefully afterwards.

    ``start()`` installs signal handlers for the consumer process; they are put back so
    the test run's own Ctrl-C handling survives. ``options`` go to ``make_consumer``
    (``periodic=False``: without the periodic housekeeping).
    """
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = make_consumer(huey, workers=workers, **options)
    consumer.start()
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    threads = [t for _, t in consumer.worker_threads] + [consumer.scheduler]
    assert not any(t.is_alive() for t in threads), "consumer threads still running"


def close(a: datetime | None, b: datetime, seconds: float = 2.0) -> bool:
    """Whether timestamp ``a`` is set and within ``seconds`` of ``b``."""
    return a is not None and abs((a - b).total_seconds()) <= seconds


def deploy(geneva: Any, workflow: Any, cls: type[Any]) -> Any:
    """Make ``workflow``'s row belong to ``cls``, as a deploy that changed its class would.

    One process cannot hold two versions of a class under one stored identity, so a
    test defines the new version as another class and points the row at it. Returns
    the workflow loaded as ``cls`` (the old instance is detached).
    """
    ident = _id(workflow)
    w = geneva.tables.workflows
    with geneva.db.engine.begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == ident).values(type=cls.__geneva_identity__))
    geneva.db.session.commit()  # a new snapshot (MariaDB's REPEATABLE READ keeps the old)
    geneva.db.session.expunge_all()
    return geneva.db.session.get(cls, ident)


def apply_revision(
    engine: sa.Engine, source: str, tmp_path: Path, direction: str = "upgrade"
) -> None:
    """Run one revision file's upgrade() or downgrade() on ``engine``'s database."""
    import importlib.util

    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    path = tmp_path / f"revision_{abs(hash(source))}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with engine.begin() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            getattr(module, direction)()
