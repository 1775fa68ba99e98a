"""Huey wiring: the one step task, sending triggers, and the worker's consumer.

The task receives only an execution id and runs :func:`executor.execute` inside an
app context; every decision is the executor's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

from . import clock
from . import executor
from . import housekeeping
from .scheduling import Trigger

if TYPE_CHECKING:
    from huey import Huey

    from .extension import GenevaState

#: Huey task names (fixed and namespaced).
PERFORM_STEP = "geneva.perform_step"
HOUSEKEEPING = "geneva.housekeeping"

_EPOCH = datetime(1970, 1, 1)

#: Consumer polling defaults. Huey's own back-off grows to 10 s between polls of an idle
#: queue, so a step made ready after a quiet spell could wait that long; these keep a
#: polling storage (SqliteHuey) under a quarter of a second. RedisHuey blocks on the
#: list instead of polling and is not slowed by them.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "initial_delay": 0.01,
    "backoff": 1.15,
    "max_delay": 0.25,
    "scheduler_interval": 1,
    "check_worker_health": True,
    "periodic": True,
}


def register_step_task(state: GenevaState) -> Any:
    """Register ``geneva.perform_step`` on the app's Huey and return the task wrapper."""
    app = state.app

    @state.huey.task(name=PERFORM_STEP, retries=0)  # type: ignore[untyped-decorator]
    def perform_step(execution_id: int) -> None:
        with app.app_context():
            executor.execute(state.ext, state, execution_id)

    return perform_step


def register_housekeeping_task(state: GenevaState) -> Any:
    """Register ``geneva.housekeeping`` as a Huey periodic task, or return None if disabled.

    It runs every ``GENEVA_HOUSEKEEPING_INTERVAL`` (whole minutes counted from the Unix
    epoch, so 5 minutes means :00, :05, :10 ...) in every consumer with periodic tasks
    enabled; with several worker machines it runs on each, which is safe (see
    :mod:`~flask_geneva.housekeeping`). The summary is logged, not stored as a result.
    """
    interval = state.config.housekeeping_interval
    if interval is None:
        return None
    minutes = int(interval.total_seconds() // 60)
    app = state.app

    def due(moment: datetime) -> bool:
        # Huey passes naive UTC datetimes.
        return int((moment - _EPOCH).total_seconds() // 60) % minutes == 0

    @state.huey.periodic_task(due, name=HOUSEKEEPING, retries=0)  # type: ignore[untyped-decorator]
    def run_housekeeping() -> None:
        with app.app_context():
            housekeeping.run(state.ext)

    return run_housekeeping


def send(state: GenevaState, triggers: Iterable[Trigger]) -> None:
    """Enqueue one Huey message per trigger; a future ``eta`` becomes Huey's delay."""
    for trigger in triggers:
        delay = None
        if trigger.eta is not None:
            seconds = (trigger.eta - clock.now()).total_seconds()
            if seconds > 0:
                delay = seconds
        task = state.perform_step.s(
            trigger.execution_id, id=trigger.task_id, priority=trigger.priority, delay=delay
        )
        state.huey.enqueue(task)


def make_consumer(
    huey: Huey, *, workers: int = 4, worker_type: str = "thread", **options: Any
) -> Any:
    """Return a Huey consumer with flask-geneva's low-latency defaults."""
    settings = dict(CONSUMER_DEFAULTS, **options)
    return huey.create_consumer(workers=workers, worker_type=worker_type, **settings)
