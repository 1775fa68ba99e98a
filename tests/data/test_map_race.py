"""A map of 1,000 items on four real worker threads: each item once, the join once.

A real Huey consumer (four worker threads) runs the map while a sampler reads the rows
from a connection of its own: the items scheduled or running never exceed
``max_parallel``. Every claim about "once" is checked on rows the bodies committed.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import Geneva
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)

pytestmark = pytest.mark.slow

ITEMS = 1000
MAX_PARALLEL = 6


class Done(db.Model):  # type: ignore[name-defined,misc]
    """One row per body run: (workflow, step, item)."""

    __tablename__ = "race_done"
    id = sa.Column(sa.Integer, primary_key=True)
    workflow_id = sa.Column(sa.Integer, nullable=False)
    step = sa.Column(sa.String(20), nullable=False)
    item = sa.Column(sa.Integer, nullable=True)


class Fanout(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def split(self) -> list[int]:
        return list(range(ITEMS))

    @step(for_each="split", max_parallel=MAX_PARALLEL)
    def each(self) -> int:
        db.session.add(Done(workflow_id=self.id, step="each", item=self.item))
        return int(self.item) * 2

    @step
    def join(self, each: list[int]) -> int:
        db.session.add(Done(workflow_id=self.id, step="join", item=len(each)))
        return sum(each)


def test_a_map_of_1000_items_on_four_threads_runs_each_item_once_within_max_parallel(app, huey):
    e = geneva.tables.executions
    active_items = (
        sa.select(sa.func.count())
        .select_from(e)
        .where(e.c.item_index.is_not(None), e.c.state.in_(("scheduled", "in_progress")))
    )
    seen: list[int] = []
    stop = threading.Event()
    engine = db.engine  # the thread has no app context

    def sample() -> None:
        with engine.connect() as conn:
            while not stop.is_set():
                seen.append(int(conn.execute(active_items).scalar_one()))
                conn.rollback()  # a fresh snapshot each time (MariaDB's REPEATABLE READ)
                stop.wait(0.01)

    wf = Fanout.create()
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with running_consumer(huey, workers=4, periodic=False):

            def state() -> Any:
                db.session.expire_all()
                db.session.rollback()
                return db.session.get(Fanout, wf.id).state in ("finished", "paused")

            wait_until(state, timeout=240, message=lambda: f"workflow is {wf.state}")
    finally:
        stop.set()
        sampler.join()
    db.session.expire_all()
    assert db.session.get(Fanout, wf.id).state == "finished"
    with db.engine.connect() as conn:
        runs = conn.execute(sa.select(Done.step, Done.item).where(Done.workflow_id == wf.id)).all()
        rows = conn.execute(
            sa.select(e.c.item_index, e.c.state, e.c.outcome).where(
                e.c.workflow_id == wf.id, e.c.step_name == "each"
            )
        ).all()
    items = sorted(r.item for r in runs if r.step == "each")
    assert items == list(range(ITEMS))  # each item's body committed once
    assert [tuple(r) for r in runs if r.step == "join"] == [("join", ITEMS)]
    assert len(rows) == ITEMS and {(r.state, r.outcome) for r in rows} == {("completed", "success")}
    assert max(seen) <= MAX_PARALLEL, f"max_parallel exceeded: {max(seen)} active items"
    assert max(seen) >= 2, "the sampler saw the map run in parallel"
    assert wf.output_of("join") == sum(range(ITEMS)) * 2
