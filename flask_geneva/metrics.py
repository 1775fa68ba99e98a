"""Numbers for the app's monitoring: :func:`collect` reads them, :func:`render_prometheus`
writes them in the Prometheus text format (the admin's ``/metrics`` page serves that).

Every number is read so that its cost stays bounded on a table of millions of rows:

* **workflows per class and state**: capped counts over the ``(type, state, id)`` index
  (:func:`~flask_geneva.queries.counts_by_type_and_state`), at most
  :data:`COUNT_CAP` index entries per class and state. Finished and canceled workflows
  pile up until housekeeping deletes them, so an exact count would grow with them; a
  count equal to the cap means "the cap or more" (``geneva_count_cap`` says what it is);
* **the paused share** per class: paused workflows among the ongoing ones (ready,
  performing, paused), from those counts;
* **active executions** (scheduled, waiting, in progress) per class, step and state,
  and the **queue delay** (how late the oldest due scheduled execution is): one grouped
  statement over the executions' ``(state, scheduled_for, workflow_id, step_name, ...)``
  index alone (superseded rows are never active), joined to the ongoing
  workflows, the statement ``flask geneva check`` runs; its cost follows the active
  executions, never the finished history;
* **failures in the last hour** per class and step: executions that ended ``failed``
  (a step that raised with no reattempt left, or a lost worker) at most an hour ago.
  They are found on the ``(state, scheduled_for)`` index among the failed executions
  due no more than :data:`FAILURE_LOOKBACK` before the hour began (an execution is
  due before it fails), and at most :data:`FAILURE_SCAN_CAP` of them are read. A step
  that failed more than a day after it was due is not counted.

::

    m = geneva.metrics()
    for c in m.classes:
        print(c.type, c.workflows["paused"], f"{c.paused_share:.1%}")
    text = render_prometheus(m)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from . import clock
from . import reads
from .queries import ALL_STATES
from .queries import OVERDUE_AFTER
from .queries import counts_by_type_and_state
from .reads import workflow_types
from .states import ACTIVE_STEP_STATES
from .states import ONGOING_WORKFLOW_STATES
from .states import StepState
from .states import WorkflowState

if TYPE_CHECKING:
    from .extension import Geneva

#: The most index entries counted per class and workflow state.
COUNT_CAP = 100_000
#: Failures are looked for among executions due at most this long before the hour began.
FAILURE_LOOKBACK = timedelta(days=1)
#: The most failed executions read for the failure counts (a count may stop there).
FAILURE_SCAN_CAP = 100_000
#: The window of the failure counts.
FAILURE_WINDOW = timedelta(hours=1)
#: The execution states counted per step, in the order they are shown.
ACTIVE_STATES: tuple[str, ...] = tuple(s.value for s in StepState if s in ACTIVE_STEP_STATES)
_ONGOING = ONGOING_WORKFLOW_STATES


@dataclass(frozen=True)
class StepMetrics:
    """One step of one class: its active executions and its recent failures."""

    step: str
    #: ``{state: count}`` for each of :data:`ACTIVE_STATES` (zeros included).
    executions: Mapping[str, int]
    #: Executions of the step that ended ``failed`` in the last hour.
    failures_last_hour: int = 0
    #: Scheduled executions due more than :data:`~flask_geneva.queries.OVERDUE_AFTER` ago
    #: in a ready or performing workflow: no worker took them.
    overdue: int = 0


@dataclass(frozen=True)
class ClassMetrics:
    """Everything :func:`collect` found for one stored workflow type."""

    #: The stored identity (the ``type`` column: the class name or its ``__geneva_type__``).
    type: str
    #: ``{state: count}`` for every workflow state, each at most :attr:`Metrics.count_cap`.
    workflows: Mapping[str, int]
    #: The steps the class defines, and any other step with active executions or
    #: recent failures (one the class no longer defines), sorted by name.
    steps: tuple[StepMetrics, ...] = ()
    #: How late the oldest due scheduled execution is (zero when none is due).
    queue_delay: timedelta = timedelta(0)

    @property
    def ongoing(self) -> int:
        """Workflows that may still change (ready, performing, paused)."""
        return sum(self.workflows.get(s, 0) for s in _ONGOING)

    @property
    def paused_share(self) -> float:
        """Paused workflows among the ongoing ones, from 0 to 1 (0 with none ongoing)."""
        return paused_share(self.workflows) or 0.0


def paused_share(counts: Mapping[str, int]) -> float | None:
    """Paused workflows among the ongoing ones (``counts``: state -> workflows), 0 to 1;
    None when none is ongoing."""
    ongoing = sum(counts.get(s, 0) for s in _ONGOING)
    return counts.get(WorkflowState.PAUSED, 0) / ongoing if ongoing else None


@dataclass(frozen=True)
class Metrics:
    """What :func:`collect` read, per class, at :attr:`collected_at` (naive UTC)."""

    collected_at: datetime
    count_cap: int
    classes: tuple[ClassMetrics, ...] = field(default=())

    def get(self, stored_type: str) -> ClassMetrics | None:
        """The metrics of one stored type, or None when it has none."""
        return next((c for c in self.classes if c.type == stored_type), None)


def collect(ext: Geneva, *, cap: int = COUNT_CAP) -> Metrics:
    """Read the metrics of every class this process defines and every stored type.

    :param cap: count at most this many workflows per class and state.
    """
    now = clock.now()
    types = sorted(set(workflow_types(ext)) | set(ext.registry))
    counts = counts_by_type_and_state(ext, types, cap=cap)
    active, oldest, overdue = _active(ext, types, now)
    failures = _failures(ext, now)
    classes = []
    for t in types:
        names = sorted(_defined_steps(ext, t) | set(active.get(t, {})) | set(failures.get(t, {})))
        steps = tuple(
            StepMetrics(
                step=name,
                executions={s: active.get(t, {}).get(name, {}).get(s, 0) for s in ACTIVE_STATES},
                failures_last_hour=failures.get(t, {}).get(name, 0),
                overdue=overdue.get(t, {}).get(name, 0),
            )
            for name in names
        )
        due = oldest.get(t)
        delay = max(now - due, timedelta(0)) if due is not None else timedelta(0)
        workflows = {s: counts[t].get(s, 0) for s in ALL_STATES}
        classes.append(ClassMetrics(type=t, workflows=workflows, steps=steps, queue_delay=delay))
    return Metrics(collected_at=now, count_cap=cap, classes=tuple(classes))


def _defined_steps(ext: Geneva, stored_type: str) -> set[str]:
    cls = ext.registry.get(stored_type)
    return set() if cls is None else set(cls.__geneva_definition__.graph.steps)


def _active(
    ext: Geneva, types: list[str], now: datetime
) -> tuple[dict[str, dict[str, dict[str, int]]], dict[str, datetime], dict[str, dict[str, int]]]:
    """Active executions by (type, step, state), each type's oldest due scheduled one, and
    the overdue ones by (type, step), in one grouped statement."""
    if not types:
        return {}, {}, {}
    w = ext.tables.workflows
    e = ext.tables.executions
    due = sa.case(
        (
            sa.and_(e.c.state == StepState.SCHEDULED.value, e.c.scheduled_for <= now),
            e.c.scheduled_for,
        )
    )
    late = sa.case(
        (
            sa.and_(
                e.c.state == StepState.SCHEDULED.value,
                e.c.scheduled_for < now - OVERDUE_AFTER,
                w.c.state.in_((WorkflowState.READY.value, WorkflowState.PERFORMING.value)),
            ),
            1,
        ),
        else_=0,
    )
    query = (
        sa.select(
            w.c.type,
            e.c.step_name,
            e.c.state,
            sa.func.count(),
            sa.func.min(due),
            sa.func.sum(late),
        )
        .select_from(e.join(w, w.c.id == e.c.workflow_id))
        .where(
            e.c.state.in_(ACTIVE_STATES),
            w.c.state.in_(_ONGOING),
            w.c.type.in_(types),
        )
        .group_by(w.c.type, e.c.step_name, e.c.state)
    )
    active: dict[str, dict[str, dict[str, int]]] = {}
    oldest: dict[str, datetime] = {}
    overdue: dict[str, dict[str, int]] = {}
    with reads.connect(ext) as conn:
        for t, name, state, count, first_due, lates in conn.execute(query):
            active.setdefault(t, {}).setdefault(name, {})[state] = int(count)
            if lates:
                overdue.setdefault(t, {})[name] = overdue.get(t, {}).get(name, 0) + int(lates)
            if first_due is not None and (t not in oldest or first_due < oldest[t]):
                oldest[t] = first_due
    return active, oldest, overdue


def _failures(ext: Geneva, now: datetime) -> dict[str, dict[str, int]]:
    """``{type: {step: count}}`` of executions that ended ``failed`` in the last hour."""
    w = ext.tables.workflows
    e = ext.tables.executions
    since = now - FAILURE_WINDOW
    recent = (
        sa.select(e.c.workflow_id, e.c.step_name)
        .where(
            e.c.state == StepState.FAILED.value,
            e.c.scheduled_for >= since - FAILURE_LOOKBACK,
            e.c.failed_at >= since,
        )
        .limit(FAILURE_SCAN_CAP)
        .subquery("recent")
    )
    query = (
        sa.select(w.c.type, recent.c.step_name, sa.func.count())
        .select_from(recent.join(w, w.c.id == recent.c.workflow_id))
        .group_by(w.c.type, recent.c.step_name)
    )
    found: dict[str, dict[str, int]] = {}
    with reads.connect(ext) as conn:
        for t, name, count in conn.execute(query):
            found.setdefault(t, {})[name] = int(count)
    return found


# -- the Prometheus text format ---------------------------------------------------------------

#: The content type of :func:`render_prometheus`'s text (exposition format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_prometheus(metrics: Metrics) -> str:
    """Return ``metrics`` in the Prometheus text exposition format (every name ``geneva_``).

    Families: ``geneva_workflows{class, state}``, ``geneva_workflows_paused_ratio{class}``,
    ``geneva_step_executions{class, step, state}``, ``geneva_queue_delay_seconds{class}``,
    ``geneva_step_failures_last_hour{class, step}``,
    ``geneva_step_executions_overdue{class, step}`` and ``geneva_count_cap``; all gauges.
    Label values are escaped (``\\``, ``"`` and line breaks), so any stored type or step
    name is safe.
    """
    out: list[str] = []
    classes = metrics.classes

    def family(name: str, text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {_escape_help(text)}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples)

    family(
        "geneva_workflows",
        "Workflows per class and state (a value equal to geneva_count_cap means at least that).",
        [({"class": c.type, "state": s}, n) for c in classes for s, n in c.workflows.items()],
    )
    family(
        "geneva_workflows_paused_ratio",
        "Paused workflows among the ongoing ones (ready, performing, paused), 0 to 1.",
        [({"class": c.type}, c.paused_share) for c in classes],
    )
    family(
        "geneva_step_executions",
        "Step executions scheduled, waiting or in progress, per class and step.",
        [
            ({"class": c.type, "step": s.step, "state": state}, n)
            for c in classes
            for s in c.steps
            for state, n in s.executions.items()
        ],
    )
    family(
        "geneva_step_executions_overdue",
        "Scheduled executions due over 30 s ago in ready or performing workflows: no "
        "worker took them.",
        [({"class": c.type, "step": s.step}, s.overdue) for c in classes for s in c.steps],
    )
    family(
        "geneva_queue_delay_seconds",
        "How late the oldest due scheduled execution of the class is (0 when none is due).",
        [({"class": c.type}, c.queue_delay.total_seconds()) for c in classes],
    )
    family(
        "geneva_step_failures_last_hour",
        "Step executions that ended failed in the last hour, per class and step.",
        [
            ({"class": c.type, "step": s.step}, s.failures_last_hour)
            for c in classes
            for s in c.steps
        ],
    )
    family(
        "geneva_count_cap",
        "The most workflows counted per class and state.",
        [({}, metrics.count_cap)],
    )
    return "\n".join(out) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)
