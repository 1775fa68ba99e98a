"""Read-only queries over workflows for the admin and the CLI: filters, keyset pages, counts.

Every query here stays fast on millions of rows because it walks an index and stops
early:

* lists are ordered newest first by ``id`` and paginated by keyset (``id < before_id``),
  never by ``OFFSET``, so page 1000 costs what page 1 costs;
* counts per state are capped ``COUNT`` s over the ``(type, state, id)`` and
  ``(state, id)`` indexes (``SELECT COUNT(*) FROM (SELECT 1 ... LIMIT cap)``), so a
  table of finished workflows that grows without bound does not slow the overview;
* the distinct workflow types are found with a loose index scan (one ``MIN(type) WHERE
  type > ?`` seek per type), not a ``SELECT DISTINCT`` over the table.

::

    from flask_geneva.queries import WorkflowFilter, list_workflows

    f = WorkflowFilter(workflow_type="PaymentWorkflow", states=("paused",))
    rows = list_workflows(geneva, f, limit=50)
    older = list_workflows(geneva, f, limit=50, before_id=rows[-1]["id"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import census
from . import clock
from . import error_search
from . import reads
from .states import StepState
from .states import WorkflowState

if TYPE_CHECKING:
    from .extension import Geneva

#: Every workflow state, in the order the admin and CLI show them.
ALL_STATES: tuple[str, ...] = tuple(s.value for s in WorkflowState)
#: Execution states that make a step "current": running, waiting, or failed.
CURRENT_STEP_STATES: tuple[str, ...] = (
    StepState.SCHEDULED.value,
    StepState.IN_PROGRESS.value,
    StepState.WAITING.value,
    StepState.FAILED.value,
)


@dataclass(frozen=True)
class WorkflowFilter:
    """Which workflows to list, count or act on; every field narrows the selection.

    The empty filter ``WorkflowFilter()`` matches every workflow.

    :param workflow_type: the stored identity (the ``type`` column, e.g.
        ``"PaymentWorkflow"`` or a pinned ``__geneva_type__``), or None for all classes.
    :param states: workflow states to include (empty: every state).
    :param hero_type: the hero's stored type (its model class name).
    :param hero_id: the hero's primary key, as a string.
    :param step: a step name; matches workflows whose *latest* execution of that step
        is scheduled, in progress or failed (the step the workflow is at or stuck on).
    :param created_after: only workflows created at or after this naive UTC time.
    :param created_before: only workflows created before this naive UTC time.
    :param updated_after: only workflows updated at or after this naive UTC time.
    :param updated_before: only workflows updated before this naive UTC time.
    :param actor: only workflows this operator acted on (their recorded actions' actor).
    :param attention: only workflows that need a look (:data:`ATTENTION`):
        ``reattempting`` (a step failed and its next attempt is scheduled: running but
        failing), ``overdue`` (a ready or performing workflow's step due more than
        :data:`OVERDUE_AFTER` ago: no worker picked it up), ``waiting`` (a step waiting
        for a signal for longer than ``waiting_over``, one hour by default),
        ``stranded`` (an ongoing workflow of a type no class stores, one with an active
        execution on a step its class neither defines nor skips, or a paused one whose
        failure on such a step paused it: what ``flask geneva check`` reports).
    :param waiting_over: with ``attention="waiting"``: how long counts as long.
    :param error: only workflows with a current failed execution whose error class or
        message holds this text (case-insensitive; see :mod:`~flask_geneva.error_search`).
    :param error_class: only workflows with a current failed execution of exactly this
        error class (what a group of the overview's recent failures links to).
    """

    workflow_type: str | None = None
    states: tuple[str, ...] = field(default=())
    hero_type: str | None = None
    hero_id: str | None = None
    step: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    actor: str | None = None
    attention: str | None = None
    waiting_over: timedelta | None = None
    error: str | None = None
    error_class: str | None = None

    def __post_init__(self) -> None:
        if self.attention is not None and self.attention not in ATTENTION:
            raise ValueError(
                f"unknown attention filter {self.attention!r}; expected one of "
                f"{', '.join(ATTENTION)}"
            )
        unknown = [s for s in self.states if s not in ALL_STATES]
        if unknown:
            raise ValueError(
                f"unknown workflow state(s) {', '.join(map(repr, unknown))}; "
                f"expected any of {', '.join(ALL_STATES)}"
            )

    def is_empty(self) -> bool:
        """Return whether the filter matches every workflow."""
        return self == WorkflowFilter()


def _conditions(ext: Geneva, f: WorkflowFilter) -> list[sa.ColumnElement[bool]]:
    w = ext.tables.workflows.c
    where: list[sa.ColumnElement[bool]] = []
    if f.workflow_type is not None:
        where.append(w.type == f.workflow_type)
    if f.states:
        where.append(w.state == f.states[0] if len(f.states) == 1 else w.state.in_(f.states))
    if f.hero_type is not None:
        where.append(w.hero_type == f.hero_type)
    if f.hero_id is not None:
        where.append(w.hero_id == f.hero_id)
    if f.created_after is not None:
        where.append(w.created_at >= f.created_after)
    if f.created_before is not None:
        where.append(w.created_at < f.created_before)
    if f.updated_after is not None:
        where.append(w.updated_at >= f.updated_after)
    if f.updated_before is not None:
        where.append(w.updated_at < f.updated_before)
    if f.step is not None:
        where.append(_current_step_condition(ext, f.step))
    if f.attention == "stranded":  # what the census reports: one rule, decided there
        where.append(census.stranded_condition(ext))
    elif f.attention is not None:
        where.append(_attention_condition(ext, f))
    if f.error is not None:
        where.append(_error_condition(ext, f.error))
    if f.error_class is not None:
        e = ext.tables.executions
        rows = sa.select(e.c.workflow_id).where(
            e.c.state == StepState.FAILED,
            e.c.superseded_at.is_(None),
            e.c.error_class == f.error_class,
        )
        where.append(_few_or_many(ext, rows))
    if f.actor is not None:  # the (actor, workflow_id) index of the actions
        a = ext.tables.actions.c
        where.append(w.id.in_(sa.select(a.workflow_id).where(a.actor == f.actor)))
    return where


#: Below this many executions of a step in a current state, the step filter first narrows
#: to their workflows; above it, it checks workflows newest first (see below).
STEP_CANDIDATES_LIMIT = 1000


#: The "needs a look" filters of :class:`WorkflowFilter`.
ATTENTION = ("reattempting", "overdue", "waiting", "stranded")
#: A step due longer ago than this, in a workflow that may run, is overdue.
OVERDUE_AFTER = timedelta(seconds=30)
#: ``attention="waiting"`` without ``waiting_over``: waiting for a signal over an hour.
WAITING_OVER = timedelta(hours=1)


def _attention_condition(ext: Geneva, f: WorkflowFilter) -> sa.ColumnElement[bool]:
    # The workflows with an active execution of that kind, read from the executions'
    # (state, scheduled_for, workflow_id, step_name, consecutive_reattempts) index
    # alone: the scan is bounded by how many executions are in that state now
    # (scheduled or waiting), never by the history. Superseded rows are never active
    # (a rerun cancels them first), so no superseded_at test sends it to the table.
    w = ext.tables.workflows
    e = ext.tables.executions
    now = clock.now()
    runnable = (WorkflowState.READY.value, WorkflowState.PERFORMING.value)
    if f.attention == "reattempting":
        rows = sa.select(e.c.workflow_id).where(
            e.c.state == StepState.SCHEDULED, e.c.consecutive_reattempts > 0
        )
    elif f.attention == "overdue":
        rows = sa.select(e.c.workflow_id).where(
            e.c.state == StepState.SCHEDULED, e.c.scheduled_for < now - OVERDUE_AFTER
        )
    else:
        since = now - (f.waiting_over if f.waiting_over is not None else WAITING_OVER)
        # updated_at: when it started waiting (nothing writes a waiting row until it ends)
        rows = sa.select(e.c.workflow_id).where(
            e.c.state == StepState.WAITING, e.c.updated_at < since
        )
    condition = _few_or_many(ext, rows)
    return sa.and_(w.c.state.in_(runnable), condition) if f.attention == "overdue" else condition


def _few_or_many(
    ext: Geneva, rows: sa.Select[Any], *, many: sa.ColumnElement[bool] | None = None
) -> sa.ColumnElement[bool]:
    """``workflows.id IN rows``, given to the database as the ids when they are few.

    Up to :data:`STEP_CANDIDATES_LIMIT` matching ids are read first (one short scan of
    the index). When that is all of them, the list holds the ids themselves, so the
    planner knows how few they are; otherwise the subquery, matches being dense enough
    that walking the workflows newest first finds a page soon (or ``many``, when
    given, a condition that does that walk). (Given the subquery
    alone, PostgreSQL may guess dense, walk newest first, and read every active row
    when in fact none match.)
    """
    w = ext.tables.workflows
    with reads.connect(ext) as conn:
        ids = list(conn.execute(rows.limit(STEP_CANDIDATES_LIMIT + 1)).scalars())
    if len(ids) <= STEP_CANDIDATES_LIMIT:
        return w.c.id.in_(sorted(set(ids))) if ids else sa.false()
    return w.c.id.in_(rows) if many is None else many


def _error_condition(ext: Geneva, text: str) -> sa.ColumnElement[bool]:
    # A trigram index on PostgreSQL, a bounded scan elsewhere: see error_search.
    # Many matches: each workflow, newest first, probed for one (a LIMIT 1 subquery the
    # planner cannot turn into a join over every match).
    w = ext.tables.workflows
    e = ext.tables.executions
    matching = error_search.failed_matching(ext, text)
    probe = matching.where(e.c.workflow_id == w.c.id).limit(1).correlate(w).scalar_subquery()
    return _few_or_many(ext, matching, many=probe.is_not(None))


def _current_step_condition(ext: Geneva, step: str) -> sa.ColumnElement[bool]:
    # "The latest execution of ``step`` in this workflow is scheduled, in progress or
    # failed", checked per workflow with one probe of the (workflow_id, id) index.
    #
    # Which plan is fast depends on how many executions of the step are in those
    # states, so one capped count on the (step_name, state) index picks it:
    # * few (a rare step, or a stuck one): restrict to their workflows first (IN), so
    #   the database never walks workflows that cannot match;
    # * many: let the list walk workflows newest first on its own index and stop at
    #   the page size; matches are dense, so it stops early.
    # (A NOT EXISTS anti-join for "latest" looks simpler, but PostgreSQL answers it
    # with a hash of every execution of the step: 100 ms at 100,000 workflows.)
    w = ext.tables.workflows
    e = ext.tables.executions
    latest_state = (
        sa.select(e.c.state)
        .where(e.c.workflow_id == w.c.id, e.c.step_name == step, e.c.superseded_at.is_(None))
        .order_by(e.c.id.desc())
        .limit(1)
        .correlate(w)
        .scalar_subquery()
    )
    condition = latest_state.in_(CURRENT_STEP_STATES)
    candidates = sa.select(e.c.workflow_id).where(
        e.c.step_name == step, e.c.state.in_(CURRENT_STEP_STATES), e.c.superseded_at.is_(None)
    )
    counted = sa.select(sa.func.count()).select_from(
        candidates.limit(STEP_CANDIDATES_LIMIT).subquery()
    )
    with reads.connect(ext) as conn:
        few = int(conn.execute(counted).scalar_one()) < STEP_CANDIDATES_LIMIT
    if few:
        # No LIMIT inside this IN: MariaDB refuses LIMIT in IN (subquery).
        return sa.and_(w.c.id.in_(candidates), condition)
    return condition


def filtered_select(ext: Geneva, f: WorkflowFilter) -> sa.Select[Any]:
    """Return a Core ``SELECT id FROM geneva_workflows WHERE <filter> ORDER BY id DESC``.

    Use it to build your own query (add ``.limit()``, a keyset condition, or wrap it);
    :func:`list_workflows` and :func:`iter_ids` are built on it.
    """
    w = ext.tables.workflows
    return sa.select(w.c.id).where(*_conditions(ext, f)).order_by(w.c.id.desc())


def list_workflows(
    ext: Geneva, f: WorkflowFilter, *, limit: int, before_id: int | None = None
) -> list[Mapping[str, Any]]:
    """Return up to ``limit`` workflow rows (all columns) matching ``f``, newest first.

    Keyset pagination: pass the last row's ``id`` as ``before_id`` to get the next,
    older page. Fewer than ``limit`` rows means there is no further page.

    :param limit: the page size (ask for one more than you show to know if another
        page exists).
    :param before_id: only rows with ``id < before_id``.
    """
    # Ids first, rows second: selecting only ids lets the database walk the
    # (type, state, id) / (state, id) index backwards and stop at ``limit`` without
    # touching the table; asking for every column at once makes PostgreSQL prefer a
    # bitmap scan of every match followed by a sort (20 ms instead of 1 ms at 100,000).
    w = ext.tables.workflows
    query = filtered_select(ext, f)
    if before_id is not None:
        query = query.where(w.c.id < before_id)
    with reads.connect(ext) as conn:
        ids = [int(row[0]) for row in conn.execute(query.limit(limit))]
        if not ids:
            return []
        rows = conn.execute(sa.select(w).where(w.c.id.in_(ids)).order_by(w.c.id.desc()))
        return [dict(row._mapping) for row in rows]


def iter_ids(ext: Geneva, f: WorkflowFilter, batch_size: int = 500) -> Iterator[list[int]]:
    """Yield the ids matching ``f`` in lists of at most ``batch_size``, newest first.

    Each batch is a fresh keyset query (``id < last id seen``), so acting on a batch
    (pausing it, say) between two batches neither skips nor repeats a workflow, and no
    connection is held while the caller works.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    w = ext.tables.workflows
    base = filtered_select(ext, f)
    before: int | None = None
    while True:
        query = base if before is None else base.where(w.c.id < before)
        with reads.connect(ext) as conn:
            ids = [int(row[0]) for row in conn.execute(query.limit(batch_size))]
        if ids:
            yield ids
        if len(ids) < batch_size:
            return
        before = ids[-1]


def narrowed(f: WorkflowFilter, allowed: Collection[str]) -> WorkflowFilter | None:
    """``f`` restricted to the ``allowed`` states (an operation's); None when none remain."""
    states = [s for s in (f.states or ALL_STATES) if s in allowed]
    if not states:
        return None
    return dataclasses.replace(f, states=tuple(states))


def count_matching(ext: Geneva, f: WorkflowFilter, *, cap: int | None = None) -> int:
    """Return how many workflows match ``f``, counting at most ``cap`` of them.

    With ``cap`` the database stops after ``cap`` index entries, so the cost is bounded
    (a result equal to ``cap`` means "``cap`` or more"); without it the count is exact
    and costs a scan of every matching row.
    """
    inner = filtered_select(ext, f).order_by(None)
    if cap is not None:
        inner = inner.limit(cap)
    query = sa.select(sa.func.count()).select_from(inner.subquery())
    with reads.connect(ext) as conn:
        return int(conn.execute(query).scalar_one())


def counts_by_state(
    ext: Geneva, workflow_type: str | None = None, *, cap: int | None = None
) -> dict[str, int]:
    """Return ``{state: count}`` for every workflow state (zeros included).

    One statement: a ``UNION ALL`` of one ``COUNT`` per state, each answered from the
    ``(type, state, id)`` index (with ``workflow_type``) or the ``(state, id)`` index.

    :param workflow_type: a stored identity, or None for all classes together.
    :param cap: count at most this many rows per state (a count equal to ``cap`` means
        "``cap`` or more"); keeps the cost flat however many finished workflows pile up.
    """
    return counts_by_type_and_state(ext, [workflow_type], cap=cap)[workflow_type]


def counts_by_type_and_state(
    ext: Geneva, workflow_types: Sequence[str | None], *, cap: int | None = None
) -> dict[str | None, dict[str, int]]:
    """Return ``{type: {state: count}}`` for the given types in one statement.

    ``None`` in ``workflow_types`` stands for all classes together. See
    :func:`counts_by_state` for ``cap``.
    """
    w = ext.tables.workflows
    parts: list[sa.Select[Any]] = []
    keys: list[tuple[str | None, str]] = []
    for index, workflow_type in enumerate(workflow_types):
        for state in ALL_STATES:
            inner: sa.Select[Any] = sa.select(sa.literal_column("1").label("one")).select_from(w)
            inner = inner.where(w.c.state == state)
            if workflow_type is not None:
                inner = inner.where(w.c.type == workflow_type)
            if cap is not None:
                inner = inner.limit(cap)
            key = len(keys)
            keys.append((workflow_type, state))
            sub = inner.subquery(f"c{index}_{state}")
            count: Any = sa.select(
                sa.literal(key).label("k"), sa.func.count().label("n")
            ).select_from(sub)
            parts.append(count)
    result: dict[str | None, dict[str, int]] = {t: {} for t in workflow_types}
    if not parts:
        return result
    query = parts[0] if len(parts) == 1 else sa.union_all(*parts)
    with reads.connect(ext) as conn:
        for k, n in conn.execute(query):
            workflow_type, state = keys[int(k)]
            result[workflow_type][state] = int(n)
    return result


def latest_executions(
    ext: Geneva, workflow_ids: Sequence[int]
) -> dict[int, list[Mapping[str, Any]]]:
    """Return, per workflow, the latest execution of each of its steps (without tracebacks).

    Meant for a page of workflows (tens to hundreds of ids): two statements on the
    ``(workflow_id, id)`` index.
    """
    if not workflow_ids:
        return {}
    e = ext.tables.executions
    newest = (
        sa.select(sa.func.max(e.c.id))
        .where(e.c.workflow_id.in_(list(workflow_ids)), e.c.superseded_at.is_(None))
        .group_by(e.c.workflow_id, e.c.step_name)
    )
    columns = [c for c in e.c if c.name not in ("error_traceback", "metadata")]
    result: dict[int, list[Mapping[str, Any]]] = {}
    with reads.connect(ext) as conn:
        ids = [int(row[0]) for row in conn.execute(newest)]
        if not ids:
            return result
        rows = conn.execute(sa.select(*columns).where(e.c.id.in_(ids)).order_by(e.c.id))
        for row in rows:
            mapping = dict(row._mapping)
            result.setdefault(int(mapping["workflow_id"]), []).append(mapping)
    return result


def current_steps(ext: Geneva, workflow_ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
    """Return, per workflow, ``(step, state)`` of each step that is scheduled, running
    or failed in its latest execution (what the list shows as "current step")."""
    return current_and_errors(ext, workflow_ids)[0]


def current_and_errors(
    ext: Geneva, workflow_ids: Sequence[int]
) -> tuple[dict[int, list[tuple[str, str]]], dict[int, Mapping[str, Any]]]:
    """:func:`current_steps`, and per workflow its newest failed step's latest execution
    (``step_name``, ``error_class``, ``error_message``): the list's error column. One
    read of the latest executions for both."""
    current: dict[int, list[tuple[str, str]]] = {}
    errors: dict[int, Mapping[str, Any]] = {}
    for workflow_id, rows in latest_executions(ext, workflow_ids).items():
        current[workflow_id] = [
            (x["step_name"], x["state"]) for x in rows if x["state"] in CURRENT_STEP_STATES
        ]
        failed = [x for x in rows if x["state"] == StepState.FAILED]
        if failed:
            errors[workflow_id] = max(failed, key=lambda x: x["id"])
    return current, errors
