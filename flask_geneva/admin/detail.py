"""Everything the workflow detail page shows, read from the database in a few statements.

One workflow row, its executions (newest :data:`MAX_EXECUTIONS`), the hero when it still
exists, the graph layout, the failure with its source excerpt, and which operator
buttons apply (decided by the same rules, :func:`flask_geneva.commands.available`, over
the same snapshot the operations lock).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from .. import clock
from .. import commands
from .. import store
from ..states import is_ongoing
from ..transitions import Transition
from . import dag
from . import present
from . import source

if TYPE_CHECKING:
    from ..extension import Geneva

#: The detail page shows at most this many executions (the newest).
MAX_EXECUTIONS = 200


@dataclass
class Failure:
    """A failed execution, ready to render."""

    execution: Mapping[str, Any]
    excerpt: source.SourceExcerpt | None
    traceback: Any
    logs_url: str | None


@dataclass
class Detail:
    """The detail page's context."""

    workflow: Mapping[str, Any]
    cls: type[Any] | None
    executions: list[Mapping[str, Any]]
    truncated: bool
    latest: dict[str, Mapping[str, Any]]
    hero_text: str | None
    hero_problem: str | None
    layout: dag.Layout
    timeline: list[present.TimelineRow]
    reasons: list[str]
    failures: list[Failure]
    #: operation → steps it can target (empty list: no step needed); only applicable ones.
    actions: dict[str, list[str]]
    logs_url: str | None
    now: datetime

    @property
    def ongoing(self) -> bool:
        return is_ongoing(self.workflow["state"])


def load_workflow(ext: Geneva, workflow_id: int) -> Mapping[str, Any] | None:
    """Return the workflow row, or None."""
    w = ext.tables.workflows
    with ext.engine().connect() as conn:
        row = conn.execute(sa.select(w).where(w.c.id == workflow_id)).first()
    return None if row is None else dict(row._mapping)


def load_detail(ext: Geneva, workflow: Mapping[str, Any], logs_template: str | None) -> Detail:
    """Build the detail context for a workflow row."""
    now = clock.now()
    e = ext.tables.executions
    # Not the JSON metadata column: the page does not show it, and a row whose metadata is
    # not valid JSON (a hand edit on SQLite) must not make the page fail to render.
    columns = [c for c in e.c if c.name != "metadata"]
    query = (
        sa.select(*columns)
        .where(e.c.workflow_id == workflow["id"])
        .order_by(e.c.id.desc())
        .limit(MAX_EXECUTIONS + 1)
    )
    with ext.engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    truncated = len(rows) > MAX_EXECUTIONS
    executions = list(reversed(rows[:MAX_EXECUTIONS]))
    latest: dict[str, Mapping[str, Any]] = {}
    attempts: dict[str, int] = {}
    for x in executions:
        latest[x["step_name"]] = x
        attempts[x["step_name"]] = attempts.get(x["step_name"], 0) + 1

    cls = ext.registry.get(workflow["type"])
    graph = cls.__geneva_definition__.graph if cls is not None else None
    predecessors: dict[str, tuple[str, ...]] = dict(graph.predecessors) if graph is not None else {}
    for name in latest:  # steps no longer in the class still show, unconnected
        predecessors.setdefault(name, ())
    layout = dag.layout(predecessors, {k: v["state"] for k, v in latest.items()}, attempts)

    hero_text, hero_problem = _hero(ext, workflow)
    values = {
        "workflow_id": workflow["id"],
        "type": workflow["type"],
        "hero_type": workflow["hero_type"],
        "hero_id": workflow["hero_id"],
    }
    failures = []
    for x in latest.values():
        if x["state"] != "failed":
            continue
        definition = graph.steps.get(x["step_name"]) if graph is not None else None
        excerpt = source.step_excerpt(definition, x["error_traceback"]) if definition else None
        failures.append(
            Failure(
                execution=x,
                excerpt=excerpt,
                traceback=source.traceback_html(x["error_traceback"])
                if x["error_traceback"]
                else None,
                logs_url=present.logs_url(
                    logs_template,
                    dict(
                        values,
                        execution_id=x["id"],
                        step=x["step_name"],
                        started_at=x["started_at"],
                        finished_at=x["finished_at"],
                    ),
                ),
            )
        )
    return Detail(
        workflow=workflow,
        cls=cls,
        executions=executions,
        truncated=truncated,
        latest=latest,
        hero_text=hero_text,
        hero_problem=hero_problem,
        layout=layout,
        timeline=present.timeline(executions[-50:], workflow["created_at"], now),
        reasons=present.waiting_reasons(workflow["state"], list(latest.values()), now),
        failures=failures,
        actions=_actions(ext, workflow["id"], graph, now),
        logs_url=present.logs_url(logs_template, values),
        now=now,
    )


def _hero(ext: Geneva, workflow: Mapping[str, Any]) -> tuple[str | None, str | None]:
    if workflow["hero_type"] is None:
        return None, None
    try:
        hero = ext.heroes.load(ext.db.session, workflow["hero_type"], workflow["hero_id"])
    except (LookupError, ValueError) as error:
        return None, str(error)
    if hero is None:
        return None, "the hero record no longer exists"
    return str(hero), None


def _actions(ext: Geneva, workflow_id: int, graph: Any, now: datetime) -> dict[str, list[str]]:
    """The operator buttons, from the same rules and the same snapshot the commands use.

    Read from each step's latest execution (not the page's newest rows), so a button
    never vanishes on a long history.
    """
    with ext.engine().connect() as conn:
        found = store.snapshot(conn, ext.tables, workflow_id, lock=False)
    if found is None:
        return {}
    row, records = found
    return commands.available(Transition(graph, row["state"], records, now))
