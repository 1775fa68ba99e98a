"""Cost per step: SQL statements and commits per step, counted with SQLAlchemy events.

    python -m bench.cost --db postgresql

Scenarios: a plain step, a step with a wait, a skipped step, a failing step that is
reattempted, and a join. Each workflow is driven through the real executor; the
counts cover everything the executor sends (reads, locks, writes, BEGIN/COMMIT).

Then signal delivery: the claim of a step that waits for a signal (it goes to
``waiting``), one ``wf.signal(...)`` to that waiting workflow (SPEC: one short
transaction), the same delivery again (a duplicate, by idempotency key), and the woken
step's run, which consumes the signal.

Then output size: a one-step workflow whose body returns None, or a string of 1 KiB,
64 KiB or 256 KiB (stored as JSON on its execution), in ms per step (the executor's
whole run of it, in this thread) and statements per step.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa

from flask_geneva import ExceptionPolicy
from flask_geneva import step

from . import common


class Plain(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step
    def only(self) -> None:
        pass


class Waiting(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step(wait=3600)
    def later(self) -> None:
        pass


class Skipped(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step(skip_if=True)
    def never(self) -> None:
        pass


class Failing(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step(on_exception=ExceptionPolicy("reattempt", max_reattempts=None))
    def flaky(self) -> None:
        raise RuntimeError("try again")


class Join(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step
    def left(self) -> None:
        pass

    @step(after=[])
    def right(self) -> None:
        pass

    @step(after=["left", "right"])
    def joined(self) -> None:
        pass


class AwaitsSignal(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step(wait_for="settled")
    def record(self) -> None:
        pass


class Returns(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    """One step whose output is ``size`` bytes of JSON: a string (None when 0)."""

    size = 0

    @step
    def produce(self) -> str | None:
        size = type(self).size
        return "x" * (size - 2) if size else None  # the JSON adds its two quotes


#: Output sizes measured, in bytes of JSON (0: the body returns None). 256 KiB is the
#: largest GENEVA_MAX_OUTPUT_BYTES allows by default.
OUTPUT_SIZES = {"None": 0, "1 KiB": 1024, "64 KiB": 64 * 1024, "256 KiB": 256 * 1024}


SCENARIOS: dict[str, tuple[type, str | None]] = {
    "plain step": (Plain, None),
    "step with wait": (Waiting, None),
    "skipped step (skip_if)": (Skipped, None),
    "failing step, reattempted": (Failing, None),
    "join (the step that completes it)": (Join, "right"),
}


def measure(
    app: Any, cls: type, which: str | None, rounds: int = 20
) -> tuple[float, float, Counter[str]]:
    engine_stats: Counter[str] = Counter()
    statements = 0
    commits = 0

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal statements
        statements += 1
        engine_stats[statement.split()[0].upper()] += 1

    def on_commit(conn: Any) -> None:
        nonlocal commits
        commits += 1

    with app.app_context():
        engine = common.geneva.engine()
        e = common.geneva.tables.executions
        ids = []
        for _ in range(rounds):
            workflow = cls.create()
            if which is not None:  # run the other branch first, then measure the join-maker
                with engine.connect() as conn:
                    other = conn.execute(
                        sa.select(e.c.id).where(
                            e.c.workflow_id == workflow.id, e.c.step_name != which
                        )
                    ).scalar_one()
                common.geneva.execute(other, ignore_schedule=True)
            with engine.connect() as conn:
                ids.append(
                    conn.execute(
                        sa.select(e.c.id)
                        .where(e.c.workflow_id == workflow.id, e.c.state == "scheduled")
                        .order_by(e.c.id.desc())
                    )
                    .scalars()
                    .first()
                )
        sa.event.listen(engine, "before_cursor_execute", on_execute)
        sa.event.listen(engine, "commit", on_commit)
        try:
            for execution_id in ids:
                common.geneva.execute(execution_id, ignore_schedule=True)
        finally:
            sa.event.remove(engine, "before_cursor_execute", on_execute)
            sa.event.remove(engine, "commit", on_commit)
    return statements / rounds, commits / rounds, engine_stats


class StatementCount:
    """Statements (by first keyword) and commits sent on ``engine`` inside ``counting()``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.statements = 0
        self.commits = 0
        self.kinds: Counter[str] = Counter()

    def _execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements += 1
        self.kinds[statement.split()[0].upper()] += 1

    def _commit(self, conn: Any) -> None:
        self.commits += 1

    def __enter__(self) -> StatementCount:
        sa.event.listen(self.engine, "before_cursor_execute", self._execute)
        sa.event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._execute)
        sa.event.remove(self.engine, "commit", self._commit)


def measure_signals(app: Any, rounds: int = 20) -> dict[str, tuple[float, float, Counter[str]]]:
    """Count each stage of a signal's life, averaged over ``rounds`` workflows."""
    stages = ("claim, goes to waiting", "signal to a waiting workflow", "duplicate", "woken step")
    counters: dict[str, StatementCount] = {}
    with app.app_context():
        engine = common.geneva.engine()
        e = common.geneva.tables.executions
        counters = {stage: StatementCount(engine) for stage in stages}
        workflows = [AwaitsSignal.create() for _ in range(rounds)]

        def execution_of(workflow: Any) -> int:
            with engine.connect() as conn:
                query = sa.select(e.c.id).where(e.c.workflow_id == workflow.id)
                return int(conn.execute(query).scalar_one())

        ids = [execution_of(workflow) for workflow in workflows]
        with counters["claim, goes to waiting"]:
            for execution_id in ids:
                common.geneva.execute(execution_id, ignore_schedule=True)
        for n, workflow in enumerate(workflows):
            common.db.session.expire_all()  # a webhook's request starts with a fresh session
            with counters["signal to a waiting workflow"]:
                received = workflow.signal("settled", {"at": "now"}, idempotency_key=f"d-{n}")
            assert received.consumed_step == "record", received
            with counters["duplicate"]:
                again = workflow.signal("settled", {"at": "now"}, idempotency_key=f"d-{n}")
            assert again.duplicate
        with counters["woken step"]:
            for execution_id in ids:
                common.geneva.execute(execution_id, ignore_schedule=True)
        for workflow in workflows:
            common.db.session.refresh(workflow)
            assert workflow.state == "finished", workflow
    return {
        label: (c.statements / rounds, c.commits / rounds, c.kinds) for label, c in counters.items()
    }


def measure_outputs(app: Any, rounds: int = 20) -> dict[str, tuple[float, float, float]]:
    """Per output size: ms per step, statements and commits per step (``rounds`` each)."""
    results = {}
    with app.app_context():
        engine = common.geneva.engine()
        e = common.geneva.tables.executions
        for label, size in OUTPUT_SIZES.items():
            Returns.size = size
            workflows = [Returns.create() for _ in range(rounds)]
            with engine.connect() as conn:
                ids = list(
                    conn.execute(
                        sa.select(e.c.id)
                        .where(e.c.workflow_id.in_([w.id for w in workflows]))
                        .order_by(e.c.id)
                    ).scalars()
                )
            with StatementCount(engine) as count:
                started = time.perf_counter()
                for execution_id in ids:
                    common.geneva.execute(execution_id, ignore_schedule=True)
                ms = (time.perf_counter() - started) * 1000 / rounds
            for workflow in workflows:
                common.db.session.refresh(workflow)
                assert workflow.state == "finished", (label, workflow.state)
                stored = workflow.output_of("produce")
                assert len(stored or "") == max(size - 2, 0), (label, len(stored or ""))
            results[label] = (ms, count.statements / rounds, count.commits / rounds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=sorted(common.DATABASES), default="sqlite")
    args = parser.parse_args()
    app = common.make_app(common.DATABASES[args.db](), "memory://")
    print(
        f"{args.db}: statements and commits per step "
        "(SQLite counts its BEGIN IMMEDIATE/COMMIT as statements)"
    )
    for label, (cls, which) in SCENARIOS.items():
        statements, commits, kinds = measure(app, cls, which)
        detail = ", ".join(f"{k} {v / 20:.1f}" for k, v in sorted(kinds.items()))
        print(f"  {label:38s} {statements:5.1f} statements, {commits:.1f} commits  ({detail})")
    print(f"{args.db}: signal delivery")
    for label, (statements, commits, kinds) in measure_signals(app).items():
        detail = ", ".join(f"{k} {v / 20:.1f}" for k, v in sorted(kinds.items()))
        print(f"  {label:38s} {statements:5.1f} statements, {commits:.1f} commits  ({detail})")
    print(f"{args.db}: output size (one step, its body's return value stored as JSON)")
    for label, (ms, statements, commits) in measure_outputs(app).items():
        print(
            f"  returns {label:30s} {ms:5.1f} ms per step, {statements:.1f} statements, "
            f"{commits:.1f} commits"
        )


if __name__ == "__main__":
    main()
