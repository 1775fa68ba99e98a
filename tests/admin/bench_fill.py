"""The rows the admin benchmark (``bench_admin.py``) times its pages and fragments on.

N workflows of two classes, 5 executions each (two reattempted tries of the first step,
then its three steps); mostly finished, some paused with a failure, some ready or
performing; one every 5 s, the millionth created just now. Workflow #1 is instead a
map: its producer returned 10,000 elements (a 10,000-element list is its output), and
9,800 items are done (every 50th after a reattempted try), 100 scheduled and 100 not
created yet, and it is paused: the items pages, the map's detail (and its poll) and its
rerun preview read it.
"""

from __future__ import annotations

import random
from datetime import datetime
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import step

db = SQLAlchemy()
geneva = Geneva(db)


class InvoiceWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def draft(self) -> None: ...

    @step
    def send(self) -> None: ...

    @step
    def collect(self) -> None: ...


class OnboardingWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    # step(...) with options is typed as returning a union (decorator or declaration).
    @step
    def welcome(self) -> None: ...

    @step(after="welcome")  # type: ignore[operator,untyped-decorator]
    def tips(self) -> None: ...

    @step(after="welcome")  # type: ignore[operator,untyped-decorator]
    def survey(self) -> None: ...


class ReportWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def split(self) -> list[dict[str, int]]:
        return []

    @step(for_each="split", max_parallel=100)  # type: ignore[operator,untyped-decorator]
    def render(self) -> None: ...

    @step
    def assemble(self) -> None: ...


CLASSES = {
    "InvoiceWorkflow": ("draft", "send", "collect"),
    "OnboardingWorkflow": ("welcome", "tips", "survey"),
}
STATES = [
    ("finished", 0.80),
    ("canceled", 0.10),
    ("paused", 0.05),
    ("ready", 0.03),
    ("performing", 0.02),
]
MAP_WORKFLOW_ID = 1
MAP_ITEMS = 10_000
#: The map's executions take ids far above the others' (``workflow id * 5 + n``).
MAP_FIRST_EXECUTION_ID = 10**10


def _base() -> datetime:
    # A workflow every 5 s, the millionth created just now: the newest day holds 17,280
    # of them, for the Fleet page's window.
    return clock.now() - timedelta(seconds=5 * 1_000_000)


def _workflow(i: int, kind: str, state: str, created: datetime) -> dict[str, Any]:
    return dict(
        id=i,
        type=kind,
        hero_type="Customer",
        hero_id=str(i % 50_000),
        state=state,
        allow_multiple=True,
        created_at=created,
        updated_at=created + timedelta(minutes=5),
        started_at=created,
        transitioned_at=created + timedelta(minutes=5),
    )


def _execution(ident: int, workflow_id: int, name: str, state: str, t: datetime) -> dict[str, Any]:
    ended = state in ("completed", "failed", "canceled")
    return dict(
        id=ident,
        workflow_id=workflow_id,
        step_name=name,
        state=state,
        outcome={"completed": "success", "failed": "failed", "canceled": "canceled"}.get(state),
        scheduled_for=t,
        started_at=t if state != "scheduled" else None,
        finished_at=t + timedelta(seconds=1) if ended else None,
        error_class=None,
        error_message=None,
        error_traceback=None,
        attempt=1,
        consecutive_reattempts=0,
        created_at=t,
        updated_at=t,
        # Every row names the same columns: one multi-row INSERT takes them all.
        output=None,
        item_index=None,
        item_count=None,
    )


def _map_rows() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    created = _base() + timedelta(seconds=5 * MAP_WORKFLOW_ID)
    workflow = _workflow(MAP_WORKFLOW_ID, "ReportWorkflow", "paused", created)
    ident = MAP_FIRST_EXECUTION_ID
    split = _execution(ident, MAP_WORKFLOW_ID, "split", "completed", created)
    split.update(item_count=MAP_ITEMS, output=[{"page": k} for k in range(MAP_ITEMS)])
    rows = [split]
    for k in range(MAP_ITEMS - 100):
        t = created + timedelta(seconds=2 + k)
        state = "completed" if k < MAP_ITEMS - 200 else "scheduled"
        tries = [("completed", "reattempted")] if k % 50 == 0 else []
        for n, (ex_state, outcome) in enumerate([*tries, (state, None)]):
            ident += 1
            row = _execution(ident, MAP_WORKFLOW_ID, "render", ex_state, t)
            row.update(item_index=k, attempt=n + 1)
            if outcome == "reattempted":
                row.update(outcome=outcome, error_class="pdf.Timeout", error_message="timed out")
            elif ex_state == "completed":
                row.update(output={"page": k, "bytes": 2_048 + k})
            rows.append(row)
    return workflow, rows


def fill(start_id: int, count: int) -> None:
    """Insert workflows ``start_id .. start_id + count - 1`` and their executions."""
    rng = random.Random(start_id)
    base = _base()
    wf_rows: list[dict[str, Any]] = []
    ex_rows: list[dict[str, Any]] = []
    names = list(CLASSES)
    weights = [p for _, p in STATES]
    for i in range(start_id, start_id + count):
        kind = names[i % 2]
        state = rng.choices([s for s, _ in STATES], weights)[0]
        if i == MAP_WORKFLOW_ID:
            workflow, rows = _map_rows()
            wf_rows.append(workflow)
            ex_rows.extend(rows)
            continue
        created = base + timedelta(seconds=i * 5)
        wf_rows.append(_workflow(i, kind, state, created))
        steps = CLASSES[kind]
        t0 = created - timedelta(minutes=2)
        for n in range(2):  # the first step's two tries that raised and were reattempted
            t = t0 + timedelta(minutes=n)
            row = _execution(i * 5 + n, i, steps[0], "completed", t)
            row.update(
                outcome="reattempted",
                error_class="billing.GatewayTimeout",
                error_message="gateway timed out",
                attempt=n + 1,
                consecutive_reattempts=n,
            )
            ex_rows.append(row)
        for n, name in enumerate(steps):
            last = n == len(steps) - 1
            ex_state = "completed"
            if state == "paused" and last:
                ex_state = "failed"
            elif state in ("ready", "performing") and last:
                ex_state = "scheduled" if state == "ready" else "in_progress"
            elif state == "canceled" and last:
                ex_state = "canceled"
            row = _execution(i * 5 + 2 + n, i, name, ex_state, created + timedelta(minutes=n))
            if ex_state == "failed":
                row.update(error_class="billing.CardDeclined", error_message="card declined")
            if n == 0:
                row.update(attempt=3, consecutive_reattempts=2)
            ex_rows.append(row)
    w, e = geneva.tables.workflows, geneva.tables.executions
    with geneva.engine().begin() as conn:
        conn.execute(sa.insert(w), wf_rows)
        for start in range(0, len(ex_rows), 20_000):
            conn.execute(sa.insert(e), ex_rows[start : start + 20_000])
        if conn.dialect.name == "postgresql":
            # The rows carry their ids: move the sequences past them, so that an action
            # the benchmark times (or one done by hand on a kept database) can insert.
            for table in (w, e):
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM {table.name}))"
                    )
                )
