"""The deploy census: what the stored workflows need from the classes loaded in this process.

``flask geneva check`` prints it, and :meth:`Workflow.removed_steps_in_flight` reads it.
For every stored type with ongoing workflows (ready, performing or paused) it gives:

* the class that stores it, or None (the class was renamed, moved or deleted);
* the ongoing workflows by (state, fingerprint), each fingerprint marked ``current``
  (the class's graph now), ``old`` (created under another graph) or ``unknown``
  (created before 0.2, which recorded none). Old ones are not a problem in themselves:
  they go on with the current graph;
* per step the class does not define: its executions scheduled, waiting and in
  progress, each step **safe** (``removed_steps`` lists it, or ``skip_undefined_steps``
  is set: they are skipped) or **stranded** (they would fail and pause the workflow);
* paused workflows stranded on a step the class does not define: a failed execution
  (superseded rows are history and ignored) on such a step is what paused the
  workflow: it entered ``paused`` no later than the failure was recorded (a workflow
  resumed since and paused again is not counted, nor one whose pausing failure is on a
  step the class defines).
  ``removed_steps`` does not help these: the failed execution will not run again.
  They need an operator: ``wf.resume_at(step)``.

A type with no class is stranded whatever its steps. Every stranded entry carries its
fix. The stored types are read first with a loose index scan (one seek per type: see
:func:`~flask_geneva.reads.workflow_types`), then three grouped statements, each
bound to those types, so their cost follows the ongoing workflows, not the table:

1. ongoing workflows by (type, state, fingerprint): an index-only range of the
   ``(type, state, fingerprint)`` index;
2. active executions (scheduled, waiting, in progress) of ongoing workflows by (type,
   step, state): the executions' ``(state, scheduled_for, workflow_id, step_name,
   ...)`` index, joined to the ongoing workflows' ids from the ``(type, state, id)``
   index. The step names each class defines are filtered out in Python (the groups are
   few: one per type, step and state), rather than a ``NOT IN`` per class, which no
   index serves;
3. the failed executions of paused workflows by (type, step), read from the same
   two indexes alone. Only where a class does not define such a step (rare: after a
   deploy) does a fourth statement count exactly which of them paused their workflow
   (:func:`_paused_failures`), on the ``(step_name, state)`` index.

Superseded rows are never active (a rerun cancels them first), so the active counts
need no ``superseded_at`` test, which would send the scan to the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import reads
from .reads import workflow_types
from .states import ACTIVE_STEP_STATES
from .states import ONGOING_WORKFLOW_STATES
from .states import StepState
from .states import WorkflowState

if TYPE_CHECKING:
    from .extension import Geneva

#: The workflow states a census counts (every state that may still change).
ONGOING_STATES = ONGOING_WORKFLOW_STATES
_ACTIVE: tuple[str, ...] = tuple(sorted(s.value for s in ACTIVE_STEP_STATES))


@dataclass(frozen=True)
class FingerprintCount:
    """Ongoing workflows of one type in one state created under one graph."""

    state: str
    fingerprint: str | None
    #: ``current`` (the class's graph), ``old`` (another graph) or ``unknown`` (NULL:
    #: created before 0.2), or ``no class``.
    status: str
    count: int


@dataclass(frozen=True)
class UndefinedStep:
    """Active executions of one step the class does not define."""

    step: str
    scheduled: int = 0
    waiting: int = 0
    in_progress: int = 0
    #: Why they are safe: ``removed_steps`` or ``skip_undefined_steps``; None: stranded.
    skipped_by: str | None = None
    fix: str | None = None

    @property
    def total(self) -> int:
        return self.scheduled + self.waiting + self.in_progress

    @property
    def stranded(self) -> bool:
        return self.skipped_by is None


@dataclass(frozen=True)
class PausedOnUndefined:
    """Paused workflows whose latest failure is on a step the class does not define."""

    step: str
    count: int
    #: The lowest of their ids (an example for the fix).
    first_id: int
    fix: str


@dataclass(frozen=True)
class TypeCensus:
    """Everything a census found for one stored type."""

    type: str
    #: The class's name, or None when no class in this process stores the type.
    class_name: str | None
    current_fingerprint: str | None
    ongoing: tuple[FingerprintCount, ...] = ()
    undefined_steps: tuple[UndefinedStep, ...] = ()
    paused: tuple[PausedOnUndefined, ...] = ()
    #: The fix when the type has no class, else None.
    fix: str | None = None

    @property
    def ongoing_count(self) -> int:
        return sum(c.count for c in self.ongoing)

    @property
    def stranded(self) -> bool:
        """Whether any ongoing workflow of this type would be stranded."""
        return (
            self.class_name is None
            or any(u.stranded for u in self.undefined_steps)
            or bool(self.paused)
        )

    def fixes(self) -> list[str]:
        """The fix of every stranded entry, in the order they are listed."""
        found = [self.fix] if self.fix else []
        found += [u.fix for u in self.undefined_steps if u.stranded and u.fix]
        return found + [p.fix for p in self.paused]


@dataclass(frozen=True)
class Census:
    """The census of every class and every stored type with ongoing workflows, by type."""

    types: tuple[TypeCensus, ...] = field(default=())

    @property
    def stranded(self) -> bool:
        """Whether a deploy of the loaded classes leaves an ongoing workflow stranded."""
        return any(t.stranded for t in self.types)

    def fixes(self) -> list[str]:
        return [fix for t in self.types for fix in t.fixes()]

    def get(self, stored_type: str) -> TypeCensus | None:
        return next((t for t in self.types if t.type == stored_type), None)


def census(ext: Geneva, stored_type: str | None = None) -> Census:
    """Count what the stored workflows need from the classes this process defines.

    :param stored_type: only this stored identity (the ``type`` column), or None: every
        class this process defines, and every other type with ongoing workflows (a
        type with no class whose workflows all ended is not listed: nothing waits on it).
    """
    fingerprints, active, paused = _read(ext, stored_type)
    types = set(fingerprints) | set(active) | set(paused)
    if stored_type is None:
        types |= set(ext.registry)  # every class, those with no ongoing workflow too
    elif stored_type in ext.registry:
        types.add(stored_type)
    return Census(
        tuple(
            _type_census(
                t,
                ext.registry.get(t),
                fingerprints.get(t, []),
                active.get(t, {}),
                paused.get(t, []),
            )
            for t in sorted(types)
        )
    )


def statements(ext: Geneva, stored_type: str | None = None) -> list[sa.Select[Any]]:
    """The census's three grouped statements (for ``EXPLAIN``): see the module's notes.

    Without ``stored_type`` it first reads the stored types (one index seek per type).
    """
    w = ext.tables.workflows
    e = ext.tables.executions
    ongoing = w.c.state.in_(ONGOING_STATES)
    narrow = _narrow(ext, stored_type)
    by_fingerprint = (
        sa.select(w.c.type, w.c.state, w.c.fingerprint, sa.func.count())
        .where(ongoing, *narrow)
        .group_by(w.c.type, w.c.state, w.c.fingerprint)
    )
    by_step = (
        sa.select(w.c.type, e.c.step_name, e.c.state, sa.func.count())
        .select_from(e.join(w, w.c.id == e.c.workflow_id))
        .where(e.c.state.in_(_ACTIVE), ongoing, *narrow)
        .group_by(w.c.type, e.c.step_name, e.c.state)
    )
    failed_by_step = (
        sa.select(w.c.type, e.c.step_name)
        .select_from(e.join(w, w.c.id == e.c.workflow_id))
        .where(e.c.state == StepState.FAILED, w.c.state == WorkflowState.PAUSED, *narrow)
        .group_by(w.c.type, e.c.step_name)
    )
    return [by_fingerprint, by_step, failed_by_step]


def _narrow(ext: Geneva, stored_type: str | None) -> list[sa.ColumnElement[bool]]:
    # The types first (a loose index scan, one seek each): with ``type`` and ``state``
    # both bound, the statements read only the ongoing rows' entries of the indexes that
    # lead with them, where ``state IN`` alone would walk a whole index or the heap.
    w = ext.tables.workflows
    if stored_type is not None:
        return [w.c.type == stored_type]
    return [w.c.type.in_(workflow_types(ext))]


def _read(
    ext: Geneva, stored_type: str | None
) -> tuple[dict[str, list[Any]], dict[str, dict[str, dict[str, int]]], dict[str, list[Any]]]:
    by_fingerprint, by_step, failed_by_step = statements(ext, stored_type)
    fingerprints: dict[str, list[Any]] = {}
    active: dict[str, dict[str, dict[str, int]]] = {}
    paused: dict[str, list[Any]] = {}
    with reads.connect(ext) as conn:
        for t, state, fp, count in conn.execute(by_fingerprint):
            fingerprints.setdefault(t, []).append((state, fp, int(count)))
        for t, name, state, count in conn.execute(by_step):
            active.setdefault(t, {}).setdefault(name, {})[state] = int(count)
        for t, name in conn.execute(failed_by_step).all():
            cls = ext.registry.get(t)
            if cls is None or name in cls.__geneva_definition__.graph.steps:
                continue  # no class: stranded whole; a defined step: not stranded
            for count, lowest in conn.execute(_paused_failures(ext, t, name)):
                if count:
                    paused.setdefault(t, []).append((name, int(count), int(lowest)))
    return fingerprints, active, paused


def _paused_failures(ext: Geneva, stored_type: str, step: str) -> sa.Select[int, Any]:
    """(count, lowest id) of the paused workflows of a type a failure on ``step`` paused.

    A failure paused the workflow when the workflow became paused no later than the
    failure was recorded (the same transaction records both at one time); a workflow
    resumed since, and paused again, entered ``paused`` after it. Read from the failed
    executions of the step (the ``(step_name, state)`` index), each joined to its
    workflow by primary key. (A workflow with two branches that failed while it was
    paused counts under both steps.)
    """
    w = ext.tables.workflows
    e = ext.tables.executions
    return (
        sa.select(sa.func.count(), sa.func.min(w.c.id))
        .select_from(e.join(w, w.c.id == e.c.workflow_id))
        .where(
            e.c.step_name == step,
            e.c.state == StepState.FAILED,
            e.c.superseded_at.is_(None),
            w.c.type == stored_type,
            w.c.state == WorkflowState.PAUSED,
            w.c.transitioned_at <= e.c.failed_at,
        )
    )


def stranded_condition(ext: Geneva) -> sa.ColumnElement[bool]:
    """The workflows the census reports stranded, as a condition on the workflows table.

    ``WorkflowFilter(attention="stranded")`` (the admin's filter, ``flask geneva list
    --attention stranded``) is built from the census, so the list holds exactly what
    ``flask geneva check`` counts: the ongoing workflows of a type no class stores,
    those of a class with an active execution on a step it counts stranded, and its
    paused ones a failure on a step it no longer defines paused. Each part reads the
    executions of those steps only, on the ``(step_name, state)`` index.
    """
    w = ext.tables.workflows
    e = ext.tables.executions
    terms: list[sa.ColumnElement[bool]] = []
    for found in census(ext).types:
        if found.class_name is None:
            terms.append(w.c.type == found.type)
            continue
        steps = [u.step for u in found.undefined_steps if u.stranded]
        if steps:
            active = sa.select(e.c.workflow_id).where(
                e.c.step_name.in_(steps), e.c.state.in_(_ACTIVE)
            )
            terms.append(sa.and_(w.c.type == found.type, w.c.id.in_(active)))
        if found.paused:
            failed = sa.select(e.c.workflow_id).where(
                e.c.step_name.in_([p.step for p in found.paused]),
                e.c.state == StepState.FAILED,
                e.c.superseded_at.is_(None),
                w.c.transitioned_at <= e.c.failed_at,
            )
            terms.append(
                sa.and_(
                    w.c.type == found.type,
                    w.c.state == WorkflowState.PAUSED,
                    w.c.id.in_(failed),
                )
            )
    return sa.and_(w.c.state.in_(ONGOING_STATES), sa.or_(sa.false(), *terms))


def _type_census(
    stored_type: str,
    cls: Any,
    fingerprints: list[Any],
    active: dict[str, dict[str, int]],
    paused: list[Any],
) -> TypeCensus:
    rows = sorted(fingerprints, key=lambda r: (ONGOING_STATES.index(r[0]), r[1] or ""))
    if cls is None:
        return TypeCensus(
            type=stored_type,
            class_name=None,
            current_fingerprint=None,
            ongoing=tuple(FingerprintCount(s, fp, "no class", n) for s, fp, n in rows),
            fix=(
                f"no class stores type {stored_type!r}: if the class was renamed or moved, "
                f"pin __geneva_type__ = {stored_type!r} on it (or deploy the class again)"
            ),
        )
    definition = cls.__geneva_definition__
    graph = definition.graph
    name = cls.__name__
    return TypeCensus(
        type=stored_type,
        class_name=name,
        current_fingerprint=graph.fingerprint,
        ongoing=tuple(
            FingerprintCount(state, fp, _status(fp, graph.fingerprint), count)
            for state, fp, count in rows
        ),
        undefined_steps=tuple(
            _undefined(name, definition, step, counts)
            for step, counts in sorted(active.items())
            if step not in graph.steps
        ),
        paused=tuple(
            _paused(stored_type, name, step, count, lowest)
            for step, count, lowest in sorted(paused)
            if step not in graph.steps
        ),
    )


def _status(stored: str | None, current: str) -> str:
    if stored is None:
        return "unknown"
    return "current" if stored == current else "old"


def _undefined(name: str, definition: Any, step: str, counts: dict[str, int]) -> UndefinedStep:
    skipped_by = None
    if step in definition.removed_steps:
        skipped_by = "removed_steps"
    elif definition.skip_undefined_steps:
        skipped_by = "skip_undefined_steps"
    fix = None
    if skipped_by is None:
        fix = (
            f"{name} no longer defines step {step!r}: add it to {name}.removed_steps "
            f"(removed_steps = ({step!r},)) so its executions are skipped and the "
            "workflows go on with the current graph, or define the step again"
        )
    return UndefinedStep(
        step=step,
        scheduled=counts.get(StepState.SCHEDULED, 0),
        waiting=counts.get(StepState.WAITING, 0),
        in_progress=counts.get(StepState.IN_PROGRESS, 0),
        skipped_by=skipped_by,
        fix=fix,
    )


def _paused(stored_type: str, name: str, step: str, count: int, lowest: int) -> PausedOnUndefined:
    return PausedOnUndefined(
        step=step,
        count=count,
        first_id=lowest,
        fix=(
            f"{count} paused {name} workflow(s) failed on step {step!r}, which {name} no "
            "longer defines (removed_steps does not run a failed step again): go on from "
            "a step of the current graph with `flask geneva resume-at ID STEP` "
            f"(wf.resume_at(step)), e.g. `flask geneva resume-at {lowest} STEP`; list them "
            f"with `flask geneva list --class {stored_type} --state paused --step {step}`"
        ),
    )
