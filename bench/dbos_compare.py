"""DBOS running the equivalent 3-step workflow on the same PostgreSQL, same concurrency.

DBOS is not a dependency of flask-geneva; run this with an environment that has it:

    python -m venv /tmp/dbos-env && /tmp/dbos-env/bin/pip install dbos 'psycopg[binary]'
    /tmp/dbos-env/bin/python bench/dbos_compare.py --workflows 1000 --concurrency 4

It creates (and drops) its own database ``geneva_dbos_bench`` on the server.
"""

from __future__ import annotations

import argparse
import os
import time

import sqlalchemy as sa

SERVER = os.environ.get(
    "GENEVA_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DATABASE = "geneva_dbos_bench"


def _admin(statement: str) -> None:
    engine = sa.create_engine(SERVER, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll", type=float, default=0.01, help="queue polling interval (s)")
    args = parser.parse_args()

    _admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DATABASE}")
    from dbos import DBOS

    url = sa.make_url(SERVER).set(drivername="postgresql", database=DATABASE)
    DBOS(config={"name": "geneva-bench", "system_database_url": url.render_as_string(False)})

    @DBOS.step()
    def first() -> None:
        pass

    @DBOS.step()
    def second() -> None:
        pass

    @DBOS.step()
    def third() -> None:
        pass

    @DBOS.workflow()
    def three_steps() -> None:
        first()
        second()
        third()

    DBOS.launch()
    # DBOS polls its queue once a second by default; poll often so the queue, not the
    # poll interval, sets the pace (the fairest setting for DBOS).
    queue = DBOS.register_queue(
        "bench", worker_concurrency=args.concurrency, polling_interval_sec=args.poll
    )
    started = time.time()
    handles = [queue.enqueue(three_steps) for _ in range(args.workflows)]
    for handle in handles:
        handle.get_result()
    elapsed = time.time() - started
    steps = args.workflows * 3
    print(
        f"dbos postgresql workflows={args.workflows} concurrency={args.concurrency}: "
        f"{steps / elapsed:.0f} steps/s ({elapsed:.1f} s, enqueue included)"
    )
    DBOS.destroy()
    _admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
