"""Recent failures, for the overview: the newest paused workflows' failed steps, grouped.

Bounded whatever the tables hold: the newest ``scan`` paused workflows on the
``(state, id)`` index, then their latest executions on ``(workflow_id, id)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

from .queries import WorkflowFilter
from .queries import latest_executions
from .queries import list_workflows
from .states import StepState
from .states import WorkflowState

if TYPE_CHECKING:
    from .extension import Geneva


def recent_failures(
    ext: Geneva, workflow_type: str | None = None, *, limit: int = 10, scan: int = 200
) -> list[Mapping[str, Any]]:
    """Return paused workflows whose pause came from a failed step, newest first.

    Each row has the workflow's columns plus ``step_name``, ``error_class``,
    ``error_message`` and ``failed_at`` of the failing execution. Looks at the newest
    ``scan`` paused workflows only (the ``(type, state, id)`` / ``(state, id)`` index),
    so the cost stays bounded however many are paused.
    """
    paused = WorkflowFilter(workflow_type=workflow_type, states=(WorkflowState.PAUSED.value,))
    candidates = list_workflows(ext, paused, limit=scan)
    if not candidates:
        return []
    by_id = {row["id"]: row for row in candidates}
    latest = latest_executions(ext, list(by_id))
    found: list[Mapping[str, Any]] = []
    for workflow_id, row in by_id.items():
        failed = [x for x in latest.get(workflow_id, []) if x["state"] == StepState.FAILED]
        if failed:
            execution = max(failed, key=lambda x: x["id"])
            found.append(
                dict(
                    row,
                    step_name=execution["step_name"],
                    error_class=execution["error_class"],
                    error_message=execution["error_message"],
                    failed_at=execution["failed_at"],
                )
            )
            if len(found) >= limit:
                break
    return found


@dataclass(frozen=True)
class FailureGroup:
    """Recent failures of one (class, step, error class): how many, since when, one example."""

    type: str
    step_name: str
    error_class: str | None
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    #: The newest failure of the group (a row of :func:`recent_failures`).
    newest: Mapping[str, Any]


def group_failures(failures: Sequence[Mapping[str, Any]]) -> list[FailureGroup]:
    """Group :func:`recent_failures` rows by (class, step, error class), most recent first.

    Twenty workflows paused by the same gateway error are one line, and the one
    different failure is not pushed off the list.
    """
    groups: dict[tuple[str, str, str | None], list[Mapping[str, Any]]] = {}
    for row in failures:
        groups.setdefault((row["type"], row["step_name"], row["error_class"]), []).append(row)
    found = []
    for (stored_type, step_name, error_class), rows in groups.items():
        times = [r["failed_at"] for r in rows if r["failed_at"] is not None]
        newest = max(rows, key=lambda r: (r["failed_at"] or datetime.min, r["id"]))
        found.append(
            FailureGroup(
                type=stored_type,
                step_name=step_name,
                error_class=error_class,
                count=len(rows),
                first_seen=min(times) if times else None,
                last_seen=max(times) if times else None,
                newest=newest,
            )
        )
    return sorted(found, key=lambda g: g.last_seen or datetime.min, reverse=True)
