"""Hop latency: a step's body ends → its successor's body starts, with idle workers.

    python -m bench.latency --db postgresql --queue redis --workflows 100

Workflows run one at a time so no backlog inflates the figure; each hop includes the
finalize transaction, the Huey enqueue, the consumer picking the message up, and the
claim transaction.
"""

from __future__ import annotations

import argparse
import time

from . import common


def run(db: str, queue: str, workflows: int, workers: int) -> dict[str, float]:
    app = common.make_app(common.DATABASES[db](), common.QUEUES[queue]())
    with app.app_context():
        huey = common.geneva.huey
    common.marks.clear()
    with common.running_consumer(huey, workers):
        time.sleep(0.5)  # let the workers reach their idle polling rhythm
        for done in range(1, workflows + 1):
            with app.app_context():
                common.ThreeSteps.create()
            common.wait_until(
                lambda d=done: common.count_finished(app, common.ThreeSteps) == d,
                timeout=60,
                interval=0.005,
            )
    hops = common.hop_latencies_ms()
    with app.app_context():
        for engine in common.db.engines.values():
            engine.dispose()
    return {
        "hops": len(hops),
        "median_ms": common.median(hops),
        "p95_ms": common.percentile(hops, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=sorted(common.DATABASES), default="sqlite")
    parser.add_argument("--queue", choices=sorted(common.QUEUES), default="sqlite")
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    result = run(args.db, args.queue, args.workflows, args.workers)
    print(
        f"{args.db}+{args.queue}: {result['hops']} hops, median {result['median_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
