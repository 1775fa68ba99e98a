"""DBOS running the equivalent 3-step workflow on the same PostgreSQL, same concurrency.

DBOS is not a dependency of flask-geneva; run this with an environment that has it
(``python -m bench.all --setup-dbos`` creates ``.bench-venv-dbos``, git-ignored):

    python3 -m venv .bench-venv-dbos && .bench-venv-dbos/bin/pip install dbos 'psycopg[binary]'
    .bench-venv-dbos/bin/python bench/dbos_compare.py --workflows 1000 --workers 4

A workflow of three ``@DBOS.step`` no-ops runs from a DBOS queue polled every 10 ms.
``--worker-type thread`` is one DBOS process with ``worker_concurrency=4``;
``--worker-type process`` is 4 DBOS processes (executors) with ``worker_concurrency=1``
each, fed by this process. The timing modes match ``bench/throughput.py``:

- ``outside``: every workflow is enqueued first (by a separate process, so nothing
  runs them yet); the clock starts just before the workers' ``DBOS.launch()`` and
  runs until the last workflow has succeeded.
- ``inside``: the workers are launched and idle, the clock starts, then each workflow
  is enqueued one at a time (one transaction each) while the workers run.

Completion is polled with one ``count(*)`` every 50 ms, as for flask-geneva. The script
uses a database of its own on the server, ``bench_dbos_<pid>``, dropped at the end.
This file must only import the standard library, SQLAlchemy and DBOS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import sqlalchemy as sa

SERVER = os.environ.get(
    "GENEVA_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/bench_geneva"
)
#: This run's own database (its worker processes inherit the name), so that two runs
#: at once never share one.
DATABASE = os.environ.setdefault("GENEVA_BENCH_DBOS_DATABASE", f"bench_dbos_{os.getpid()}")
QUEUE = "bench"
MODES = {
    "outside": "created outside the window: all work is queued first, the clock starts "
    "with the consumer",
    "inside": "started inside the window: the consumer is idle and ready, the clock starts, "
    "then each workflow is started one by one (its own commit / enqueue)",
}


def _url(database: str, driver: str = "postgresql+psycopg") -> str:
    url = sa.make_url(SERVER).set(drivername=driver, database=database)
    return url.render_as_string(hide_password=False)


def _admin(statement: str) -> None:
    engine = sa.create_engine(_url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def _start_dbos(executor_id: str, listen: list[str] | None = None) -> tuple[Any, Any]:
    """Configure DBOS with the benchmark's workflow (not launched): DBOS and the workflow."""
    from dbos import DBOS

    DBOS(
        config={
            "name": "geneva-bench",
            "system_database_url": _url(DATABASE, "postgresql"),
            "application_version": "bench",  # the same in every process of one run
            "executor_id": executor_id,
            "log_level": "WARNING",
        }
    )

    @DBOS.step(name="first")
    def first() -> None:
        pass

    @DBOS.step(name="second")
    def second() -> None:
        pass

    @DBOS.step(name="third")
    def third() -> None:
        pass

    @DBOS.workflow(name="three_steps")
    def three_steps() -> None:
        first()
        second()
        third()

    if listen is not None:
        DBOS.listen_queues(listen)
    return DBOS, three_steps


def _register_queue(dbos: Any, concurrency: int, poll: float) -> Any:
    # DBOS polls its queue once a second by default; poll often so the queue, not the
    # poll interval, sets the pace (the fairest setting for DBOS).
    return dbos.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=poll)


def _succeeded(engine: sa.Engine) -> int:
    query = sa.text(
        "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = :q AND status = 'SUCCESS'"
    )
    with engine.connect() as conn:
        return int(conn.execute(query, {"q": QUEUE}).scalar_one())


def _wait_all(engine: sa.Engine, workflows: int, stall: float = 120) -> None:
    """Poll until every workflow succeeded; fail if the count stops moving for ``stall`` s."""
    last, moved = -1, time.monotonic()
    while (done := _succeeded(engine)) < workflows:
        now = time.monotonic()
        if done != last:
            last, moved = done, now
        elif now - moved > stall:
            raise TimeoutError(f"DBOS stalled at {done} of {workflows} for {stall:.0f} s")
        time.sleep(0.05)


def _child(role: str, *args: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--role", role, *args]


def role_setup(args: argparse.Namespace) -> None:
    """Migrate the system database, register the queue, enqueue ``--workflows`` (no run)."""
    dbos, workflow = _start_dbos("bench-setup", listen=["bench-nothing"])
    dbos.launch()
    queue = _register_queue(dbos, args.concurrency, args.poll)
    for _ in range(args.workflows):
        queue.enqueue(workflow)
    dbos.destroy()


def role_worker(args: argparse.Namespace) -> None:
    """A worker process: launch on "go" from stdin, print "ready", stop on EOF."""
    dbos, _ = _start_dbos(f"bench-worker-{args.index}")
    print("loaded", flush=True)
    sys.stdin.readline()
    dbos.launch()
    _register_queue(dbos, args.concurrency, args.poll)
    print("ready", flush=True)
    sys.stdin.read()
    dbos.destroy()


def run(workflows: int, workers: int, worker_type: str, mode: str, poll: float) -> dict[str, Any]:
    _admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DATABASE}")
    concurrency = workers if worker_type == "thread" else 1
    queue_args = ["--concurrency", str(concurrency), "--poll", str(poll)]
    # A first process migrates the system database and registers the queue, and in the
    # outside mode enqueues every workflow without running any.
    enqueued = workflows if mode == "outside" else 0
    subprocess.run(_child("setup", "--workflows", str(enqueued), *queue_args), check=True)
    engine = sa.create_engine(_url(DATABASE))
    children: list[subprocess.Popen[str]] = []
    dbos: Any = None
    launch_seconds = create_seconds = 0.0
    try:
        if worker_type == "thread":
            dbos, workflow = _start_dbos("bench-worker-0")
            if mode == "outside":
                started = time.time()
                dbos.launch()
                _register_queue(dbos, concurrency, poll)
                launch_seconds = time.time() - started
            else:
                dbos.launch()
                queue = _register_queue(dbos, concurrency, poll)
        else:
            children = [
                subprocess.Popen(
                    _child("worker", "--index", str(i), *queue_args),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(workers)
            ]
            for child in children:
                assert child.stdout is not None and child.stdout.readline() == "loaded\n"
            if mode == "inside":
                dbos, workflow = _start_dbos("bench-enqueuer", listen=["bench-nothing"])
                dbos.launch()
                queue = _register_queue(dbos, concurrency, poll)
            started = time.time()
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            for child in children:
                assert child.stdout is not None and child.stdout.readline() == "ready\n"
            launch_seconds = time.time() - started
        if mode == "inside":
            time.sleep(0.5)  # let the workers reach their idle polling rhythm
            started = time.time()
            for _ in range(workflows):
                queue.enqueue(workflow)
            create_seconds = time.time() - started
        _wait_all(engine, workflows)
        elapsed = time.time() - started
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            child.wait(timeout=60)
        if dbos is not None:
            dbos.destroy()
        engine.dispose()
        _admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    steps = workflows * 3
    return {
        "steps": steps,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "create_seconds": create_seconds,
        "launch_seconds": launch_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-type", choices=("thread", "process"), default="thread")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument("--poll", type=float, default=0.01, help="queue polling interval (s)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per mode")
    parser.add_argument("--role", choices=("main", "setup", "worker"), default="main")
    parser.add_argument("--concurrency", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "setup":
        return role_setup(args)
    if args.role == "worker":
        return role_worker(args)
    if args.mode == "both":
        # One process per mode: a process runs DBOS once.
        for mode in MODES:
            options = ["--workflows", str(args.workflows), "--workers", str(args.workers)]
            options += ["--worker-type", args.worker_type, "--poll", str(args.poll)]
            subprocess.run(
                _child("main", *options, "--mode", mode, *(["--json"] if args.json else [])),
                check=True,
            )
        return
    result = run(args.workflows, args.workers, args.worker_type, args.mode, args.poll)
    if args.json:
        print("RESULT " + json.dumps(dict(result, mode=args.mode)), flush=True)
    else:
        print(f"[{args.mode}] {MODES[args.mode]}")
        print(
            f"  dbos postgresql workflows={args.workflows} workers={args.workers} "
            f"{args.worker_type}: {result['steps_per_s']:.0f} steps/s "
            f"({result['seconds']:.1f} s; launch {result['launch_seconds']:.2f} s, "
            f"enqueue {result['create_seconds']:.1f} s)"
        )


if __name__ == "__main__":
    main()
