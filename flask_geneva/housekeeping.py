"""Housekeeping: delete old finished workflows, recover lost workers, re-send lost triggers.

:func:`run` is the whole job of the ``geneva.housekeeping`` periodic task and of
``flask geneva housekeeping``. It does three things, each in small batches with one
short transaction per batch or per workflow, so it never holds a long lock and may run
beside workers and beside another housekeeping run (several worker machines each run
the periodic task):

1. **Delete** finished and canceled workflows (with their executions) whose last
   transition is older than ``GENEVA_DELETE_FINISHED_AFTER``.
2. **Recover** executions ``in_progress`` whose lease expired: no heartbeat for
   longer than the step's ``stuck_after`` (default ``GENEVA_STUCK_IN_PROGRESS_AFTER``),
   so their worker died (kill -9, OOM, a lost machine) or froze; a healthy long
   step renews its lease while it runs (see :mod:`~flask_geneva.lease`). The
   execution ends ``failed`` with outcome ``recovered`` and an error saying so; then,
   per ``GENEVA_STUCK_RECOVERY``, the step is reattempted or the workflow canceled.
3. **Re-trigger** executions still ``scheduled`` more than
   ``GENEVA_STUCK_SCHEDULED_AFTER`` past their due time: their Huey message was lost
   (a flushed queue, a Redis restart without persistence); and executions
   ``waiting`` for a signal whose timeout passed as long ago, so the trigger applies
   their ``on_timeout``. Executions of paused workflows are left alone: they wait for
   resume on purpose.

Candidates are found with plain reads, then each is re-checked under the workflow row
lock (lock order: workflow, then executions), so a row that changed meanwhile, or that
a concurrent run already handled, is skipped rather than acted on twice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import asdict
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import clock
from . import lease
from . import store
from . import unit
from .records import ErrorInfo
from .states import RUNNABLE_WORKFLOW_STATES
from .states import TERMINAL_WORKFLOW_STATES
from .states import StepState
from .transaction import run_locked
from .transitions import Transition

if TYPE_CHECKING:
    from .config import GenevaConfig
    from .extension import Geneva

#: The error class recorded on an execution whose worker was lost.
LOST_WORKER_ERROR = "flask_geneva.WorkerLost"


@dataclass
class HousekeepingSummary:
    """What one housekeeping run did, counted per action."""

    #: Finished or canceled workflows deleted.
    workflows_deleted: int = 0
    #: Their step executions deleted with them.
    executions_deleted: int = 0
    #: Executions stuck ``in_progress`` recovered by scheduling a fresh attempt.
    stuck_reattempted: int = 0
    #: Executions stuck ``in_progress`` recovered by canceling their workflow.
    stuck_canceled: int = 0
    #: Executions stuck ``in_progress`` whose step kept killing its worker: paused.
    stuck_paused: int = 0
    #: Overdue ``scheduled`` executions whose trigger was sent again.
    retriggered: int = 0
    #: Wall-clock seconds the run took.
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as a plain dict (logging, JSON)."""
        return asdict(self)

    def __str__(self) -> str:
        recovered = self.stuck_reattempted + self.stuck_canceled + self.stuck_paused
        return (
            f"deleted {self.workflows_deleted} workflow(s) and {self.executions_deleted} "
            f"execution(s); recovered {recovered} stuck execution(s) "
            f"({self.stuck_reattempted} reattempted, {self.stuck_canceled} canceled, "
            f"{self.stuck_paused} paused); re-triggered {self.retriggered} overdue "
            f"execution(s); {self.seconds:.2f}s"
        )


def run(ext: Geneva) -> HousekeepingSummary:
    """Run every housekeeping action once for the current app and return the summary.

    Call it inside an app context. Safe to run concurrently with workers and with
    another run. A setting of ``None`` disables its action (for the recovery: of the
    steps without a ``stuck_after`` of their own).

    ::

        summary = housekeeping.run(geneva)
        print(summary.workflows_deleted, summary.retriggered)
    """
    state = ext.get_state()
    config: GenevaConfig = state.config
    started = time.perf_counter()
    summary = HousekeepingSummary()
    if config.delete_finished_after is not None:
        delete_finished(ext, config.delete_finished_after, config.housekeeping_batch_size, summary)
    recover_in_progress(ext, config, summary)
    if config.stuck_scheduled_after is not None:
        retrigger_scheduled(ext, config.stuck_scheduled_after, config, summary)
    summary.seconds = time.perf_counter() - started
    ext.log.info("housekeeping: %s", summary)
    return summary


# -- 1. delete old finished and canceled workflows -------------------------------------------


#: Before any transition: where each state's walk starts.
_EPOCH = datetime(1970, 1, 1)


def delete_finished(
    ext: Geneva, older_than: timedelta, batch_size: int, summary: HousekeepingSummary
) -> None:
    """Delete terminal workflows whose last transition is older than ``older_than``.

    One transaction per batch: lock up to ``batch_size`` eligible workflow rows, delete
    their executions, then the workflows. Ids are selected first and deleted by list,
    because MariaDB refuses ``LIMIT`` inside ``IN (subquery)``.

    Each terminal state is walked in the order of the index on (state,
    transitioned_at), each batch starting after the previous batch's last
    (transitioned_at, id): a batch reads about ``batch_size`` index entries however
    many rows are eligible, instead of collecting and sorting all of them (or walking
    the not yet vacuumed entries of the rows already deleted) every time.
    """
    cutoff = clock.now() - older_than
    w, e = ext.tables.workflows, ext.tables.executions
    position = sa.tuple_(w.c.transitioned_at, w.c.id)
    eligible = (
        sa.select(w.c.id, w.c.transitioned_at)
        .where(
            w.c.state == sa.bindparam("state"),
            w.c.transitioned_at < cutoff,
            position > sa.tuple_(sa.bindparam("after_at"), sa.bindparam("after_id")),
        )
        .order_by(w.c.transitioned_at, w.c.id)
        .limit(batch_size)
        .with_for_update()
    )

    def batch(conn: Connection, cursor: dict[str, Any]) -> tuple[list[Any], int, int]:
        rows = list(conn.execute(eligible, cursor))
        if not rows:
            return rows, 0, 0
        ids = [int(row.id) for row in rows]
        executions = conn.execute(sa.delete(e).where(e.c.workflow_id.in_(ids))).rowcount
        workflows = conn.execute(
            sa.delete(w).where(w.c.id.in_(ids), w.c.state.in_(TERMINAL_WORKFLOW_STATES))
        ).rowcount
        return rows, workflows, executions

    for state in sorted(TERMINAL_WORKFLOW_STATES):
        # The cursor moves on only once a batch has committed (run_locked may retry it).
        cursor: dict[str, Any] = {"state": state, "after_at": _EPOCH, "after_id": 0}
        while True:
            rows, workflows, executions = run_locked(
                ext.engine(), functools.partial(batch, cursor=dict(cursor))
            )
            summary.workflows_deleted += workflows
            summary.executions_deleted += executions
            # A concurrent run may have taken some of the selected rows; stop only when
            # the selection comes back empty.
            if not rows:
                break
            cursor.update(after_at=rows[-1].transitioned_at, after_id=int(rows[-1].id))


# -- 2. executions whose worker was lost ------------------------------------------------------


def recover_in_progress(ext: Geneva, config: GenevaConfig, summary: HousekeepingSummary) -> None:
    """End executions whose lease expired, then reattempt or cancel.

    A lease expires ``stuck_after`` (the step's own, else
    ``GENEVA_STUCK_IN_PROGRESS_AFTER``) past the execution's last heartbeat, or past
    its start when no beat came (a body shorter than one beat interval, or a row
    claimed by 0.1). The candidates are the executions past the shortest lease in use;
    each is then judged, under its workflow's lock, by its own step's lease, so a beat
    that landed after the candidate query wins.

    A step whose worker was lost more than ``GENEVA_MAX_RECOVERIES`` times in a row
    (it kills its worker: memory, a segfault) pauses its workflow instead.
    """
    shortest = lease.shortest(ext, config)
    if shortest is None:
        return
    w, e = ext.tables.workflows, ext.tables.executions

    def lease_of(workflow_type: str, step_name: str) -> timedelta | None:
        cls = ext.registry.get(workflow_type)
        steps = cls.__geneva_definition__.graph.steps if cls is not None else {}
        return lease.stuck_after(steps.get(step_name), config)

    def decide(transition: Transition, execution_id: int, streak: int) -> tuple[str, Any] | None:
        record = transition.get(execution_id)
        if record is None or record.state != StepState.IN_PROGRESS:
            return None  # it finished, or another run recovered it
        step = transition.graph.steps.get(record.step_name) if transition.graph else None
        threshold = lease.stuck_after(step, config)
        last_sign = record.heartbeat_at or record.started_at
        if threshold is None or last_sign is None or last_sign >= transition.now - threshold:
            return None  # its lease holds (a beat landed after the query, say)
        error = ErrorInfo(
            LOST_WORKER_ERROR,
            f"worker lost: execution in progress for more than {threshold} without a "
            f"heartbeat; housekeeping recovered it ({config.stuck_recovery})",
            "",
        )
        action = transition.recover(
            record,
            error,
            then=config.stuck_recovery,
            recoveries=streak + 1,
            max_recoveries=config.max_recoveries,
        )
        return action, threshold

    looked = (
        sa.select(w.c.type, e.c.step_name, e.c.started_at, e.c.heartbeat_at)
        .join(w, w.c.id == e.c.workflow_id)
        .where(e.c.id == sa.bindparam("p_eid"))
    )

    def streak(conn: Connection, workflow_id: int, execution_id: int) -> Any:
        # A candidate past the shortest lease whose own lease still holds (a long step
        # of the default lease, beside a step with a short one) is not worth a lock.
        row = conn.execute(looked, {"p_eid": execution_id}).first()
        if row is None:
            return SKIP
        threshold = lease_of(row.type, row.step_name)
        last_sign = row.heartbeat_at or row.started_at
        if threshold is None or last_sign is None or last_sign >= clock.now() - threshold:
            return SKIP
        if config.max_recoveries is None:
            return 0
        return store.recovery_streak(
            conn, ext.tables, workflow_id, row.step_name, config.max_recoveries
        )

    for execution_id, workflow_id, (action, threshold) in _each_candidate(
        ext,
        lease.expired(ext, clock.now() - shortest),
        config.housekeeping_batch_size,
        decide,
        streak,
    ):
        if action == "cancel":
            summary.stuck_canceled += 1
        elif action == "pause":
            summary.stuck_paused += 1
        else:
            summary.stuck_reattempted += 1
        ext.log.warning(
            "[workflow id=%s] [execution=%s] worker lost (no heartbeat for more than %s); %s",
            workflow_id,
            execution_id,
            threshold,
            {
                "cancel": "workflow canceled",
                "pause": "workflow paused: the step kept killing its worker",
            }.get(action, "step reattempted"),
        )


# -- 3. executions whose trigger was lost -----------------------------------------------------


def retrigger_scheduled(
    ext: Geneva,
    overdue_by: timedelta,
    config: GenevaConfig,
    summary: HousekeepingSummary,
) -> None:
    """Send the trigger again for scheduled executions overdue by more than ``overdue_by``.

    Only executions of runnable (ready or performing) workflows: a paused workflow's
    executions wait for resume, which re-triggers them. A re-trigger stamps the
    execution's ``updated_at``, and only executions not touched for ``overdue_by`` are
    candidates, so a long queue backlog gets one extra message per threshold period,
    not one per run. A duplicate message is harmless: only one claim can succeed.
    """
    cutoff = clock.now() - overdue_by
    w, e = ext.tables.workflows, ext.tables.executions

    def decide(transition: Transition, execution_id: int, _seen: None) -> str | None:
        record = transition.get(execution_id)
        if record is None or record.state not in _RETRIGGERED:
            return None
        updated = record.updated_at
        if transition.state not in RUNNABLE_WORKFLOW_STATES or record.scheduled_for >= cutoff:
            return None
        if updated is not None and updated >= cutoff:
            return None  # re-triggered recently (by a concurrent run, say)
        transition.retrigger(record)
        record.changes["updated_at"] = transition.now
        return "retrigger"

    query = (
        sa.select(e.c.id, e.c.workflow_id)
        .join(w, w.c.id == e.c.workflow_id)
        .where(
            # A waiting execution's due time is its timeout's (never, without one).
            e.c.state.in_(_RETRIGGERED),
            e.c.scheduled_for < cutoff,
            e.c.updated_at < cutoff,
            w.c.state.in_(RUNNABLE_WORKFLOW_STATES),
        )
    )

    def nothing(_conn: Connection, _workflow_id: int, _execution_id: int) -> None:
        return None

    for execution_id, workflow_id, _ in _each_candidate(
        ext, query, config.housekeeping_batch_size, decide, nothing
    ):
        summary.retriggered += 1
        ext.log.warning(
            "[workflow id=%s] [execution=%s] still scheduled %s after it was due; "
            "trigger sent again",
            workflow_id,
            execution_id,
            overdue_by,
        )


#: Executions whose trigger housekeeping sends again when overdue: scheduled ones, and
#: waiting ones whose timeout passed (the trigger applies ``on_timeout``).
_RETRIGGERED = (StepState.SCHEDULED, StepState.WAITING)


# -- shared loop ------------------------------------------------------------------------------


#: Decides, under the lock, what to do with one candidate execution: what was done
#: (after recording it on the transition), or None to leave it alone. Receives the
#: transition, the execution id, and what ``Look`` read about it beforehand.
Decide = Callable[[Transition, int, Any], Any]
#: Reads what ``Decide`` needs beyond the snapshot (workflow id, execution id), or
#: returns :data:`SKIP` to leave the candidate alone without locking it.
Look = Callable[[Connection, int, int], Any]
#: What a ``Look`` returns for a candidate not worth acting on.
SKIP: Any = object()


def _each_candidate(
    ext: Geneva, query: sa.Select[Any], batch_size: int, decide: Decide, look: Look
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(execution_id, workflow_id, action)`` for each candidate acted on.

    Candidates are read in id order, a batch at a time (keyset on the execution id, so
    work done meanwhile never makes the loop skip or repeat one); each is decided and
    persisted through the write path in its own short transaction, under its
    workflow's row lock, and its triggers are sent after that commit.
    """
    e = ext.tables.executions
    after = 0
    while True:
        page = query.where(e.c.id > after).order_by(e.c.id).limit(batch_size)
        with ext.engine().connect() as conn:
            rows = [(int(r[0]), int(r[1])) for r in conn.execute(page)]
            looks = [look(conn, wid, eid) for eid, wid in rows]
        for (execution_id, workflow_id), seen in zip(rows, looks, strict=True):
            if seen is SKIP:
                continue
            action = _act(ext, workflow_id, execution_id, decide, seen)
            if action is not None:
                yield execution_id, workflow_id, action
        if len(rows) < batch_size:
            return
        after = rows[-1][0]


def _act(ext: Geneva, workflow_id: int, execution_id: int, decide: Decide, seen: Any) -> Any:
    try:
        return unit.change(
            ext, workflow_id, lambda snap: decide(snap.transition, execution_id, seen)
        )
    except Exception:
        # One bad workflow must not stop housekeeping for all the others.
        ext.log.exception(
            "[workflow id=%s] [execution=%s] housekeeping could not act on it; skipped",
            workflow_id,
            execution_id,
        )
        return None
