"""Error-text search: the workflows whose current failure's error holds a text.

``WorkflowFilter(error="timeout")`` (the admin's error search, ``flask geneva list
--error``) lower-cases the text and compares it with :func:`error_text`, each current
failed execution's error class and message joined by a space, using ``LIKE
'%text%'`` (the text's ``%``, ``_`` and ``/`` escaped, so they match themselves).

* **PostgreSQL**: a trigram index answers it (:data:`INDEX`, a GIN index of the
  ``pg_trgm`` extension on that expression, over the failed executions only). The
  revision "0.2 operator console" and ``create_all`` both install the extension and
  the index when this database lets the role do so (:data:`CAN_INDEX`: the extension
  is there already, or it is available and the role may create it; ``pg_trgm`` is a
  trusted extension from PostgreSQL 13, so a role with ``CREATE`` on the database
  may). Without it, nothing fails: the search is the bounded scan below.
* **SQLite, MariaDB**: a bounded scan. The failed executions are found on the
  ``(state, scheduled_for)`` index and each is compared; the cost follows how many
  failed executions the tables keep (housekeeping deletes them with their workflows),
  never the rest of the history.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from .models import EXECUTIONS_TABLE
from .states import StepState

if TYPE_CHECKING:
    from .extension import Geneva

#: The trigram index of the failed executions' error text (PostgreSQL).
INDEX = f"ix_{EXECUTIONS_TABLE}_error_text"
#: The indexed expression, as PostgreSQL's DDL spells it; :func:`error_text` builds the
#: same expression for the queries (PostgreSQL uses the index only for the same one).
EXPRESSION = "lower(coalesce(error_class, '') || ' ' || coalesce(error_message, ''))"
#: Creates :data:`INDEX` (once ``pg_trgm`` is installed).
INDEX_DDL = (
    f"CREATE INDEX {INDEX} ON {EXECUTIONS_TABLE} USING gin (({EXPRESSION}) gin_trgm_ops) "
    f"WHERE state = '{StepState.FAILED.value}'"
)
EXTENSION_DDL = "CREATE EXTENSION IF NOT EXISTS pg_trgm"
#: True when ``pg_trgm`` is installed, or available and this role may install it.
CAN_INDEX = (
    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') OR ("
    "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') AND ("
    "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR ("
    "current_setting('server_version_num')::int >= 130000 "
    "AND has_database_privilege(current_database(), 'CREATE'))))"
)
#: What is logged when the index can't be had.
NO_INDEX = (
    "flask-geneva: the pg_trgm extension is not installed and this role may not install "
    "it, so the error-text search is a bounded scan of the failed executions (install "
    f"pg_trgm, then run: {INDEX_DDL})"
)

_log = logging.getLogger(__name__)


def error_text(executions: sa.Table) -> sa.ColumnElement[str]:
    """The lower-cased error class and message of an execution, joined by a space.

    The constants are inline (not bound parameters) so that PostgreSQL sees the
    indexed expression.
    """
    c = executions.c
    blank: sa.ColumnElement[str] = sa.literal_column("''")
    joined = (
        sa.func.coalesce(c.error_class, blank)
        .concat(sa.literal_column("' '"))
        .concat(sa.func.coalesce(c.error_message, blank))
    )
    return sa.func.lower(joined, type_=sa.String())


def like_pattern(text: str) -> str:
    """``%text%`` for ``LIKE ... ESCAPE '/'``, lower-cased, its wildcards escaped."""
    escaped = text.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def failed_matching(ext: Geneva, text: str) -> sa.Select[Any]:
    """``SELECT workflow_id`` of the current failed executions whose error holds ``text``."""
    e = ext.tables.executions
    return sa.select(e.c.workflow_id).where(
        # Inline, so that PostgreSQL's plans match the index's WHERE state = 'failed'.
        e.c.state == sa.literal_column(f"'{StepState.FAILED.value}'"),
        e.c.superseded_at.is_(None),
        error_text(e).like(like_pattern(text), escape="/"),
    )


def create_index(connection: sa.Connection) -> bool:
    """Install ``pg_trgm`` and :data:`INDEX` on a PostgreSQL connection, where allowed.

    :returns: whether the index was made; when not, :data:`NO_INDEX` is logged.
    """
    if not connection.execute(sa.text(CAN_INDEX)).scalar():
        _log.warning(NO_INDEX)
        return False
    connection.execute(sa.text(EXTENSION_DDL))
    connection.execute(sa.text(INDEX_DDL))
    return True


def attach(executions: sa.Table) -> None:
    """Make ``create_all`` build the trigram index after the table, on PostgreSQL."""

    def after_create(target: sa.Table, connection: sa.Connection, **_: Any) -> None:
        if connection.dialect.name == "postgresql":
            create_index(connection)

    sa.event.listen(executions, "after_create", after_create)


#: The revision's PostgreSQL part (rendered into the file: a revision does not import
#: the library, so it stays as it was written whatever version is installed later).
REVISION_UPGRADE = f"""\
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # The error-text search's trigram index, where pg_trgm can be had; without it
        # the search is a bounded scan of the failed executions.
        if bind.execute(sa.text({CAN_INDEX!r})).scalar():
            op.execute({EXTENSION_DDL!r})
            op.execute({INDEX_DDL!r})
        else:
            import logging

            logging.getLogger("alembic.runtime.migration").warning({NO_INDEX!r})
"""
REVISION_DOWNGRADE = f"""\
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS {INDEX}")  # pg_trgm stays: others may use it
"""
