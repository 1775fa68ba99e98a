"""Write flask-geneva's Alembic revisions into an app's migrations: the tables, then each change.

``flask geneva migration`` calls :func:`write_revisions`; then ``flask db upgrade``
installs (or upgrades) flask-geneva like any other schema change, and ``flask db
downgrade`` takes it back. The schema is a chain of revisions, :data:`REVISIONS`, each
rendered from the table definitions in :mod:`~flask_geneva.models` (the one source of
truth) and frozen into its file, as migrations must be:

* the first creates the tables as 0.1 had them: the columns and indexes a later
  revision adds (named in their ``info``, see :func:`~flask_geneva.models.added_in`)
  are left out of it, so it renders the same in every release;
* each later one adds what its release added (``0.2 step leases``: the
  ``heartbeat_at`` column; ``0.2 schedule ticks``: the ``geneva_schedule_ticks``
  table, marked in the table's own ``info``; ``0.2 deploy safety``: fingerprints,
  per-workflow job options, superseded executions and the operator actions table),
  and its downgrade removes it.

An app's ``migrations/versions`` holds those it has: each file carries its
revision's marker line. The command writes the ones missing, in order, each revising
the app's head at the time, and refuses when none is missing. A change in a later
release is one more entry in :data:`REVISIONS` plus its columns and indexes in
:mod:`~flask_geneva.models`, marked with the entry's key.

The uniqueness rules differ per dialect, so the revision that creates the tables
decides at upgrade time from ``op.get_bind().dialect.name``: partial unique indexes
on PostgreSQL and SQLite, a stored generated column plus a unique index on
MySQL/MariaDB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops
from alembic.script import ScriptDirectory
from alembic.util import rev_id

from . import error_search
from .errors import GenevaError
from .migration_render import HEADER
from .migration_render import create_table_ops
from .migration_render import render
from .migration_render import render_data
from .migration_render import render_signals
from .models import ACTIVE_WHERE
from .models import ACTIVE_WHERE_0_1
from .models import CONSOLE
from .models import DATA
from .models import DEPLOYS
from .models import EXECUTIONS_TABLE
from .models import LEASES
from .models import SCHEDULES
from .models import SIGNALS
from .models import WORKFLOWS_TABLE
from .models import actions_table
from .models import added_in
from .models import execution_columns
from .models import execution_indexes
from .models import removed_in
from .models import schedule_ticks_table
from .models import workflow_columns
from .models import workflow_indexes
from .models_mysql import mysql_unique_ddl

if TYPE_CHECKING:
    from .extension import Geneva

#: The key of the revision that creates the tables (the 0.1 schema).
TABLES = "0.1 tables"
#: The line the revision that creates the tables carries (0.1 wrote it too: unchanged).
MARKER = "# flask-geneva revision: creates the geneva_* tables"
#: The default message of the revision that creates the tables.
TABLES_MESSAGE = "Add flask-geneva tables"


@dataclass(frozen=True)
class Revision:
    """One link of flask-geneva's chain of schema revisions."""

    #: What the models mark their columns and indexes with (``info``).
    key: str
    #: The line its file carries, to find it in an app's migrations.
    marker: str
    #: The file's docstring and name.
    message: str


#: flask-geneva's schema revisions, oldest first. Append; never edit or reorder.
REVISIONS: tuple[Revision, ...] = (
    Revision(TABLES, MARKER, TABLES_MESSAGE),
    Revision(LEASES, "# flask-geneva revision: 0.2 step leases", "flask-geneva 0.2: step leases"),
    Revision(
        SCHEDULES,
        "# flask-geneva revision: 0.2 schedule ticks",
        "flask-geneva 0.2: schedule ticks",
    ),
    Revision(SIGNALS, "# flask-geneva revision: 0.2 signals", "flask-geneva 0.2: signals"),
    Revision(
        DATA,
        "# flask-geneva revision: 0.2 data along the edges",
        "flask-geneva 0.2: data along the edges",
    ),
    Revision(
        DEPLOYS,
        "# flask-geneva revision: 0.2 deploy safety",
        "flask-geneva 0.2: deploy safety and reruns",
    ),
    Revision(
        CONSOLE,
        "# flask-geneva revision: 0.2 operator console",
        "flask-geneva 0.2: operator console",
    ),
)

_TEMPLATE = (
    HEADER
    + """
PARTIAL_INDEX_DIALECTS = ("postgresql", "sqlite")
MYSQL_DIALECTS = ("mysql", "mariadb")


def upgrade():
    dialect = op.get_bind().dialect.name
{tables}
    if dialect in PARTIAL_INDEX_DIALECTS:
        # One ongoing workflow per (type, hero); one active execution per (workflow, step).
{partial_indexes}
    elif dialect in MYSQL_DIALECTS:
        # No partial indexes here: a stored generated column that is 1 while the rule
        # applies (NULL otherwise) joins a unique index, and NULLs never collide.
{mysql_ddl}


def downgrade():
{drops}
"""
)

_LATER_TEMPLATE = (
    HEADER
    + """

def upgrade():
{upgrade}{upgrade_more}


def downgrade():
{downgrade_more}{downgrade}
"""
)


class MigrationError(GenevaError):
    """No revision can be written (no migrations folder, several heads, all there)."""


def write_revisions(
    ext: Geneva, directory: str | Path, *, message: str = TABLES_MESSAGE
) -> list[Path]:
    """Write the revisions ``<directory>/versions`` does not hold yet; return their paths.

    The first one written revises the current head, each next one the one before, so
    they apply after the app's existing migrations.

    :param directory: the Flask-Migrate folder (``migrations`` by default).
    :param message: the message of the revision that creates the tables.
    :raises MigrationError: the folder is missing (run ``flask db init``), it has several
        heads (run ``flask db merge``), or it already holds every revision.
    """
    folder = Path(directory)
    versions = folder / "versions"
    if not (folder / "env.py").is_file() or not versions.is_dir():
        raise MigrationError(
            f"no Alembic migrations folder at {str(folder)!r}; run 'flask db init' first "
            "(or pass --directory)"
        )
    held = _held(versions)
    missing = [r for r in REVISIONS if r.key not in held]
    if not missing:
        last = held[REVISIONS[-1].key]
        raise MigrationError(
            f"{versions} already holds every flask-geneva revision (the latest is {last}); "
            "nothing to write. Run 'flask db upgrade' to apply them"
        )
    later = [r for r in REVISIONS[REVISIONS.index(missing[0]) :] if r.key in held]
    if later:
        raise MigrationError(
            f"{held[later[0].key]} ({later[0].key!r}) is there but not the revision before "
            f"it ({missing[0].key!r}); restore the missing revision file"
        )
    heads = ScriptDirectory(str(folder)).get_heads()
    if len(heads) > 1:
        raise MigrationError(
            f"the migrations have several heads ({', '.join(sorted(heads))}); "
            "run 'flask db merge heads' first"
        )
    down_revision = heads[0] if heads else None
    written: list[Path] = []
    for revision in missing:
        ident = rev_id()
        text = message if revision.key == TABLES else revision.message
        source = render_revision(
            ext, revision.key, revision=ident, down_revision=down_revision, message=text
        )
        slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]
        path = versions / f"{ident}_{slug}.py"
        path.write_text(source, encoding="utf-8")
        written.append(path)
        down_revision = ident
    return written


def write_revision(ext: Geneva, directory: str | Path, *, message: str = TABLES_MESSAGE) -> Path:
    """Write the missing revisions (see :func:`write_revisions`); return the last one's path."""
    return write_revisions(ext, directory, message=message)[-1]


def _held(versions: Path) -> dict[str, Path]:
    """Revision key → the file in ``versions`` that carries its marker."""
    markers = {r.marker: r.key for r in REVISIONS}
    held: dict[str, Path] = {}
    for path in sorted(versions.glob("*.py")):
        for line in path.read_text(encoding="utf-8").splitlines():
            key = markers.get(line.strip())
            if key is not None:
                held.setdefault(key, path)
    return held


def tables_at(key: str) -> tuple[sa.Table, sa.Table]:
    """The two tables as revision ``key`` leaves them (in a metadata of their own)."""
    known = [r.key for r in REVISIONS]
    keep = set(known[: known.index(key) + 1])

    def present(item: sa.Column[Any] | sa.Index) -> bool:
        return (added_in(item) or TABLES) in keep and removed_in(item) not in keep

    metadata = sa.MetaData()
    workflows = sa.Table(
        WORKFLOWS_TABLE,
        metadata,
        *filter(present, workflow_columns()),
        *filter(present, workflow_indexes()),
    )
    active_where = ACTIVE_WHERE if SIGNALS in keep else ACTIVE_WHERE_0_1
    executions = sa.Table(
        EXECUTIONS_TABLE,
        metadata,
        *filter(present, execution_columns()),
        *filter(
            present,
            execution_indexes(active_where=active_where, items=DATA in keep, history=True),
        ),
    )
    return workflows, executions


def added_tables(key: str) -> list[sa.Table]:
    """The tables revision ``key`` creates (each names its revision in its ``info``)."""
    tables = [schedule_ticks_table(sa.MetaData()), actions_table(sa.MetaData())]
    return [t for t in tables if added_in(t) == key]


def render_revision(
    ext: Geneva,
    key: str = TABLES,
    *,
    revision: str,
    down_revision: str | None,
    message: str | None = None,
    create_date: datetime | None = None,
) -> str:
    """Return the source of revision ``key`` (see :func:`write_revisions`)."""
    from . import __version__

    found = {r.key: r for r in REVISIONS}[key]
    header = dict(
        message=message or found.message,
        revision=revision,
        down_revision=down_revision,
        down_revision_text=down_revision or "",
        create_date=(create_date or datetime.now()).isoformat(sep=" ", timespec="seconds"),
        version=__version__,
        marker=found.marker,
    )
    if key == TABLES:
        return _render_tables(header)
    if key == SIGNALS:
        return render_signals(header)
    if key == DATA:
        return render_data(header)
    return _render_later(key, header)


def _render_tables(header: dict[str, Any]) -> str:
    workflows, executions = tables_at(TABLES)
    upgrade_ops: list[ops.MigrateOperation] = []
    partial: list[ops.MigrateOperation] = []
    for table in (workflows, executions):
        upgrade_ops.append(ops.CreateTableOp.from_table(table))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            target = partial if is_partial(index) else upgrade_ops
            target.append(ops.CreateIndexOp.from_index(index))
    drops = [f"    op.drop_table({t.name!r})" for t in (executions, workflows)]
    return _TEMPLATE.format(
        **header,
        tables=render(upgrade_ops, indent=4),
        partial_indexes=render(partial, indent=8),
        mysql_ddl="\n".join(
            f"        op.execute({sql!r})"
            for sql in mysql_unique_ddl(
                workflows.name, executions.name, active_where=ACTIVE_WHERE_0_1, items=False
            )
        ),
        drops="\n".join(drops),
    )


def _render_later(key: str, header: dict[str, Any]) -> str:
    """A revision that adds columns and (non-partial) indexes to the existing tables."""
    upgrade_ops: list[ops.MigrateOperation] = []
    downgrade_ops: list[ops.MigrateOperation] = []
    for table in tables_at(key):
        for column in table.columns:
            if added_in(column) == key:
                upgrade_ops.append(
                    ops.AddColumnOp.from_column_and_tablename(None, table.name, column)
                )
                downgrade_ops.append(
                    ops.DropColumnOp.from_column_and_tablename(None, table.name, column)
                )
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if added_in(index) == key:
                if is_partial(index):
                    raise NotImplementedError(
                        f"{index.name}: a partial index needs its own rendering"
                    )
                upgrade_ops.append(ops.CreateIndexOp.from_index(index))
                downgrade_ops.append(ops.DropIndexOp.from_index(index))
    before = [r.key for r in REVISIONS][[r.key for r in REVISIONS].index(key) - 1]
    for table in tables_at(before):
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if removed_in(index) == key:  # replaced by a wider one, created above
                upgrade_ops.append(ops.DropIndexOp.from_index(index))
                downgrade_ops.append(ops.CreateIndexOp.from_index(index))
    for new in added_tables(key):
        upgrade_ops.extend(create_table_ops(new))
        downgrade_ops.append(ops.DropTableOp.from_table(new))
    # Indexes go before the columns they cover.
    downgrade_ops.reverse()
    # What no Alembic operation renders: the console's trigram index (PostgreSQL).
    console = key == CONSOLE
    return _LATER_TEMPLATE.format(
        **header,
        upgrade=render(upgrade_ops, indent=4),
        downgrade=render(downgrade_ops, indent=4),
        upgrade_more="\n" + error_search.REVISION_UPGRADE.rstrip() if console else "",
        downgrade_more=error_search.REVISION_DOWNGRADE if console else "",
    )


def is_partial(index: sa.Index) -> bool:
    return index.dialect_options["postgresql"]["where"] is not None
