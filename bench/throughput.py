"""End-to-end steps/s: N workflows x 3 steps with K worker threads, against raw Huey.

    python -m bench.throughput --db sqlite --queue sqlite --workflows 1000 --workers 4

Prints flask-geneva's steps/s, a raw Huey chain of three no-op tasks per item on the
same storage, their ratio, and hop latencies (a step's body ending to its successor's
body starting).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from huey import MemoryHuey
from huey import RedisHuey
from huey import SqliteHuey

from . import common

SHAPES = {"three": (common.ThreeSteps, 3), "fanout": (common.FanOut, 10)}


def run_geneva(
    db: str,
    queue: str,
    workflows: int,
    workers: int,
    *,
    shape: str = "three",
    worker_type: str = "thread",
) -> dict[str, float]:
    cls, steps_per_workflow = SHAPES[shape]
    app = common.make_app(common.DATABASES[db](), common.QUEUES[queue]())
    common.marks.clear()
    with app.app_context():
        huey = common.geneva.huey
        for start in range(0, workflows, 1000):
            for _ in range(min(1000, workflows - start)):
                cls.create(commit=False)
            common.db.session.commit()
        for engine in common.db.engines.values():
            engine.dispose()  # forked process workers must not share connections
    started = time.time()
    with common.running_consumer(huey, workers, worker_type):
        common.wait_until(lambda: common.count_finished(app, cls) == workflows, timeout=3600)
    elapsed = time.time() - started
    hops = []
    for (wid, name), (_, end) in list(common.marks.items()):
        following = {"first": "second", "second": "third"}.get(name)
        if following and (wid, following) in common.marks:
            hops.append((common.marks[(wid, following)][0] - end) * 1000)
    with app.app_context():
        for engine in common.db.engines.values():
            engine.dispose()
    steps = workflows * steps_per_workflow
    return {
        "steps": steps,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "hop_median_ms": common.median(hops) if hops else float("nan"),
        "hop_p95_ms": common.percentile(hops, 0.95) if hops else float("nan"),
    }


def _raw_huey(queue: str) -> Any:
    url = common.QUEUES[queue]()
    if queue == "sqlite":
        return SqliteHuey("raw-bench", filename=url[len("sqlite:///") :])
    if queue == "redis":
        return RedisHuey("raw-bench", url=url, blocking=True, read_timeout=1)
    return MemoryHuey("raw-bench")


def run_raw_huey(
    queue: str, items: int, workers: int, worker_type: str = "thread"
) -> dict[str, float]:
    """A chain of three no-op tasks per item: the floor of the queue itself."""
    huey = _raw_huey(queue)
    huey.flush()
    counter = f"raw-bench-done-{time.time()}"

    @huey.task()
    def third(i: int) -> None:
        huey.storage.put_data(f"{counter}-{i}", b"1")

    @huey.task()
    def second(i: int) -> None:
        third(i)

    @huey.task()
    def first(i: int) -> None:
        second(i)

    for i in range(items):
        first(i)
    started = time.time()
    with common.running_consumer(huey, workers, worker_type):
        # Each chain's last task leaves a key behind (works across processes too).
        common.wait_until(
            lambda: (
                all(huey.storage.has_data_for_key(f"{counter}-{i}") for i in (0, items - 1))
                and sum(huey.storage.has_data_for_key(f"{counter}-{i}") for i in range(items))
                == items
            ),
            timeout=600,
            interval=0.02,
        )
    elapsed = time.time() - started
    return {"steps": items * 3, "seconds": elapsed, "steps_per_s": items * 3 / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=sorted(common.DATABASES), default="sqlite")
    parser.add_argument("--queue", choices=sorted(common.QUEUES), default="sqlite")
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-type", choices=("thread", "process"), default="thread")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="three")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw Huey baseline")
    args = parser.parse_args()
    geneva = run_geneva(
        args.db,
        args.queue,
        args.workflows,
        args.workers,
        shape=args.shape,
        worker_type=args.worker_type,
    )
    label = (
        f"{args.db}+{args.queue} {args.shape} workflows={args.workflows} "
        f"workers={args.workers} {args.worker_type}"
    )
    if args.no_raw:
        print(
            f"{label}: geneva {geneva['steps_per_s']:.0f} steps/s "
            f"({geneva['seconds']:.1f} s for {geneva['steps']:.0f} steps)"
        )
        return
    raw = run_raw_huey(args.queue, args.workflows, args.workers, args.worker_type)
    print(
        f"{label}: "
        f"geneva {geneva['steps_per_s']:.0f} steps/s ({1000 / geneva['steps_per_s']:.2f} ms/step "
        f"wall), raw huey {raw['steps_per_s']:.0f} steps/s, ratio "
        f"{geneva['steps_per_s'] / raw['steps_per_s']:.2f}; hop median "
        f"{geneva['hop_median_ms']:.1f} ms, p95 {geneva['hop_p95_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
