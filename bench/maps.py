"""Map steps: items/s through real worker threads, and what one item's finalize costs.

    python -m bench.maps --db sqlite --queue sqlite --items 10000 --workers 4
    python -m bench.maps --db postgresql --queue redis
    python -m bench.maps --db mariadb --finalize-only

Throughput: one workflow whose producer returns ``list(range(N))`` and whose map step
runs a no-op body per item, with ``max_parallel=None`` (every item released when the
producer ends) and with ``max_parallel=8``; against N workflows of one no-op step on
the same database, queue and workers. A map item and a one-step workflow are the same
unit of work (one claim, one no-op body, one finalize, one Huey message), so the ratio
shows what a map adds: every item's finalize takes the one workflow's lock, reads the
items not done and counts the done ones. Both sides are queued before the clock starts
(the producer has run, the workflows exist); the clock starts with the consumer and
stops when the N-th item (workflow) is done, as ``bench/throughput.py --mode outside``.

Finalize: in maps of 10, 1,000 and 10,000 items (``max_parallel=None``), the time of
one item's execution (claim, no-op body, finalize) run in this thread with
``geneva.execute``, first for the earliest items (N-1 others not done: the snapshot
reads them all) and then for the last items (N-8 done: counted, not read), with the
statements each sends. To reach "late" quickly the done items are set ``completed``
with one UPDATE, as their own finalizes would have left them; the items timed run
through the real executor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import sqlalchemy as sa

from flask_geneva import step

from . import common
from .cost import StatementCount
from .throughput import _dispose_engines
from .throughput import run_geneva


class MapAll(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    """A producer of ``items`` integers and a no-op map step without a limit."""

    items = 0

    @step
    def split(self) -> list[int]:
        return list(range(type(self).items))

    @step(for_each="split")
    def each(self) -> None:
        pass


class MapEight(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    """The same with ``max_parallel=8``: at most eight items released at once."""

    items = 0

    @step
    def split(self) -> list[int]:
        return list(range(type(self).items))

    @step(for_each="split", max_parallel=8)
    def each(self) -> None:
        pass


SHAPES: dict[int | None, Any] = {None: MapAll, 8: MapEight}
#: How many items are timed at each end of a map in the finalize measurement.
TIMED = 8


def _config(items: int) -> dict[str, Any]:
    return {"GENEVA_MAX_MAP_ITEMS": max(items, 10_000)}


def _execution_ids(workflow_id: int, step_name: str, state: str | None = None) -> list[int]:
    e = common.geneva.tables.executions
    query = sa.select(e.c.id).where(e.c.workflow_id == workflow_id, e.c.step_name == step_name)
    if state is not None:
        query = query.where(e.c.state == state)
    with common.geneva.engine().connect() as conn:
        return list(conn.execute(query.order_by(e.c.item_index, e.c.id)).scalars())


def _start_map(cls: Any, items: int) -> tuple[int, float]:
    """Create a map workflow and run its producer here; return its id and that time."""
    cls.items = items
    workflow = cls.create()
    (split,) = _execution_ids(workflow.id, "split")
    started = time.perf_counter()
    common.geneva.execute(split, ignore_schedule=True)
    return int(workflow.id), time.perf_counter() - started


def run_map(
    db: str, queue: str, items: int, workers: int, max_parallel: int | None
) -> dict[str, Any]:
    """Run one map of ``items`` no-op items through ``workers`` threads; time it."""
    cls = SHAPES[max_parallel]
    app = common.make_app(common.DATABASES[db](), common.QUEUES[queue](), _config(items))
    huey = app.extensions["geneva"].huey
    e = common.geneva.tables.executions
    with app.app_context():
        workflow_id, release_seconds = _start_map(cls, items)
        done = (
            sa.select(sa.func.count())
            .where(
                e.c.workflow_id == workflow_id,
                e.c.step_name == "each",
                e.c.item_index.is_not(None),
                e.c.state == "completed",
            )
            .scalar_subquery()
        )
        _dispose_engines()

    def finished() -> int:
        with app.app_context(), common.geneva.engine().connect() as conn:
            return int(conn.execute(sa.select(done)).scalar_one())

    started = time.time()
    with common.running_consumer(huey, workers, "thread"):
        common.wait_for_count(finished, items, interval=0.1)
        elapsed = time.time() - started
    with app.app_context():
        _dispose_engines()
    return {
        "items": items,
        "seconds": elapsed,
        "items_per_s": items / elapsed,
        "producer_seconds": release_seconds,
    }


def _timed(ids: list[int]) -> tuple[float, float]:
    """Median ms and mean statements of one ``geneva.execute`` for each id, in turn."""
    durations = []
    with StatementCount(common.geneva.engine()) as count:
        for execution_id in ids:
            started = time.perf_counter()
            report = common.geneva.execute(execution_id, ignore_schedule=True)
            durations.append((time.perf_counter() - started) * 1000)
            assert report is not None and report.status == "ran", report
    return statistics.median(durations), count.statements / len(ids)


def time_finalize(db: str, sizes: list[int]) -> list[dict[str, Any]]:
    """Per item ms and statements at each end of maps of each size (see the docstring)."""
    app = common.make_app(common.DATABASES[db](), "memory://", _config(max(sizes)))
    e = common.geneva.tables.executions
    results = []
    with app.app_context():
        plain = [common.OneStep.create() for _ in range(TIMED)]
        plain_ms, plain_statements = _timed([_execution_ids(w.id, "only")[0] for w in plain])
        for items in sizes:
            workflow_id, producer_seconds = _start_map(MapAll, items)
            ids = _execution_ids(workflow_id, "each")
            assert len(ids) == items, (len(ids), items)
            early = ids[: min(TIMED, items // 2)]
            early_ms, early_statements = _timed(early)
            late = ids[-min(TIMED, items // 2) :]
            rest = [i for i in ids if i not in set(early) | set(late)]
            with common.geneva.engine().begin() as conn:
                now = sa.func.now() if db != "sqlite" else sa.func.datetime("now")
                for start in range(0, len(rest), 1000):
                    conn.execute(
                        sa.update(e)
                        .where(e.c.id.in_(rest[start : start + 1000]))
                        .values(
                            state="completed",
                            outcome="success",
                            started_at=now,
                            finished_at=now,
                            completed_at=now,
                            updated_at=now,
                        )
                    )
            late_ms, late_statements = _timed(late)
            results.append(
                {
                    "items": items,
                    "producer_ms": producer_seconds * 1000,
                    "early_ms": early_ms,
                    "early_statements": early_statements,
                    "late_ms": late_ms,
                    "late_statements": late_statements,
                    "plain_ms": plain_ms,
                    "plain_statements": plain_statements,
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=sorted(common.DATABASES), default="sqlite")
    parser.add_argument("--queue", choices=sorted(common.QUEUES), default="sqlite")
    parser.add_argument("--items", type=int, default=10_000, help="items in the map")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--sizes", default="10,1000,10000", help="map sizes for the finalize timing"
    )
    parser.add_argument("--finalize-only", action="store_true", help="skip the throughput")
    parser.add_argument("--throughput-only", action="store_true", help="skip the finalize")
    parser.add_argument(
        "--max-parallel",
        default="none,8",
        help="the maps to run: a comma-separated choice of none and 8 (default: both)",
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the one-step workflows")
    parser.add_argument("--json", action="store_true", help="print one RESULT line as well")
    args = parser.parse_args()
    if args.items < 1:
        parser.error("--items must be at least 1")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if any(s < 2 for s in sizes):
        parser.error("--sizes must each be at least 2")
    choices = {"none": None, "8": 8}
    try:
        limits = [choices[c.strip().lower()] for c in args.max_parallel.split(",") if c.strip()]
    except KeyError as exc:
        parser.error(f"--max-parallel: unknown choice {exc}; choose from none, 8")
    result: dict[str, Any] = {"db": args.db, "queue": args.queue, "workers": args.workers}
    if not args.finalize_only:
        label = f"{args.db}+{args.queue} items={args.items:,} workers={args.workers} threads"
        plain = None
        if not args.no_plain:
            plain = run_geneva(
                args.db, args.queue, args.items, args.workers, shape="one", mode="outside"
            )
            result["plain_per_s"] = plain["steps_per_s"]
            print(
                f"{label}: {args.items:,} one-step workflows {plain['steps_per_s']:.0f}/s "
                f"({plain['seconds']:.1f} s)",
                flush=True,
            )
        for max_parallel in limits:
            run = run_map(args.db, args.queue, args.items, args.workers, max_parallel)
            result[f"map_{max_parallel}_per_s"] = run["items_per_s"]
            result[f"map_{max_parallel}_producer_s"] = run["producer_seconds"]
            print(
                f"{label}: map max_parallel={max_parallel} {run['items_per_s']:.0f} items/s "
                f"({run['seconds']:.1f} s; ratio to one-step workflows "
                + (f"{run['items_per_s'] / plain['steps_per_s']:.2f}" if plain else "not run")
                + "; the producer's finalize, "
                f"releasing the first items, {run['producer_seconds'] * 1000:.0f} ms)",
                flush=True,
            )
    if not args.throughput_only:
        print(f"{args.db}: one item's execution (claim, no-op body, finalize), median of {TIMED}")
        result["finalize"] = time_finalize(args.db, sizes)
        for row in result["finalize"]:
            print(
                f"  {row['items']:>6,} items: early {row['early_ms']:6.1f} ms "
                f"({row['early_statements']:.1f} statements), late {row['late_ms']:6.1f} ms "
                f"({row['late_statements']:.1f}); producer {row['producer_ms']:.0f} ms; "
                f"a one-step workflow's step {row['plain_ms']:.1f} ms "
                f"({row['plain_statements']:.1f})",
                flush=True,
            )
    if args.json:
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
