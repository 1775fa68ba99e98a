"""End-to-end steps/s: N workflows x 3 steps with K worker threads, against raw Huey.

    python -m bench.throughput --db sqlite --queue sqlite --workflows 1000 --workers 4

Prints flask-geneva's steps/s, a raw Huey chain of three no-op tasks per item on the
same storage, their ratio, and hop latencies (a step's body ending to its successor's
body starting).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from huey import MemoryHuey
from huey import RedisHuey
from huey import SqliteHuey

from . import common


def run_geneva(db: str, queue: str, workflows: int, workers: int) -> dict[str, float]:
    app = common.make_app(common.DATABASES[db](), common.QUEUES[queue]())
    huey = app.extensions["geneva"].huey
    common.marks.clear()
    with app.app_context():
        for _ in range(workflows):
            common.ThreeSteps.create(commit=False)
        common.db.session.commit()
    started = time.time()
    with common.running_consumer(huey, workers):
        common.wait_until(
            lambda: common.count_finished(app, common.ThreeSteps) == workflows, timeout=900
        )
    elapsed = time.time() - started
    hops = []
    for (wid, name), (_, end) in list(common.marks.items()):
        following = {"first": "second", "second": "third"}.get(name)
        if following and (wid, following) in common.marks:
            hops.append((common.marks[(wid, following)][0] - end) * 1000)
    with app.app_context():
        for engine in common.db.engines.values():
            engine.dispose()
    steps = workflows * 3
    return {
        "steps": steps,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "hop_median_ms": common.median(hops),
        "hop_p95_ms": common.percentile(hops, 0.95),
    }


def _raw_huey(queue: str) -> Any:
    url = common.QUEUES[queue]()
    if queue == "sqlite":
        return SqliteHuey("raw-bench", filename=url[len("sqlite:///") :])
    if queue == "redis":
        return RedisHuey("raw-bench", url=url, blocking=True, read_timeout=1)
    return MemoryHuey("raw-bench")


def run_raw_huey(queue: str, items: int, workers: int) -> dict[str, float]:
    """A chain of three no-op tasks per item: the floor of the queue itself."""
    huey = _raw_huey(queue)
    huey.flush()
    done = threading.Semaphore(0)

    @huey.task()
    def third(i: int) -> None:
        done.release()

    @huey.task()
    def second(i: int) -> None:
        third(i)

    @huey.task()
    def first(i: int) -> None:
        second(i)

    for i in range(items):
        first(i)
    started = time.time()
    with common.running_consumer(huey, workers):
        for _ in range(items):
            if not done.acquire(timeout=600):
                raise TimeoutError("raw huey chain did not complete")
    elapsed = time.time() - started
    return {"steps": items * 3, "seconds": elapsed, "steps_per_s": items * 3 / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=sorted(common.DATABASES), default="sqlite")
    parser.add_argument("--queue", choices=sorted(common.QUEUES), default="sqlite")
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    geneva = run_geneva(args.db, args.queue, args.workflows, args.workers)
    raw = run_raw_huey(args.queue, args.workflows, args.workers)
    print(
        f"{args.db}+{args.queue} workflows={args.workflows} workers={args.workers}: "
        f"geneva {geneva['steps_per_s']:.0f} steps/s ({1000 / geneva['steps_per_s']:.2f} ms/step "
        f"wall), raw huey {raw['steps_per_s']:.0f} steps/s, ratio "
        f"{geneva['steps_per_s'] / raw['steps_per_s']:.2f}; hop median "
        f"{geneva['hop_median_ms']:.1f} ms, p95 {geneva['hop_p95_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
