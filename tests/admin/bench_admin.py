"""Admin render times as the tables grow (a benchmark script, not a test).

Fills the workflow tables with N workflows (5 executions each: two reattempted tries of
the first step, then its three steps; mostly finished, some paused with a failure, some
ready/performing), then times every page through the Flask test client (median of
several requests)::

    .venv/bin/python tests/admin/bench_admin.py --db postgresql --sizes 10000 100000
    .venv/bin/python tests/admin/bench_admin.py --db sqlite --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)


class InvoiceWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def draft(self) -> None: ...

    @step
    def send(self) -> None: ...

    @step
    def collect(self) -> None: ...


class OnboardingWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def welcome(self) -> None: ...

    @step(after="welcome")
    def tips(self) -> None: ...

    @step(after="welcome")
    def survey(self) -> None: ...


CLASSES = {
    "InvoiceWorkflow": ("draft", "send", "collect"),
    "OnboardingWorkflow": ("welcome", "tips", "survey"),
}
STATES = [
    ("finished", 0.80),
    ("canceled", 0.10),
    ("paused", 0.05),
    ("ready", 0.03),
    ("performing", 0.02),
]


def _fill(start_id: int, count: int) -> None:
    w, e = geneva.tables.workflows, geneva.tables.executions
    rng = random.Random(start_id)
    # A workflow every 5 s, the millionth created just now: the newest day holds 17,280
    # of them, for the Fleet page's window.
    base = clock.now() - timedelta(seconds=5 * 1_000_000)
    wf_rows: list[dict[str, Any]] = []
    ex_rows: list[dict[str, Any]] = []
    names = list(CLASSES)
    weights = [p for _, p in STATES]
    for i in range(start_id, start_id + count):
        kind = names[i % 2]
        state = rng.choices([s for s, _ in STATES], weights)[0]
        created = base + timedelta(seconds=i * 5)
        wf_rows.append(
            dict(
                id=i,
                type=kind,
                hero_type="Customer",
                hero_id=str(i % 50_000),
                state=state,
                allow_multiple=True,
                created_at=created,
                updated_at=created + timedelta(minutes=5),
                started_at=created,
                transitioned_at=created + timedelta(minutes=5),
            )
        )
        steps = CLASSES[kind]
        t0 = created - timedelta(minutes=2)
        for n in range(2):  # the first step's two tries that raised and were reattempted
            t = t0 + timedelta(minutes=n)
            ex_rows.append(
                dict(
                    id=i * 5 + n,
                    workflow_id=i,
                    step_name=steps[0],
                    state="completed",
                    outcome="reattempted",
                    scheduled_for=t,
                    started_at=t,
                    finished_at=t + timedelta(seconds=1),
                    error_class="billing.GatewayTimeout",
                    error_message="gateway timed out",
                    error_traceback=None,
                    attempt=n + 1,
                    consecutive_reattempts=n,
                    created_at=t,
                    updated_at=t,
                )
            )
        for n, name in enumerate(steps):
            last = n == len(steps) - 1
            ex_state = "completed"
            if state == "paused" and last:
                ex_state = "failed"
            elif state in ("ready", "performing") and last:
                ex_state = "scheduled" if state == "ready" else "in_progress"
            elif state == "canceled" and last:
                ex_state = "canceled"
            t = created + timedelta(minutes=n)
            ex_rows.append(
                dict(
                    id=i * 5 + 2 + n,
                    workflow_id=i,
                    step_name=name,
                    state=ex_state,
                    outcome={
                        "completed": "success",
                        "failed": "failed",
                        "canceled": "canceled",
                    }.get(ex_state),
                    scheduled_for=t,
                    started_at=t if ex_state != "scheduled" else None,
                    finished_at=t + timedelta(seconds=1)
                    if ex_state in ("completed", "failed", "canceled")
                    else None,
                    error_class="billing.CardDeclined" if ex_state == "failed" else None,
                    error_message="card declined" if ex_state == "failed" else None,
                    error_traceback=None,
                    attempt=3 if n == 0 else 1,
                    consecutive_reattempts=2 if n == 0 else 0,
                    created_at=t,
                    updated_at=t,
                )
            )
    with geneva.engine().begin() as conn:
        conn.execute(sa.insert(w), wf_rows)
        conn.execute(sa.insert(e), ex_rows)


def _time(client: Any, path: str, runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql", "mariadb"], default="sqlite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep", action="store_true", help="keep the database (to EXPLAIN)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    server = {
        "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/",
        "mariadb": "mysql+pymysql://root@127.0.0.1:3306/",
    }
    name = f"geneva_bench_{int(time.time())}"
    if args.db == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        admin = sa.create_engine(
            server[args.db] + ("postgres" if args.db == "postgresql" else ""),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        url = server[args.db] + name
    app = Flask(__name__, instance_path=str(tmp))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        GENEVA_HUEY="memory://",
        SECRET_KEY="b",
        GENEVA_ADMIN_AUTHORIZE=lambda action: True,
        GENEVA_ADMIN_METRICS=True,
    )
    db.init_app(app)
    geneva.init_app(app)
    app.register_blueprint(geneva.admin_blueprint, url_prefix="/admin")
    client = app.test_client()
    try:
        with app.app_context():
            geneva.create_all()
            filled = 0
            header = (
                "workflows",
                "overview",
                "list",
                "paused",
                "class+step",
                "deep page",
                "detail",
                "overdue",
                "retrying",
                "actor",
                "fleet 24h",
                "defs",
                "metrics",
            )
            print(" ".join(f"{h:>10}" for h in header), " (ms, median)")
            for size in sorted(args.sizes):
                while filled < size:
                    chunk = min(20_000, size - filled)
                    _fill(filled + 1, chunk)
                    filled += chunk
                if args.db == "postgresql":
                    # What autovacuum does in production: statistics and the visibility
                    # map (index-only scans skip the heap only for all-visible pages).
                    vacuum = geneva.engine().execution_options(isolation_level="AUTOCOMMIT")
                    with vacuum.connect() as conn:
                        conn.execute(sa.text("VACUUM ANALYZE"))
                deep = max(1, filled - 5_000)
                figures = [
                    _time(client, "/admin/"),
                    _time(client, "/admin/workflows"),
                    _time(client, "/admin/workflows?state=paused"),
                    _time(client, "/admin/classes/InvoiceWorkflow?step=collect&state=paused"),
                    _time(client, f"/admin/workflows?before={deep}"),
                    _time(client, f"/admin/workflows/{filled // 2}"),
                    _time(client, "/admin/workflows?attention=overdue"),
                    _time(client, "/admin/workflows?attention=reattempting"),
                    _time(client, "/admin/workflows?actor=ops@example.com"),
                    _time(client, "/admin/fleet?window=24h"),
                    _time(client, "/admin/definitions"),
                    _time(client, "/admin/metrics"),
                ]
                print(f"{filled:>10} " + " ".join(f"{v:>10.1f}" for v in figures))
    finally:
        with app.app_context():
            if not args.keep:
                geneva.drop_all()
            for engine in db.engines.values():
                engine.dispose()
        if args.keep:
            print("kept", url)
        elif args.db != "sqlite":
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE {name}"))


if __name__ == "__main__":
    main()
