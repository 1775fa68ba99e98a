"""What ``flask geneva show ID`` prints: a workflow, its steps, executions, outputs and maps.

Read in a few bounded statements: the workflow's executions that are not map items
(the newest :data:`MAX_EXECUTIONS`), each map step's progress, and the first failed
items; outputs are read cut in the database (:mod:`flask_geneva.admin.items`). Every
value from a body (outputs, cursors, errors) is printed with its control characters
escaped, so an output cannot move the cursor or rewrite the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import display
from .admin import items
from .logging import escape

if TYPE_CHECKING:
    from .extension import Geneva

#: ``show`` prints at most this many executions (the newest) that are not map items.
MAX_EXECUTIONS = 500
#: An output prints cut to this many characters.
OUTPUT_WIDTH = 60
#: ... and at most this many failed items of each map step are listed.
FAILED_ITEMS = 5


def render(ext: Geneva, row: Mapping[str, Any], label: str) -> list[str]:
    """Return the lines ``show`` prints for the workflow ``row`` (``label``: its class)."""
    e = ext.tables.executions
    cls = ext.registry.get(row["type"])
    graph = cls.step_graph() if cls is not None else None
    maps = graph.maps if graph is not None else {}
    # Not the JSON metadata column (not shown): invalid JSON there must not crash show.
    columns = [c for c in e.c if c.name not in ("metadata", "output")]
    with ext.engine().connect() as conn:
        newest = [
            dict(r)
            for r in conn.execute(
                sa.select(*columns, *items.output_columns(e))
                .where(e.c.workflow_id == row["id"], e.c.item_index.is_(None))
                .order_by(e.c.id.desc())
                .limit(MAX_EXECUTIONS + 1)
            ).mappings()
        ]
        progress = items.map_progress(conn, ext.tables, row["id"], maps)
        failed_items = {
            name: items.item_page(
                conn, ext.tables, row["id"], name, state="failed", limit=FAILED_ITEMS
            )[0]
            for name, p in progress.items()
            if p.counts.get("failed")
        }
    executions = list(reversed(newest[:MAX_EXECUTIONS]))
    lines = [f"{label} {row['id']}: {row['state']}", f"  hero:            {display.hero(row)}"]
    for column in ("created_at", "started_at", "transitioned_at", "updated_at"):
        lines.append(f"  {column + ':':<16} {display.time(row[column])}")
    # A rerun's superseded rows are listed below as history, not as the step's state.
    latest = {x["step_name"]: x for x in executions if x["superseded_at"] is None}
    lines.append("\nSteps:")
    if graph is None:
        lines.append(f"  (type {row['type']!r} names no workflow class in this process)")
    else:
        for name in graph.topological_order:
            last = latest.get(name)
            p = progress.get(name)
            if p is not None and p.items:
                mark = display.marker({"state": p.state, "outcome": "success"})
                status = f"map: {display.map_progress(p.total, p.counts)}"
            else:
                mark = display.marker(last)
                status = "not started" if last is None else display.execution_status(last)
            after = graph.predecessors[name]
            suffix = f"  (after {', '.join(after)})" if after else ""
            lines.append(f"  {mark} {name:<24} {status}{suffix}")
    lines.append("\nExecutions:")
    if len(newest) > MAX_EXECUTIONS:
        lines.append(f"  (the newest {MAX_EXECUTIONS})")
    lines.extend(display.table(_table(executions), indent=2))
    for name, found in failed_items.items():
        count = progress[name].counts["failed"]
        lines.append(f"\nFailed items of {name} ({count:,}; the first {len(found)}):")
        for x in found:
            error = escape(f"{x['error_class']}: {x['error_message']}")
            lines.append(f"  item {x['item_index']} (execution {x['id']}): {error}")
    failed = [x for x in executions if x["error_class"]]
    if failed:
        last_error = failed[-1]
        lines.append(
            f"\nLast error (execution {last_error['id']}, step {last_error['step_name']}):\n"
            f"  {last_error['error_class']}: {last_error['error_message']}"
        )
        if last_error["error_traceback"]:
            lines.append(last_error["error_traceback"].rstrip())
    return lines


def _table(executions: list[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    table: list[tuple[str, ...]] = [
        (
            "ID",
            "STEP",
            "STATE",
            "OUTCOME",
            "ATTEMPT",
            "SCHEDULED FOR",
            "STARTED",
            "FINISHED",
            "OUTPUT",
        )
    ]
    cursors = [display.resumable(x) for x in executions]
    if any(cursors):
        table[0] += ("CURSOR",)
    for x, cursor in zip(executions, cursors, strict=True):
        output = items.output_text(x["output_text"])
        shown = "-" if output is None else display.cut(output.preview, OUTPUT_WIDTH)
        table.append(
            (
                str(x["id"]),
                x["step_name"],
                x["state"],
                (x["outcome"] or "-") + (" (superseded)" if x["superseded_at"] else ""),
                str(x["attempt"]),
                display.time(x["scheduled_for"]),
                display.time(x["started_at"]),
                display.time(x["finished_at"]),
                shown,
            )
            + ((cursor or "-",) if any(cursors) else ())
        )
    return table
