"""The fleet over a window of time: per class and step, runs, failures, queue delay and
run time (p50 and p95), for the admin's Fleet page.

Read from the executions that *started* in the window, on the executions'
``(state, started_at)`` index, one range per ended state. The newest
:data:`SAMPLE` of them are read at most (a sample of the busiest windows, said on the
page), each joined to its workflow by primary key for the class. Percentiles are
computed here from that sample: no database has the same percentile function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from . import clock
from .states import Outcome
from .states import StepState

if TYPE_CHECKING:
    from .extension import Geneva

#: The windows the page offers.
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
#: At most this many executions are read for one window (the newest that started).
SAMPLE = 20_000
#: The states an execution that ran ends in (a run that counts).
ENDED = (StepState.COMPLETED.value, StepState.FAILED.value)


@dataclass
class StepStats:
    """One (class, step) over the window."""

    type: str
    step_name: str
    runs: int = 0
    failures: int = 0
    queue: list[float] = field(default_factory=list)
    run: list[float] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.runs if self.runs else 0.0

    @property
    def queue_p50(self) -> float | None:
        return percentile(self.queue, 50)

    @property
    def queue_p95(self) -> float | None:
        return percentile(self.queue, 95)

    @property
    def run_p50(self) -> float | None:
        return percentile(self.run, 50)

    @property
    def run_p95(self) -> float | None:
        return percentile(self.run, 95)


@dataclass(frozen=True)
class Fleet:
    """What the Fleet page shows for one window."""

    window: str
    steps: tuple[StepStats, ...]
    #: Whether :data:`SAMPLE` cut the window: the figures are of its newest runs.
    sampled: bool


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def fleet(ext: Geneva, window: str) -> Fleet:
    """Runs, failures and timings per (class, step) of executions started in ``window``.

    :raises ValueError: ``window`` is not one of :data:`WINDOWS`.
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {', '.join(WINDOWS)}")
    since = clock.now() - WINDOWS[window]
    e = ext.tables.executions
    w = ext.tables.workflows
    started = (
        sa.select(e.c.id, e.c.started_at)
        .where(e.c.state.in_(ENDED), e.c.started_at >= since)
        .order_by(e.c.started_at.desc())
        .limit(SAMPLE + 1)
        .subquery()
    )
    query = sa.select(
        w.c.type,
        e.c.step_name,
        e.c.state,
        e.c.outcome,
        e.c.error_class,
        e.c.scheduled_for,
        e.c.started_at,
        e.c.finished_at,
    ).select_from(started.join(e, e.c.id == started.c.id).join(w, w.c.id == e.c.workflow_id))
    found: dict[tuple[str, str], StepStats] = {}
    count = 0
    with ext.engine().connect() as conn:
        for row in conn.execute(query):
            count += 1
            if count > SAMPLE:
                break
            stats = found.setdefault((row.type, row.step_name), StepStats(row.type, row.step_name))
            stats.runs += 1
            # A failure is a run that raised: failed, or reattempted with an error.
            if row.state == StepState.FAILED or (
                row.outcome == Outcome.REATTEMPTED and row.error_class is not None
            ):
                stats.failures += 1
            if row.started_at is not None and row.scheduled_for is not None:
                stats.queue.append(max((row.started_at - row.scheduled_for).total_seconds(), 0))
            if row.started_at is not None and row.finished_at is not None:
                stats.run.append(max((row.finished_at - row.started_at).total_seconds(), 0))
    steps = sorted(found.values(), key=lambda s: (s.type, s.step_name))
    return Fleet(window=window, steps=tuple(steps), sampled=count > SAMPLE)
