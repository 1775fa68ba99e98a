"""The fleet over a window of time: per class and step, runs, failures, queue delay and
run time (p50 and p95), for the admin's Fleet page.

Read from the executions that *started* in the window, on the executions'
``(state, started_at)`` index, one range per ended state read newest first. The newest
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
from . import reads
from .states import Outcome
from .states import StepState

if TYPE_CHECKING:
    from .extension import Geneva

#: The windows the page offers.
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
#: At most this many executions are read for one window (the newest that started).
SAMPLE = 5_000
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
    # The newest of each ended state, each from its own range of the index read
    # backwards (an IN over both states would sort the whole window), then the newest of
    # those.
    newest = []
    for state in ENDED:
        own = (
            sa.select(e.c.id, e.c.started_at)
            .where(e.c.state == state, e.c.started_at >= since)
            .order_by(e.c.started_at.desc())
            .limit(SAMPLE + 1)
            .subquery()
        )
        newest.append(sa.select(own.c.id, own.c.started_at))
    both = sa.union_all(*newest).subquery()
    started = (
        sa.select(both.c.id, both.c.started_at)
        .order_by(both.c.started_at.desc())
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
    )
    query = query.select_from(
        started.join(e, e.c.id == started.c.id).join(w, w.c.id == e.c.workflow_id)
    ).order_by(started.c.started_at.desc())  # the one past the sample is the oldest
    found: dict[tuple[str, str], StepStats] = {}
    count = 0
    failed, reattempted = StepState.FAILED.value, Outcome.REATTEMPTED.value
    with reads.connect(ext) as conn:
        for kind, name, state, outcome, error, due, began, ended in conn.execute(query):
            count += 1
            if count > SAMPLE:
                break
            stats = found.get((kind, name))
            if stats is None:
                stats = found[(kind, name)] = StepStats(kind, name)
            stats.runs += 1
            # A failure is a run that raised: failed, or reattempted with an error.
            if state == failed or (outcome == reattempted and error is not None):
                stats.failures += 1
            if began is not None:
                if due is not None:
                    stats.queue.append(max((began - due).total_seconds(), 0))
                if ended is not None:
                    stats.run.append(max((ended - began).total_seconds(), 0))
    steps = sorted(found.values(), key=lambda s: (s.type, s.step_name))
    return Fleet(window=window, steps=tuple(steps), sampled=count > SAMPLE)
