"""The two tables (workflows, step executions), built on the application's ``db.Model``.

Uniqueness rules live in the database, per dialect:

* one *ongoing* workflow per (type, hero_type, hero_id) unless ``allow_multiple``;
* one *active* (scheduled, in progress or waiting) execution per (workflow, step,
  item): a map step has one per item, every other step one.

PostgreSQL and SQLite get partial unique indexes. MySQL/MariaDB have no partial
indexes, so each rule becomes a stored generated column that is 1 while the rule
applies and NULL otherwise, plus a unique index over it (NULLs never collide). The
generated columns are added by DDL only on those dialects and are not mapped, so the
ORM never reads or writes them.

The functions below describe the current schema (``create_all`` builds it). A column or
index added after 0.1 names, in its ``info``, the migration revision that adds it
(:data:`REVISION_KEY`): the revision that creates the tables leaves it out, so it stays
the 0.1 schema, and the later revision adds it (see :mod:`~flask_geneva.migration`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: Table names (fixed: migrations and the admin rely on them).
WORKFLOWS_TABLE = "geneva_workflows"
EXECUTIONS_TABLE = "geneva_step_executions"
SCHEDULE_TICKS_TABLE = "geneva_schedule_ticks"
#: The discriminator stored for rows whose class is the abstract base.
BASE_IDENTITY = "flask_geneva.Workflow"

_NAME = 191  # 191 utf8mb4 characters keep three-column unique keys under InnoDB's 3072 bytes

_MYSQL = ("mysql", "mariadb")
_PARTIAL = ("postgresql", "sqlite")

ONGOING_WHERE = "state NOT IN ('finished', 'canceled') AND NOT allow_multiple"
ACTIVE_WHERE = "state IN ('scheduled', 'in_progress', 'waiting')"
#: The rule as 0.1 wrote it (before ``waiting``): the revision that creates the tables
#: keeps it, and the signals revision replaces it with :data:`ACTIVE_WHERE`.
ACTIVE_WHERE_0_1 = "state IN ('scheduled', 'in_progress')"
#: The item of the active rule: a map step's item index, -1 for every other row (a
#: NULL would never collide, and the rule would not hold for them).
ACTIVE_ITEM = "coalesce(item_index, -1)"

#: The ``info`` key naming the migration revision that adds a column or index.
REVISION_KEY = "geneva_revision"
#: What an index a later revision drops carries in its ``info``: that revision's key.
REMOVED_KEY = "geneva_removed_in"
#: The 0.2 revision that adds step leases (``heartbeat_at``).
LEASES = "0.2 step leases"
#: The 0.2 revision that adds the schedule ticks table.
SCHEDULES = "0.2 schedule ticks"
#: The 0.2 revision that adds signals (the ``geneva_signals`` table, and ``waiting``
#: in the rule "one active execution per (workflow, step)").
SIGNALS = "0.2 signals"
SIGNALS_TABLE = "geneva_signals"
#: The 0.2 revision that adds data along the edges: outputs, map items and cursors
#: (the columns below, and the item in the rule "one active execution per (workflow,
#: step, item)").
DATA = "0.2 data along the edges"
#: The item a row of a step that is not a map step counts as, in the active rule.
NO_ITEM = -1
#: The 0.2 revision that adds deploy safety and reruns: each workflow's graph
#: fingerprint and job options, superseded executions, and the operator actions table.
DEPLOYS = "0.2 deploy safety"
ACTIONS_TABLE = "geneva_operator_actions"
#: The 0.2 revision of the operator console: the trace a workflow was created in, and
#: the indexes behind the console's filters and pages.
CONSOLE = "0.2 operator console"
#: A W3C ``traceparent`` header: ``00-<32 hex>-<16 hex>-<2 hex>``.
TRACEPARENT_LENGTH = 55


def _id_type() -> sa.types.TypeEngine[int]:
    # SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp() -> sa.types.TypeEngine[Any]:
    # MySQL/MariaDB DATETIME drops fractions of a second unless asked for six digits.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *_MYSQL)


def _workflow_id(workflows_table: str) -> sa.Column[Any]:
    """The ``workflow_id`` of a workflow's rows: deleted with their workflow."""
    return sa.Column(
        "workflow_id",
        _id_type(),
        sa.ForeignKey(f"{workflows_table}.id", ondelete="CASCADE"),
        nullable=False,
    )


def workflow_columns() -> list[sa.Column[Any]]:
    """Return fresh Column objects of the workflows table."""
    return [
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(_NAME), nullable=False),
        sa.Column("hero_type", sa.String(_NAME), nullable=True),
        sa.Column("hero_id", sa.String(_NAME), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="ready"),
        sa.Column("allow_multiple", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("transitioned_at", _timestamp(), nullable=True),
        # 0.2, deploy safety: the class's graph fingerprint when the workflow was created
        # (NULL for rows made before it was recorded)...
        sa.Column("fingerprint", sa.String(64), nullable=True, info={REVISION_KEY: DEPLOYS}),
        # ...and ``create(step_job_options=)``: this workflow's own job options.
        sa.Column("job_options", sa.JSON(), nullable=True, info={REVISION_KEY: DEPLOYS}),
        # 0.2, console: the trace of the request that created it (W3C traceparent), for
        # the step spans to link to; NULL when no trace was current.
        sa.Column(
            "traceparent",
            sa.String(TRACEPARENT_LENGTH),
            nullable=True,
            info={REVISION_KEY: CONSOLE},
        ),
    ]


def workflow_indexes(table: str = WORKFLOWS_TABLE) -> list[sa.Index]:
    """Return the indexes of the workflows table (unbound; attach via the table)."""
    return [
        sa.Index(f"ix_{table}_type_state_id", "type", "state", "id"),
        sa.Index(f"ix_{table}_state_id", "state", "id"),
        # Housekeeping walks each terminal state in (transitioned_at, id) order; with id
        # in the index, rows that share a timestamp need no sort.
        sa.Index(f"ix_{table}_state_transitioned_at_id", "state", "transitioned_at", "id"),
        sa.Index(f"ix_{table}_hero", "hero_type", "hero_id"),
        # ``flask geneva check``: a class's ongoing workflows by fingerprint, from the index.
        sa.Index(
            f"ix_{table}_type_state_fingerprint",
            "type",
            "state",
            "fingerprint",
            info={REVISION_KEY: DEPLOYS},
        ),
        sa.Index(
            f"uq_{table}_ongoing",
            "type",
            "hero_type",
            "hero_id",
            unique=True,
            postgresql_where=sa.text(ONGOING_WHERE),
            sqlite_where=sa.text(ONGOING_WHERE),
        ).ddl_if(dialect=_PARTIAL),  # type: ignore[arg-type]
    ]


def execution_columns(workflows_table: str = WORKFLOWS_TABLE) -> list[sa.Column[Any]]:
    """Return fresh Column objects of the step executions table."""
    return [
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        _workflow_id(workflows_table),
        sa.Column("step_name", sa.String(_NAME), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="scheduled"),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("scheduled_for", _timestamp(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("failed_at", _timestamp(), nullable=True),
        sa.Column("canceled_at", _timestamp(), nullable=True),
        sa.Column("skipped_at", _timestamp(), nullable=True),
        sa.Column("error_class", sa.String(255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        sa.Column("huey_task_id", sa.String(64), nullable=True),
        # attempt: 1 for the first execution of this step in this workflow, then 2, 3...
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"),
        # automatic reattempts of this step in a row before this execution (the limit)
        sa.Column("consecutive_reattempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        # Columns added after 0.1 come last, where their revision adds them.
        # 0.2, the lease: refreshed while the body runs; it expires stuck_after past
        # coalesce(heartbeat_at, started_at). Not indexed: a lease cannot expire before
        # started_at + stuck_after, so the (state, started_at) index bounds the search,
        # and an index on it would turn every beat into an index write.
        sa.Column("heartbeat_at", _timestamp(), nullable=True, info={REVISION_KEY: LEASES}),
        # 0.2, data along the edges: what the body returned (JSON; NULL for None)...
        sa.Column("output", sa.JSON(none_as_null=True), nullable=True, info={REVISION_KEY: DATA}),
        # ...for a map step's item, its position in the producer's list (NULL otherwise)...
        sa.Column("item_index", sa.Integer(), nullable=True, info={REVISION_KEY: DATA}),
        # ...for a producer's completed execution, how many items its list holds...
        sa.Column("item_count", sa.Integer(), nullable=True, info={REVISION_KEY: DATA}),
        # ...for a resumable step, the last checkpointed cursor and the checkpoints
        # counted by this execution, and the execution it continues.
        sa.Column("cursor", sa.JSON(none_as_null=True), nullable=True, info={REVISION_KEY: DATA}),
        sa.Column(
            "iterations",
            sa.Integer(),
            nullable=False,
            server_default="0",
            info={REVISION_KEY: DATA},
        ),
        # Not a foreign key: an id of the same table, kept as history.
        sa.Column("continues_id", _id_type(), nullable=True, info={REVISION_KEY: DATA}),
        # 0.2, reruns: set when a rerun replaced this execution's step (or item); the
        # row stays as history, and the rules read only rows where it is NULL.
        sa.Column("superseded_at", _timestamp(), nullable=True, info={REVISION_KEY: DEPLOYS}),
    ]


def schedule_tick_columns() -> list[sa.Column[Any]]:
    """Return fresh Column objects of the schedule ticks table (one row per class, hero, tick).

    "No hero" is stored as ``''`` rather than NULL, so the unique key holds on every
    database (NULLs never collide in a unique index).
    """
    return [
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(_NAME), nullable=False),
        sa.Column("hero_type", sa.String(_NAME), nullable=False),
        sa.Column("hero_id", sa.String(_NAME), nullable=False),
        sa.Column("tick", _timestamp(), nullable=False),
        # started | skipped (an ongoing workflow had the hero) | ticked (the class's mark)
        sa.Column("outcome", sa.String(16), nullable=False),
        # Not a foreign key: retention deletes finished workflows, the tick stays.
        sa.Column("workflow_id", _id_type(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
    ]


def schedule_tick_indexes(table: str = SCHEDULE_TICKS_TABLE) -> list[sa.Index]:
    """Return the indexes of the schedule ticks table: the key that starts a tick once."""
    return [
        sa.Index(f"uq_{table}_tick", "type", "hero_type", "hero_id", "tick", unique=True),
        # Deleting a class's ticks too old to start again.
        sa.Index(f"ix_{table}_type_tick", "type", "tick"),
    ]


def schedule_ticks_table(metadata: sa.MetaData) -> sa.Table:
    """Build the schedule ticks table on ``metadata`` (added by revision :data:`SCHEDULES`)."""
    return sa.Table(
        SCHEDULE_TICKS_TABLE,
        metadata,
        *schedule_tick_columns(),
        *schedule_tick_indexes(),
        info={REVISION_KEY: SCHEDULES},
    )


def execution_indexes(
    table: str = EXECUTIONS_TABLE,
    *,
    active_where: str = ACTIVE_WHERE,
    items: bool = True,
    history: bool = False,
) -> list[sa.Index]:
    """Return the indexes of the step executions table.

    :param active_where: the states that hold a step's slot (0.1's for its revision).
    :param items: the active rule is per (workflow, step, item), as from :data:`DATA`
        on; False gives the rule per (workflow, step) of the revisions before it.
    :param history: add the indexes a later revision dropped (:data:`REMOVED_KEY`).
    """
    active_key: list[Any] = ["workflow_id", "step_name"]
    if items:
        active_key.append(sa.text(ACTIVE_ITEM))
    dropped = [
        sa.Index(
            f"ix_{table}_state_scheduled_for",
            "state",
            "scheduled_for",
            info={REMOVED_KEY: CONSOLE},
        )
    ]
    return [
        *(dropped if history else []),
        sa.Index(f"ix_{table}_workflow_id_id", "workflow_id", "id"),
        # By state, then when due: the due rows for the triggers and housekeeping; with
        # the workflow, step and reattempts in it, the console's counts and "needs a
        # look" filters read the active and failed rows from the index alone.
        sa.Index(
            f"ix_{table}_state_due_workflow",
            "state",
            "scheduled_for",
            "workflow_id",
            "step_name",
            "consecutive_reattempts",
            info={REVISION_KEY: CONSOLE},
        ),
        sa.Index(f"ix_{table}_state_started_at", "state", "started_at"),
        sa.Index(f"ix_{table}_step_name_state", "step_name", "state"),
        sa.Index(
            f"uq_{table}_active",
            *active_key,
            unique=True,
            postgresql_where=sa.text(active_where),
            sqlite_where=sa.text(active_where),
        ).ddl_if(dialect=_PARTIAL),  # type: ignore[arg-type]
    ]


def signal_columns(workflows_table: str = WORKFLOWS_TABLE) -> list[sa.Column[Any]]:
    """Return fresh Column objects of the signals table (added by :data:`SIGNALS`)."""
    return [
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        _workflow_id(workflows_table),
        sa.Column("name", sa.String(_NAME), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        # NULL keys never collide in the unique index: no deduplication without a key.
        sa.Column("idempotency_key", sa.String(_NAME), nullable=True),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.Column("consumed_step", sa.String(_NAME), nullable=True),
        # Not a foreign key: housekeeping deletes executions only with their workflow.
        sa.Column("consumed_by_execution_id", _id_type(), nullable=True),
        sa.Column("consumed_at", _timestamp(), nullable=True),
    ]


def signal_indexes(table: str = SIGNALS_TABLE) -> list[sa.Index]:
    """Return the indexes of the signals table."""
    # Deduplication, and (by its prefixes) a workflow's signals, and its signals of
    # one name: the reads of delivery and of a waiting step.
    return [sa.Index(f"uq_{table}_key", "workflow_id", "name", "idempotency_key", unique=True)]


def action_columns(workflows_table: str = WORKFLOWS_TABLE) -> list[sa.Column[Any]]:
    """Return fresh Column objects of the operator actions table (the audit)."""
    return [
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        _workflow_id(workflows_table),
        # pause | resume | cancel | skip | reattempt | signal | resume_at | rerun_from
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("step_name", sa.String(_NAME), nullable=True),
        sa.Column("actor", sa.String(_NAME), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        # What the action changed, for the timeline (a rerun's steps, for instance).
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
    ]


def action_indexes(table: str = ACTIONS_TABLE) -> list[sa.Index]:
    """Return the indexes of the operator actions table."""
    return [
        # A workflow's actions, in order (its page's timeline).
        sa.Index(f"ix_{table}_workflow_id_id", "workflow_id", "id"),
        # The workflows one actor acted on (the admin's filter).
        sa.Index(f"ix_{table}_actor_workflow_id", "actor", "workflow_id"),
    ]


def actions_table(metadata: sa.MetaData) -> sa.Table:
    """Build the operator actions table on ``metadata`` (added by revision :data:`DEPLOYS`)."""
    return sa.Table(
        ACTIONS_TABLE,
        metadata,
        *action_columns(),
        *action_indexes(),
        info={REVISION_KEY: DEPLOYS},
    )


def added_in(item: sa.Column[Any] | sa.Index | sa.Table) -> str | None:
    """The migration revision that adds a column, index or table, or None for the 0.1 schema."""
    return item.info.get(REVISION_KEY)


def removed_in(item: sa.Column[Any] | sa.Index) -> str | None:
    """The migration revision that drops an index (see :data:`REMOVED_KEY`), or None."""
    return item.info.get(REMOVED_KEY)


def is_mysql(dialect_name: str) -> bool:
    """Return whether a dialect name is MySQL or MariaDB."""
    return dialect_name in _MYSQL
