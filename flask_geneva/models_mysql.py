"""The uniqueness rules on MySQL and MariaDB, which have no partial indexes.

A stored generated column is 1 (or the item) while the rule applies and NULL
otherwise, and joins a unique index: NULLs never collide. PostgreSQL and SQLite use
partial unique indexes instead (:mod:`~flask_geneva.models`).
"""

from __future__ import annotations

import sqlalchemy as sa

from .models import ACTIVE_ITEM
from .models import ACTIVE_WHERE
from .models import EXECUTIONS_TABLE
from .models import ONGOING_WHERE
from .models import WORKFLOWS_TABLE

MYSQL_DIALECTS = ("mysql", "mariadb")


def mysql_unique_ddl(
    workflows: str = WORKFLOWS_TABLE,
    executions: str = EXECUTIONS_TABLE,
    *,
    active_where: str = ACTIVE_WHERE,
    items: bool = True,
) -> list[str]:
    """Return the MySQL/MariaDB statements that add the generated columns and unique keys."""
    return [
        f"ALTER TABLE {workflows} ADD COLUMN ongoing_flag TINYINT AS "
        f"(CASE WHEN {ONGOING_WHERE} THEN 1 END) STORED, "
        f"ADD UNIQUE INDEX uq_{workflows}_ongoing (type, hero_type, hero_id, ongoing_flag)",
        mysql_active_ddl(executions, active_where)
        if not items
        else mysql_active_item_ddl(executions, active_where),
    ]


def mysql_active_ddl(executions: str = EXECUTIONS_TABLE, active_where: str = ACTIVE_WHERE) -> str:
    """The MySQL/MariaDB statement adding "one active execution per (workflow, step)".

    The rule before :data:`DATA`: its revisions render it so.
    """
    return (
        f"ALTER TABLE {executions} ADD COLUMN active_flag TINYINT AS "
        f"(CASE WHEN {active_where} THEN 1 END) STORED, "
        f"ADD UNIQUE INDEX uq_{executions}_active (workflow_id, step_name, active_flag)"
    )


def mysql_active_item_ddl(
    executions: str = EXECUTIONS_TABLE, active_where: str = ACTIVE_WHERE
) -> str:
    """The MySQL/MariaDB statement adding "one active execution per (workflow, step, item)".

    The generated column holds the item (:data:`ACTIVE_ITEM`) while the row is active,
    NULL otherwise.
    """
    return (
        f"ALTER TABLE {executions} ADD COLUMN active_item INT AS "
        f"(CASE WHEN {active_where} THEN {ACTIVE_ITEM} END) STORED, "
        f"ADD UNIQUE INDEX uq_{executions}_active (workflow_id, step_name, active_item)"
    )


def attach_mysql_ddl(workflows: sa.Table, executions: sa.Table) -> None:
    """Emit :func:`mysql_unique_ddl` after ``create_all`` creates the tables on MySQL."""
    wf_sql, ex_sql = mysql_unique_ddl(workflows.name, executions.name)
    for table, sql in ((workflows, wf_sql), (executions, ex_sql)):
        ddl = sa.DDL(sql).execute_if(dialect=MYSQL_DIALECTS)  # type: ignore[no-untyped-call,arg-type]
        sa.event.listen(table, "after_create", ddl)
