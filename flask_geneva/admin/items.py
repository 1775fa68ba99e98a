"""Reads for map steps and outputs, bounded however many items a map has.

A map step has one execution per item (and more per item after reattempts), up to
``GENEVA_MAX_MAP_ITEMS`` of them; pages never load them all. Each item counts by its
latest execution (the highest id of its ``(step, item_index)``), computed in the
database over the workflow's own rows (the ``(workflow_id, id)`` index), so the
progress of a 10,000-item map is one grouped statement and a page of items is one
statement with a keyset on ``item_index``.

Outputs are read cut in the database (:func:`output_columns`), so a table of
executions never carries a 256 KiB value; the whole value has its own URL.

The CLI's ``show`` reads the same way: these helpers take a connection and the tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from ..states import Outcome
from ..states import StepState
from ..store import done_clause

if TYPE_CHECKING:
    from ..store import Tables

#: An output shows cut to this many characters in a table cell...
OUTPUT_PREVIEW = 80
#: ... and, expanded, up to this many (indented); a longer one links to its own URL.
OUTPUT_SHOWN = 4_000

#: The item filters, in the order the progress sentence names them: the latest
#: execution's states each covers ("done": completed successfully, or skipped).
ITEM_FILTERS: dict[str, tuple[str, ...]] = {
    "done": (StepState.COMPLETED, StepState.SKIPPED),
    "running": (StepState.IN_PROGRESS,),
    "failed": (StepState.FAILED,),
    "waiting": (StepState.WAITING,),
    "scheduled": (StepState.SCHEDULED,),
    "canceled": (StepState.CANCELED,),
}


@dataclass
class MapProgress:
    """How far one map step got, counting each item by its latest execution."""

    step: str
    #: How many items the producer's list holds (None: it has not completed yet).
    total: int | None
    #: Items per filter of :data:`ITEM_FILTERS` (an item not created yet counts in none).
    counts: dict[str, int] = field(default_factory=dict)
    #: The map step's own row (no items, or skipped as a whole), if it has one.
    own: Mapping[str, Any] | None = None
    #: The span of its item executions: first created / scheduled / started, last finished.
    created_at: datetime | None = None
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The highest execution id among its items (where the step sits in a newest-first table).
    newest_id: int = 0

    @property
    def items(self) -> int:
        """How many items have an execution."""
        return sum(self.counts.values())

    @property
    def state(self) -> str:
        """One state for the map node: failed, running, waiting, completed or scheduled."""
        if self.own is not None and not self.counts:
            return str(self.own["state"])
        c = self.counts
        if c.get("failed"):
            return StepState.FAILED
        if c.get("running"):
            return StepState.IN_PROGRESS
        if self.total is not None and c.get("done", 0) >= self.total:
            return StepState.COMPLETED
        if c.get("waiting") and not c.get("scheduled"):
            return StepState.WAITING
        if c.get("canceled") and self.items == c["canceled"]:
            return StepState.CANCELED
        return StepState.SCHEDULED


def output_columns(e: sa.Table) -> list[Any]:
    """The output as text cut to :data:`OUTPUT_SHOWN` + 1 characters (``output_text``)."""
    text = sa.cast(e.c.output, sa.Text)
    return [sa.func.substr(text, 1, OUTPUT_SHOWN + 1).label("output_text")]


@dataclass(frozen=True)
class OutputText:
    """An output ready to show: one short line, and indented when the line cuts it."""

    preview: str
    full: str | None
    #: The expanded text is cut too: the whole value is only at its own URL.
    cut: bool


def output_text(text: str | None) -> OutputText | None:
    """Turn the text :func:`output_columns` read into what a page shows (None: no output)."""
    if text is None or text == "null":
        return None
    cut = len(text) > OUTPUT_SHOWN
    if cut:
        compact = text[:OUTPUT_SHOWN]
        pretty = compact + "\n…"
    else:
        try:
            value = json.loads(text)
        except ValueError:
            compact = pretty = text
        else:
            compact = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
            pretty = json.dumps(value, ensure_ascii=False, indent=2)
    if len(compact) <= OUTPUT_PREVIEW and not cut:
        return OutputText(compact, None, False)
    return OutputText(compact[: OUTPUT_PREVIEW - 1] + "…", pretty, cut)


def whole_output(conn: Any, tables: Tables, workflow_id: int, execution_id: int) -> Any:
    """The whole output of one execution of the workflow, as indented JSON text.

    :raises LookupError: the workflow has no such execution.
    """
    e = tables.executions
    row = conn.execute(
        sa.select(sa.cast(e.c.output, sa.Text)).where(
            e.c.id == execution_id, e.c.workflow_id == workflow_id
        )
    ).first()
    if row is None:
        raise LookupError(f"workflow {workflow_id} has no execution {execution_id}")
    if row[0] is None:
        return "null"
    try:
        return json.dumps(json.loads(row[0]), ensure_ascii=False, indent=2)
    except ValueError:
        return row[0]


def _latest_items(
    e: sa.Table, workflow_id: int, steps: Iterable[str], after: int | None = None
) -> Any:
    """Subquery: the id of each item's latest execution, for the given map steps."""
    where = [
        e.c.workflow_id == workflow_id,
        e.c.step_name.in_(list(steps)),
        e.c.superseded_at.is_(None),  # a rerun's history is not the map's progress
    ]
    where.append(e.c.item_index.is_not(None) if after is None else e.c.item_index > after)
    return (
        sa.select(sa.func.max(e.c.id).label("id"))
        .where(*where)
        .group_by(e.c.step_name, e.c.item_index)
        .subquery("latest_items")
    )


def _filter_of(state: str, outcome: str | None) -> str | None:
    if state == StepState.COMPLETED:
        # Completed by a reattempt with no execution after it (the workflow ended).
        return "done" if outcome in (None, Outcome.SUCCESS) else None
    for name, states in ITEM_FILTERS.items():
        if state in states:
            return name
    return None


def map_progress(
    conn: Any, tables: Tables, workflow_id: int, maps: Mapping[str, str]
) -> dict[str, MapProgress]:
    """The progress of each map step of a workflow (three grouped statements).

    :param maps: each map step with the producer it maps over (``StepGraph.maps``).
    """
    if not maps:
        return {}
    e = tables.executions
    found = {step: MapProgress(step, None) for step in maps}
    producers = set(maps.values())
    # The producers' latest successful rows: how many items their lists hold.
    for name, count in conn.execute(
        sa.select(e.c.step_name, e.c.item_count).where(
            e.c.id.in_(
                sa.select(sa.func.max(e.c.id))
                .where(
                    e.c.workflow_id == workflow_id,
                    e.c.step_name.in_(producers),
                    e.c.item_index.is_(None),
                    e.c.superseded_at.is_(None),
                    e.c.state == StepState.COMPLETED,
                    e.c.outcome == Outcome.SUCCESS,
                )
                .group_by(e.c.step_name)
            )
        )
    ):
        for step, producer in maps.items():
            if producer == name:
                found[step].total = count
    latest = _latest_items(e, workflow_id, maps)
    for step, state, outcome, n, newest in conn.execute(
        sa.select(e.c.step_name, e.c.state, e.c.outcome, sa.func.count(), sa.func.max(e.c.id))
        .join(latest, latest.c.id == e.c.id)
        .group_by(e.c.step_name, e.c.state, e.c.outcome)
    ):
        progress = found[step]
        name = _filter_of(state, outcome)
        if name is not None:
            progress.counts[name] = progress.counts.get(name, 0) + int(n)
        progress.newest_id = max(progress.newest_id, int(newest))
    for step, created, due, started, finished in conn.execute(
        sa.select(
            e.c.step_name,
            sa.func.min(e.c.created_at),
            sa.func.min(e.c.scheduled_for),
            sa.func.min(e.c.started_at),
            sa.func.max(e.c.finished_at),
        )
        .where(
            e.c.workflow_id == workflow_id,
            e.c.step_name.in_(list(maps)),
            e.c.item_index.is_not(None),
            e.c.superseded_at.is_(None),
        )
        .group_by(e.c.step_name)
    ):
        progress = found[step]
        progress.created_at, progress.scheduled_for = created, due
        progress.started_at, progress.finished_at = started, finished
    return found


def item_page(
    conn: Any,
    tables: Tables,
    workflow_id: int,
    step: str,
    *,
    state: str | None = None,
    after: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of a map step's items (each its latest execution), by item index.

    :param state: a key of :data:`ITEM_FILTERS`, or None for every item.
    :param after: the keyset: only items with a higher index.
    :return: the rows (without metadata and with ``output_text``) and the index to
        continue after (None: this is the last page).
    """
    e = tables.executions
    latest = _latest_items(e, workflow_id, [step], after)
    columns = [c for c in e.c if c.name not in ("metadata", "output")]
    query = sa.select(*columns, *output_columns(e)).join(latest, latest.c.id == e.c.id)
    if state is not None:
        query = query.where(e.c.state.in_(ITEM_FILTERS[state]))
        if state == "done":
            query = query.where(done_clause(e))
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(e.c.item_index).limit(limit + 1))]
    more = rows[limit - 1]["item_index"] if len(rows) > limit else None
    return rows[:limit], more
