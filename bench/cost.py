"""Cost per step: SQL statements and commits per step, counted with SQLAlchemy events.

    python -m bench.cost --db postgresql

Scenarios: a plain step, a step with a wait, a skipped step, a failing step that is
reattempted, and a join. Each workflow is driven through the real executor; the
counts cover everything the executor sends (reads, locks, writes, BEGIN/COMMIT).
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
