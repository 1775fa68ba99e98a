"""Time housekeeping's batched deletion of old finished workflows (not part of the tests).

    python -m bench.housekeeping_delete --db postgresql --workflows 100000

Fills a database of its own with N finished workflows (3 executions each) whose last
transition is 40 days old, plus N/10 recent ones that must survive, then runs
``geneva.housekeeping()`` once and reports the total time, rows per second, and the
longest single transaction (the longest time any lock was held).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/mysql?charset=utf8mb4",
}
DATABASE = "geneva_bench_housekeeping"

db = SQLAlchemy()
geneva = Geneva(db)


class BenchWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def a(self) -> None:
        pass

    @step
    def b(self) -> None:
        pass

    @step
    def c(self) -> None:
        pass


def database_url(name: str, tmp: str) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp}/bench.db"
    server = sa.make_url(SERVERS[name])
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if name == "postgresql":
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        else:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    admin.dispose()
    return server.set(database=DATABASE).render_as_string(hide_password=False)


def fill(count: int, *, age: timedelta, chunk: int = 5000) -> None:
    w, e = geneva.tables.workflows, geneva.tables.executions
    now = datetime.now(UTC).replace(tzinfo=None)  # stored timestamps are naive UTC
    at = now - age
    with geneva.engine().begin() as conn:
        first = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(w.c.id), 0))).scalar())
    for start in range(0, count, chunk):
        ids = range(first + start + 1, first + min(start + chunk, count) + 1)
        workflows = [
            dict(
                id=i,
                type="BenchWorkflow",
                hero_type=None,
                hero_id=None,
                state="finished",
                allow_multiple=False,
                created_at=at,
                updated_at=at,
                started_at=at,
                transitioned_at=at,
            )
            for i in ids
        ]
        executions = [
            dict(
                workflow_id=i,
                step_name=name,
                state="completed",
                outcome="success",
                scheduled_for=at,
                started_at=at,
                finished_at=at,
                completed_at=at,
                attempt=1,
                consecutive_reattempts=0,
                created_at=at,
                updated_at=at,
            )
            for i in ids
            for name in ("a", "b", "c")
        ]
        with geneva.engine().begin() as conn:
            conn.execute(sa.insert(w), workflows)
            conn.execute(sa.insert(e), executions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "mariadb"], default="postgresql")
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    import tempfile

    tmp = tempfile.mkdtemp(prefix="geneva-bench-hk-")
    app = Flask(__name__, instance_path=tmp)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url(args.db, tmp),
        GENEVA_HUEY="memory://",
        GENEVA_HOUSEKEEPING_BATCH_SIZE=args.batch_size,
    )
    db.init_app(app)
    geneva.init_app(app)
    with app.app_context():
        geneva.create_all()
        started = time.perf_counter()
        fill(args.workflows, age=timedelta(days=40))
        fill(args.workflows // 10, age=timedelta(days=1))
        print(
            f"filled {args.workflows:,} old + {args.workflows // 10:,} recent workflows "
            f"(3 executions each) in {time.perf_counter() - started:.1f}s"
        )
        transactions: list[float] = []
        opened: dict[int, float] = {}
        engine = geneva.engine()

        def on_begin(conn: Any) -> None:
            opened[id(conn)] = time.perf_counter()

        def on_end(conn: Any) -> None:
            began = opened.pop(id(conn), None)
            if began is not None:
                transactions.append(time.perf_counter() - began)

        sa.event.listen(engine, "begin", on_begin)
        sa.event.listen(engine, "commit", on_end)
        summary = geneva.housekeeping()
        w = geneva.tables.workflows
        with engine.connect() as conn:
            left = conn.execute(sa.select(sa.func.count()).select_from(w)).scalar()
        rows = summary.workflows_deleted + summary.executions_deleted
        median = sorted(transactions)[len(transactions) // 2] if transactions else 0.0
        print(f"{args.db}: {summary}")
        print(
            f"deleted {summary.workflows_deleted:,} workflows + "
            f"{summary.executions_deleted:,} executions in {summary.seconds:.2f}s "
            f"({rows / summary.seconds:,.0f} rows/s); {len(transactions)} transactions, "
            f"longest {max(transactions, default=0) * 1000:.0f} ms, "
            f"median {median * 1000:.0f} ms (SQLite's BEGIN IMMEDIATE ones are not counted); "
            f"{left:,} recent workflows kept"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
