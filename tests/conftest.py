"""Shared fixtures: one contract suite over SQLite, PostgreSQL and MariaDB, and over
SqliteHuey, RedisHuey and MemoryHuey.

A test module that touches the database defines, at module level, ``db =
SQLAlchemy()`` and ``geneva = Geneva(db)`` plus its models and workflow classes; the
``app`` fixture builds a Flask app on them for each database. Each backend adds only a
URL (in ``helpers.py``, with the other helpers the modules share). A server that is not
running is a visible skip locally and a failure when ``CI=true``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from helpers import DATABASE_URLS
from helpers import RUN_TOKEN
from helpers import connect_args
from helpers import require

from flask_geneva import clock

_created: dict[str, str] = {}


def _server_url(name: str) -> sa.URL:
    return sa.make_url(DATABASE_URLS[name])


def run_database_url(name: str) -> str:
    """Return the URL of this run's own database on server ``name``, creating it once."""
    if name not in _created:
        url = _server_url(name)
        database = f"geneva_{RUN_TOKEN}"
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=connect_args(name))
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {database}"))
        finally:
            admin.dispose()
        _created[name] = url.set(database=database).render_as_string(hide_password=False)
    return _created[name]


def _drop_run_databases() -> None:
    for name, created in _created.items():
        url = _server_url(name)
        database = sa.make_url(created).database
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=connect_args(name))
        try:
            with admin.connect() as conn:
                if name == "postgresql":
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                else:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
        finally:
            admin.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _drop_run_databases()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL per backend; SQLite uses a file so several connections share it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    require(request.param)
    return run_database_url(request.param)


@pytest.fixture
def huey_url(tmp_path: Path) -> str:
    """The queue for a test: in-memory unless a test parametrises it (see ``helpers.queue_url``)."""
    return "memory://"


@pytest.fixture
def app(
    request: pytest.FixtureRequest, db_url: str, huey_url: str, tmp_path: Path
) -> Iterator[Flask]:
    """A Flask app on the test module's ``db`` and ``geneva``, with fresh tables."""
    module = request.module
    db, geneva = module.db, module.geneva
    app = Flask(module.__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=db_url,
        GENEVA_HUEY=huey_url,
        # Queue names are per run: parallel runs share one Redis.
        GENEVA_HUEY_NAME=f"geneva-test-{RUN_TOKEN}",
    )
    extra = getattr(module, "APP_CONFIG", None)
    if extra:
        app.config.update(extra)
    db.init_app(app)
    geneva.init_app(app)
    with app.app_context():
        db.drop_all()
        db.create_all()
    ctx = app.app_context()
    ctx.push()
    try:
        yield app
    finally:
        db.session.remove()
        ctx.pop()
        with app.app_context():
            db.drop_all()
            for engine in db.engines.values():
                engine.dispose()
        clock.reset()


@pytest.fixture
def huey(app: Flask) -> Any:
    """The app's Huey instance, emptied (``flush`` removes only this queue's keys)."""
    instance = app.extensions["geneva"].huey
    instance.flush()
    return instance


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads running (a consumer not stopped)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    assert not leaked, f"threads left running: {leaked}"
