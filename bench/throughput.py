"""End-to-end steps/s: N workflows x 3 steps with K workers, against raw Huey.

    python -m bench.throughput --db sqlite --queue sqlite --workflows 1000 --workers 4

Prints flask-geneva's steps/s, a raw Huey chain of three no-op tasks per item on the
same storage, their ratio, and hop latencies (a step's body ending to its successor's
body starting; thread workers only). Each figure comes in two timing modes
(``--mode``, both by default):

- ``outside``: the workflows (or the raw chains' first tasks) are created before the
  clock starts, then the consumer is started and the clock runs until the last one is
  done. Creation costs nothing here.
- ``inside``: the consumer is started and idle, the clock starts, then the workflows
  are started one at a time, each ``Workflow.create()`` in its own commit (each raw
  chain's first task enqueued), while the workers run. Creation competes with the
  workers, as when an application starts workflows under load; this is how
  ``bench/dbos_compare.py --mode inside`` times DBOS's enqueue.

``python -m bench.all`` runs both modes against raw Huey and DBOS in one table.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from huey import MemoryHuey
from huey import RedisHuey
from huey import SqliteHuey

from . import common

SHAPES: dict[str, tuple[Any, int]] = {
    "one": (common.OneStep, 1),
    "three": (common.ThreeSteps, 3),
    "fanout": (common.FanOut, 10),
}


def _dispose_engines() -> None:
    # Forked process workers must not share the parent's connections.
    for engine in common.db.engines.values():
        engine.dispose()


def run_geneva(
    db: str,
    queue: str,
    workflows: int,
    workers: int,
    *,
    shape: str = "three",
    worker_type: str = "thread",
    mode: str = "outside",
) -> dict[str, Any]:
    """Run ``workflows`` workflows of ``shape`` to the end and time them (see ``mode``)."""
    cls, steps_per_workflow = SHAPES[shape]
    app = common.make_app(common.DATABASES[db](), common.QUEUES[queue]())
    huey = app.extensions["geneva"].huey
    common.marks.clear()

    def finished() -> int:
        return common.count_finished(app, cls)

    create_seconds = 0.0
    if mode == "outside":
        with app.app_context():
            for start in range(0, workflows, 1000):
                for _ in range(min(1000, workflows - start)):
                    cls.create(commit=False)
                common.db.session.commit()
            _dispose_engines()
        started = time.time()  # the consumer's start-up is in the window
        with common.running_consumer(huey, workers, worker_type):
            common.wait_for_count(finished, workflows)
            elapsed = time.time() - started  # not the consumer's graceful stop
    elif mode == "inside":
        with app.app_context():
            _dispose_engines()
        with common.running_consumer(huey, workers, worker_type):
            time.sleep(0.5)  # let the workers reach their idle polling rhythm
            started = time.time()
            with app.app_context():
                for _ in range(workflows):
                    cls.create()
            create_seconds = time.time() - started
            common.wait_for_count(finished, workflows)
            elapsed = time.time() - started
    else:
        raise ValueError(f"unknown mode {mode!r}")
    hops = common.hop_latencies_ms()
    with app.app_context():
        _dispose_engines()
    steps = workflows * steps_per_workflow
    return {
        "steps": steps,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "create_seconds": create_seconds,
        "hop_median_ms": common.median(hops) if hops else float("nan"),
        "hop_p95_ms": common.percentile(hops, 0.95) if hops else float("nan"),
    }


def _raw_huey(queue: str) -> Any:
    url = common.QUEUES[queue]()
    name = f"raw-bench-{common.RUN_TOKEN}"
    if queue == "sqlite":
        return SqliteHuey(name, filename=url[len("sqlite:///") :])
    if queue == "redis":
        return RedisHuey(name, url=url, blocking=True, read_timeout=1)
    return MemoryHuey(name)


def run_raw_huey(
    queue: str,
    items: int,
    workers: int,
    worker_type: str = "thread",
    *,
    mode: str = "outside",
) -> dict[str, Any]:
    """A chain of three no-op tasks per item: the floor of the queue itself."""
    huey = _raw_huey(queue)
    huey.flush()

    @huey.task()
    def third(i: int) -> None:
        # One key per finished chain in Huey's result store (works across processes).
        huey.storage.put_data(f"raw-bench-done-{i}", b"1")

    @huey.task()
    def second(i: int) -> None:
        third(i)

    @huey.task()
    def first(i: int) -> None:
        second(i)

    def finished() -> int:
        # One HLEN / COUNT(*) per poll, like flask-geneva's count of finished workflows.
        return int(huey.storage.result_store_size())

    create_seconds = 0.0
    if mode == "outside":
        for i in range(items):
            first(i)
        started = time.time()
        with common.running_consumer(huey, workers, worker_type):
            common.wait_for_count(finished, items)
            elapsed = time.time() - started
    elif mode == "inside":
        with common.running_consumer(huey, workers, worker_type):
            time.sleep(0.5)
            started = time.time()
            for i in range(items):
                first(i)
            create_seconds = time.time() - started
            common.wait_for_count(finished, items)
            elapsed = time.time() - started
    else:
        raise ValueError(f"unknown mode {mode!r}")
    huey.flush()
    return {
        "steps": items * 3,
        "seconds": elapsed,
        "steps_per_s": items * 3 / elapsed,
        "create_seconds": create_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=sorted(common.DATABASES), default="sqlite")
    parser.add_argument("--queue", choices=sorted(common.QUEUES), default="sqlite")
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-type", choices=("thread", "process"), default="thread")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="three")
    parser.add_argument("--mode", choices=(*common.MODES, "both"), default="both")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw Huey baseline")
    args = parser.parse_args()
    label = (
        f"{args.db}+{args.queue} {args.shape} workflows={args.workflows} "
        f"workers={args.workers} {args.worker_type}"
    )
    modes = list(common.MODES) if args.mode == "both" else [args.mode]
    for mode in modes:
        print(f"[{mode}] {common.MODES[mode]}")
        geneva = run_geneva(
            args.db,
            args.queue,
            args.workflows,
            args.workers,
            shape=args.shape,
            worker_type=args.worker_type,
            mode=mode,
        )
        line = (
            f"  {label}: geneva {geneva['steps_per_s']:.0f} steps/s "
            f"({geneva['seconds']:.1f} s for {geneva['steps']:.0f} steps, "
            f"{1000 / geneva['steps_per_s']:.2f} ms/step wall)"
        )
        if not args.no_raw:
            raw = run_raw_huey(
                args.queue, args.workflows, args.workers, args.worker_type, mode=mode
            )
            line += (
                f", raw huey {raw['steps_per_s']:.0f} steps/s, "
                f"ratio {geneva['steps_per_s'] / raw['steps_per_s']:.2f}"
            )
        if geneva["hop_median_ms"] == geneva["hop_median_ms"]:  # not NaN
            line += (
                f"; hop median {geneva['hop_median_ms']:.1f} ms, p95 {geneva['hop_p95_ms']:.1f} ms"
            )
        print(line)


if __name__ == "__main__":
    main()
