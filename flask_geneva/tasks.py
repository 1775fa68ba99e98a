"""Huey wiring: the one step task, sending triggers, and the worker's consumer.

The task receives only an execution id and runs :func:`executor.execute` inside an
app context; every decision is the executor's.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from datetime import UTC
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

from . import clock
from . import executor
from . import housekeeping
from . import schedules
from .scheduling import Trigger

if TYPE_CHECKING:
    from huey import Huey

    from .extension import GenevaState

#: Huey task names (fixed and namespaced).
PERFORM_STEP = "geneva.perform_step"
HOUSEKEEPING = "geneva.housekeeping"
SCHEDULES = "geneva.schedules"

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


logger = logging.getLogger("flask_geneva")

#: The task wrappers flask-geneva registered on each Huey, by task name.
_registered: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _claim_name(huey: Huey, name: str, wrapper: Any = None) -> None:
    """Take over the task ``name`` on ``huey`` from an app initialised earlier.

    A Huey instance given in ``GENEVA_HUEY`` is often module-level and shared by every
    app an app factory creates (one per test, say). Huey refuses a second task of the
    same name, so the earlier app's task is unregistered: the app initialised last owns
    the Huey's tasks, which is what its consumer will run.
    """
    tasks = _registered.setdefault(huey, {})
    previous = tasks.pop(name, None)
    if previous is not None:
        previous.unregister()
    if wrapper is not None:
        tasks[name] = wrapper


def register_step_task(state: GenevaState) -> Any:
    """Register ``geneva.perform_step`` on the app's Huey and return the task wrapper."""
    app = state.app
    _claim_name(state.huey, PERFORM_STEP)

    @state.huey.task(name=PERFORM_STEP, retries=0)  # type: ignore[untyped-decorator]
    def perform_step(execution_id: int) -> None:
        with app.app_context():
            # Due times are the database's: keep this machine's offset to its clock fresh
            # (a statement once a minute, none in between).
            clock.sync(state.ext.engine())
            executor.execute(state.ext, state, execution_id)

    _claim_name(state.huey, PERFORM_STEP, perform_step)
    parent = os.getpid()

    @state.huey.on_startup(name="geneva.fresh_connections")  # type: ignore[untyped-decorator]
    def fresh_connections() -> None:
        # Process workers are forked from the consumer. A pooled database connection the
        # parent opened before the fork (a create_all() at import, say) must not be used
        # by two processes at once: each child starts with an empty pool instead.
        if os.getpid() != parent:
            with app.app_context():
                for engine in state.ext.db.engines.values():
                    engine.dispose(close=False)

    return perform_step


def register_housekeeping_task(state: GenevaState) -> Any:
    """Register ``geneva.housekeeping`` as a Huey periodic task, or return None if disabled.

    It runs every ``GENEVA_HOUSEKEEPING_INTERVAL`` (whole minutes counted from the Unix
    epoch, so 5 minutes means :00, :05, :10 ...) in every consumer with periodic tasks
    enabled, by that consumer's own clock (Huey's scheduler ticks on it; the thresholds
    housekeeping applies are the database's); with several worker machines it runs on
    each, which is safe (see :mod:`~flask_geneva.housekeeping`). The summary is logged,
    not stored as a result.
    """
    interval = state.config.housekeeping_interval
    if interval is None:
        return None
    minutes = int(interval.total_seconds() // 60)

    def due(moment: datetime) -> bool:
        # Huey passes naive UTC datetimes.
        return int((moment - _EPOCH).total_seconds() // 60) % minutes == 0

    return _register_periodic(state, HOUSEKEEPING, due, housekeeping.run)


def register_schedules_task(state: GenevaState) -> Any:
    """Register ``geneva.schedules``, every minute, if some class has a ``schedule``; else None.

    A task of its own rather than part of housekeeping, whose interval may be longer
    (or None). Every consumer with periodic tasks runs it; the ticks table's unique key
    makes that safe (see :mod:`~flask_geneva.schedules`).
    """
    if not schedules.scheduled_classes(state.ext):
        return None
    return _register_periodic(state, SCHEDULES, _every_minute, schedules.run)


def _every_minute(moment: datetime) -> bool:
    return True


def _register_periodic(
    state: GenevaState, name: str, due: Callable[[datetime], bool], job: Callable[[Any], Any]
) -> Any:
    """Register ``job(ext)`` as the Huey periodic task ``name``, run in the app's context.

    Its thresholds and ticks are the database's time, so the clock's offset is kept
    fresh first (a statement once a minute at most).
    """
    app = state.app
    _claim_name(state.huey, name)

    @state.huey.periodic_task(due, name=name, retries=0)  # type: ignore[untyped-decorator]
    def run_periodic() -> None:
        with app.app_context():
            clock.sync(state.ext.engine())
            job(state.ext)

    _claim_name(state.huey, name, run_periodic)
    return run_periodic


def send(state: GenevaState, triggers: Iterable[Trigger]) -> None:
    """Enqueue one Huey message per trigger; a future ``eta`` goes to Huey on this machine's clock.

    Called only after the rows the triggers point at are committed. A queue that cannot
    be reached does not undo that work, so the error is logged rather than raised:
    the execution stays ``scheduled`` and housekeeping re-sends its trigger once it is
    overdue (``GENEVA_STUCK_SCHEDULED_AFTER``).
    """
    if state.huey.immediate:
        _send_immediately(state, triggers)
        return
    for trigger in triggers:
        _enqueue(state, trigger)


def _send_immediately(state: GenevaState, triggers: Iterable[Trigger]) -> None:
    # An immediate-mode Huey (tests) runs the task inside enqueue(), and that step's
    # finalize sends its successors' triggers from inside it: nested, one level per step,
    # until a long chain or a reattempt loop hits the recursion limit. So the outermost
    # call on this thread runs the triggers one after another, from a queue.
    pending: deque[tuple[GenevaState, Trigger]] | None = getattr(_immediate, "pending", None)
    if pending is not None:
        pending.extend((state, trigger) for trigger in triggers)
        return
    pending = _immediate.pending = deque((state, trigger) for trigger in triggers)
    try:
        while pending:
            _enqueue(*pending.popleft())
    finally:
        _immediate.pending = None


_immediate = threading.local()


def _enqueue(state: GenevaState, trigger: Trigger) -> None:
    # The due time is the database's clock; the consumer compares Huey's eta with its own
    # machine's clock, so the eta is the due time on this machine's clock. It is
    # time-zone aware, because Huey reads a naive eta as local time.
    eta = None
    if trigger.eta is not None and trigger.eta > clock.now():
        eta = clock.to_machine(trigger.eta).replace(tzinfo=UTC)
    priority = trigger.priority
    if priority is not None and not state.huey.storage.priority:
        _warn_no_priority(state.huey)
        priority = None
    task = state.perform_step.s(
        trigger.execution_id, id=trigger.task_id, priority=priority, eta=eta
    )
    try:
        state.huey.enqueue(task)
    except Exception:
        logger.exception(
            "[execution=%s] could not enqueue its trigger; it stays scheduled and "
            "housekeeping re-sends it once overdue",
            trigger.execution_id,
        )


def _warn_no_priority(huey: Huey) -> None:
    if huey in _warned_no_priority:
        return
    _warned_no_priority.add(huey)
    logger.warning(
        "%s has no task priorities; step_job_options priorities are ignored (use "
        "huey.PriorityRedisHuey, or GENEVA_HUEY='redis://...', which picks it)",
        type(huey).__name__,
    )


_warned_no_priority: weakref.WeakSet[Any] = weakref.WeakSet()


def make_consumer(
    huey: Huey, *, workers: int = 4, worker_type: str = "thread", **options: Any
) -> Any:
    """Return a Huey consumer with flask-geneva's low-latency defaults."""
    settings = dict(CONSUMER_DEFAULTS, **options)
    consumer = huey.create_consumer(workers=workers, worker_type=worker_type, **settings)
    _consumers[consumer] = os.getpid()
    return consumer


#: The consumers :func:`make_consumer` built, with the process that built them.
_consumers: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def stopping(huey: Huey) -> bool:
    """Whether the consumer running this step is shutting down gracefully.

    Huey's consumer sets its ``stop_flag`` on a graceful stop (SIGINT, or
    ``consumer.stop(graceful=True)``) and waits for the running tasks. A resumable
    step's next checkpoint reads it and ends the execution with a continuation, so
    the shutdown does not wait for the whole step. The consumer is the one whose
    worker thread runs this, or, in a process worker, the consumer it was forked from.
    """
    current = threading.current_thread()
    pid = os.getpid()
    for consumer, built_in in list(_consumers.items()):
        if consumer.huey is not huey:
            continue
        forked = consumer.environment.forks and built_in != pid
        if forked or any(t is current for _, t in consumer.worker_threads):
            return bool(consumer.stop_flag.is_set())
    return False
