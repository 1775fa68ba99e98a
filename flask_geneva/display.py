"""Plain-text renderings for the terminal: tables, step status, and DAGs as text, Mermaid or DOT.

Pure functions over rows and :class:`~flask_geneva.graph.StepGraph`; the CLI prints
what they return.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .graph import StepGraph
from .logging import escape
from .records import Signal
from .signal_rules import NO_TIMEOUT

_MARKERS = {
    "completed": "✓",
    "skipped": "»",
    "scheduled": "…",
    "in_progress": "▶",
    "failed": "✗",
    "canceled": "-",
    "waiting": "⧗",
}


def marker(execution: Mapping[str, Any] | None) -> str:
    """Return a one-character mark for a step's latest execution (blank: not started)."""
    if execution is None:
        return " "
    if execution["state"] == "completed" and execution["outcome"] != "success":
        return "↻"  # completed by a reattempt: another execution follows
    return _MARKERS.get(execution["state"], "?")


def execution_status(execution: Mapping[str, Any]) -> str:
    """Return ``state (outcome)``, with the due time while scheduled and the attempt."""
    state, outcome = execution["state"], execution["outcome"]
    text = str(state if outcome in (None, state, "success") else f"{state} ({outcome})")
    if state == "scheduled":
        text += f" for {time(execution['scheduled_for'])}"
    elif state == "waiting" and execution["scheduled_for"] < NO_TIMEOUT:
        text += f", times out at {time(execution['scheduled_for'])}"
    if execution["attempt"] > 1:
        text += f", attempt {execution['attempt']}"
    return text


def signal_result(signal: Signal, workflow_state: str | None = None) -> str:
    """Say what a delivery did: stored or a duplicate, and the step it woke (or pending).

    :param workflow_state: the workflow's state after the delivery; a paused workflow
        stores the signal and wakes its step only on resume, and the sentence says so.
    """
    key = f" (key {signal.idempotency_key!r})" if signal.idempotency_key is not None else ""
    head = f"signal {signal.name!r}{key} to workflow {signal.workflow_id}"
    if signal.duplicate:
        fate = (
            f"consumed by step {signal.consumed_step!r}"
            if signal.consumed_step is not None
            else "still pending"
        )
        return f"{head}: duplicate of signal {signal.id}, nothing changed ({fate})"
    if signal.consumed_step is not None:
        return f"{head}: stored as signal {signal.id}; woke step {signal.consumed_step!r}"
    if workflow_state == "paused":
        return f"{head}: stored as signal {signal.id}; pending until the workflow is resumed"
    return f"{head}: stored as signal {signal.id}; pending (no step waits for it now)"


def hero(row: Mapping[str, Any]) -> str:
    """Return ``Type:id`` for a workflow row, or ``-`` without a hero."""
    return f"{row['hero_type']}:{row['hero_id']}" if row["hero_type"] else "-"


def time(value: datetime | None) -> str:
    """Return a stored (naive UTC) time to the second, or ``-``."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def table(rows: Sequence[Sequence[str]], *, indent: int = 0) -> list[str]:
    """Return ``rows`` (the first is the header) as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        " " * indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render_graph(name: str, graph: StepGraph, output: str = "text") -> list[str]:
    """Return the DAG of a workflow class as lines of ``text``, ``mermaid`` or ``dot``."""
    edges = [(pred, step) for step, after in graph.describe() for pred in after]
    if output == "mermaid":
        return (
            ["flowchart TD"]
            + [f'  {step}["{step}"]' for step in graph.steps]
            + [f"  {pred} --> {step}" for pred, step in edges]
        )
    if output == "dot":
        return (
            [f'digraph "{name}" {{', "  rankdir=TB;"]
            + [f'  "{step}";' for step in graph.steps]
            + [f'  "{pred}" -> "{step}";' for pred, step in edges]
            + ["}"]
        )
    if output != "text":
        raise ValueError(f"unknown graph format {output!r}; expected text, mermaid or dot")
    lines = [f"{name} ({len(graph)} steps)"]
    for step, after in graph.describe():
        wait = graph.steps[step].wait
        start = f"after {', '.join(after)}" if after else "start"
        lines.append(f"  {step:<24} {start}{f', wait {wait}' if wait else ''}".rstrip())
    return lines


#: The parts of a map step's progress after "done", in this order (non-zero ones only).
PROGRESS_PARTS = ("running", "failed", "waiting", "scheduled", "canceled")


def map_progress(total: int | None, counts: Mapping[str, int]) -> str:
    """Return ``37/40 done · 2 running · 1 failed`` for a map step.

    :param total: how many items the producer's list holds (None: not known yet, ``?``).
    :param counts: items per kind (``done``, ``running``, ``failed``, ``waiting``,
        ``scheduled``, ``canceled``), each item counted by its latest execution.
    """
    parts = [f"{counts.get('done', 0):,}/{'?' if total is None else f'{total:,}'} done"]
    parts.extend(f"{counts[k]:,} {k}" for k in PROGRESS_PARTS if counts.get(k))
    return " · ".join(parts)


def cut(text: str, width: int) -> str:
    """Return ``text`` with control characters escaped, cut to ``width`` characters (``…``)."""
    text = escape(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def resumable(execution: Mapping[str, Any], width: int = 40) -> str:
    """Return ``cursor 1234 · 5 iterations · continues #88`` ("" for a step never checkpointed).

    The cursor shows as compact JSON, escaped and cut to ``width`` characters.
    """
    parts = []
    cursor = execution.get("cursor")
    if cursor is not None:
        parts.append(f"cursor {cut(json.dumps(cursor, ensure_ascii=False), width)}")
    iterations = execution.get("iterations") or 0
    if iterations:
        parts.append(f"{iterations:,} iteration{'s' if iterations != 1 else ''}")
    if execution.get("continues_id") is not None:
        parts.append(f"continues #{execution['continues_id']}")
    return " · ".join(parts)
