"""10,000 workflows waiting for a signal cost nothing until their signals arrive.

    python -m bench.waiting --db sqlite --queue sqlite
    python -m bench.waiting --db postgresql --queue redis --workflows 10000 --signals 1000

Creates ``--workflows`` workflows whose first step waits for the signal ``settled``
(no timeout), runs a real Huey consumer until every one of them waits, then, with the
consumer still running, watches it for ``--idle`` seconds. It prints:

- the Huey messages pending and scheduled (a waiting step holds none: both must be 0);
- the SQL statements the consumer sent to the app's database in that window (the
  Huey storage's own polling is not SQL on the app's database);
- the statements of one housekeeping run while nothing arrives;
- then it delivers ``--signals`` signals, one ``wf.signal()`` each as a webhook would,
  and prints the time to deliver them and the time until their workflows finished.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import sqlalchemy as sa

from flask_geneva import step

from . import common
from .cost import StatementCount


class AwaitsSettlement(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step(wait_for="settled")
    def record(self) -> None:
        pass


def _count(app: Any, *where: Any) -> int:
    e = common.geneva.tables.executions
    with app.app_context(), common.geneva.engine().connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(e).where(*where)).scalar_one()
        )


def run(db: str, queue: str, workflows: int, signals: int, workers: int, idle: float) -> None:
    app = common.make_app(common.DATABASES[db](), common.QUEUES[queue]())
    huey = app.extensions["geneva"].huey
    e = common.geneva.tables.executions
    w = common.geneva.tables.workflows
    print(f"{db} + {queue} queue: {workflows:,} workflows waiting for a signal, {workers} workers")

    started = time.time()
    with app.app_context():
        for first in range(0, workflows, 1000):
            for _ in range(min(1000, workflows - first)):
                AwaitsSettlement.create(commit=False)
            common.db.session.commit()
        ids = list(common.db.session.scalars(sa.select(w.c.id).order_by(w.c.id).limit(signals)))
        for engine in common.db.engines.values():
            engine.dispose()
    print(f"  created in {time.time() - started:.1f} s")

    with common.running_consumer(huey, workers):
        started = time.time()
        common.wait_for_count(lambda: _count(app, e.c.state == "waiting"), workflows)
        print(f"  every first step claimed and waiting after {time.time() - started:.1f} s")

        with app.app_context():
            engine = common.geneva.engine()
            with StatementCount(engine) as consumer:
                time.sleep(idle)
            print(
                f"  Huey messages pending {huey.pending_count()}, scheduled "
                f"{huey.scheduled_count()} (must both be 0)"
            )
            print(
                f"  statements the consumer sent in {idle:.0f} s of waiting: "
                f"{consumer.statements} ({consumer.commits} commits)"
            )
            with StatementCount(engine) as housekeeping:
                summary = common.geneva.housekeeping()
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(housekeeping.kinds.items()))
            print(
                f"  one housekeeping run while nothing arrives: {housekeeping.statements} "
                f"statements, {housekeeping.commits} commits ({kinds}); "
                f"retriggered {summary.retriggered}"
            )

            started = time.time()
            for n, workflow_id in enumerate(ids):
                workflow = common.db.session.get(AwaitsSettlement, workflow_id)
                workflow.signal("settled", {"n": n}, idempotency_key=f"delivery-{n}")
                common.db.session.expunge_all()
            delivered = time.time() - started

        def finished() -> int:
            return common.count_finished(app, AwaitsSettlement)

        common.wait_for_count(finished, len(ids))
        elapsed = time.time() - started
    print(
        f"  {len(ids):,} signals delivered in {delivered:.2f} s "
        f"({len(ids) / delivered:,.0f}/s, one commit each); their workflows all finished "
        f"{elapsed:.2f} s after the first delivery"
    )
    still = _count(app, e.c.state == "waiting")
    print(f"  still waiting: {still:,} (expected {workflows - len(ids):,})")
    with app.app_context():
        for engine in common.db.engines.values():
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=sorted(common.DATABASES), default="sqlite")
    parser.add_argument("--queue", choices=sorted(common.QUEUES), default="sqlite")
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--signals", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds watched while waiting")
    args = parser.parse_args()
    run(args.db, args.queue, args.workflows, args.signals, args.workers, args.idle)


if __name__ == "__main__":
    main()
