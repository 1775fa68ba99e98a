"""The ``flask geneva`` command group: thin adapters over the Python API.

Each command parses its arguments, calls one service function
(:mod:`~flask_geneva.operations`, :mod:`~flask_geneva.housekeeping`,
:mod:`~flask_geneva.queries`, :mod:`~flask_geneva.migration`) and prints the result.
User mistakes (an unknown id or class, a bad filter, an operation the state does not
allow) end as one ``Error: ...`` line and exit code 1, never a traceback: the group
turns every :class:`~flask_geneva.GenevaError` into a :class:`click.ClickException`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import TypeVar

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from . import clock
from . import display
from . import housekeeping
from . import queries
from . import reads
from . import schedules
from . import show
from .errors import GenevaError
from .migration import write_revisions
from .tasks import make_consumer

F = TypeVar("F", bound=Callable[..., Any])


class GenevaGroup(AppGroup):
    """An ``AppGroup`` that reports flask-geneva errors as one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GenevaError as error:
            raise click.ClickException(str(error)) from None


geneva_cli = GenevaGroup(
    "geneva", help="Durable workflows: run workers, inspect and fix workflows."
)


def _ext() -> Any:
    return current_app.extensions["geneva"].ext


#: The largest id the tables' BIGINT key holds (SQLite's INTEGER holds the same).
MAX_ID = 2**63 - 1
#: ``list --limit`` at most: one statement selects the rows by their ids.
MAX_LIST_LIMIT = 10_000
#: ``worker -w`` at most (each is a thread, a process or a greenlet).
MAX_WORKERS = 1_000


class Number(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A whole number in ``low..high``, written in ASCII digits.

    Stricter than ``int``, which also takes ``'٣'``, ``' 7'`` and ``'1_000'``; and the
    range keeps every id and limit within what the database holds, so an out-of-range
    value ends as one usage error, not as a query that fails with a traceback.
    """

    def __init__(self, name: str, low: int, high: int) -> None:
        self.name = name
        self.low = low
        self.high = high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value)
        if not (text.isascii() and text.isdigit()):
            self.fail(f"{text[:64]!r} is not a whole number", param, ctx)
        # The length test first: int() of thousands of digits is slow, then refused.
        if len(text) > len(str(self.high)) or not self.low <= int(text) <= self.high:
            self.fail(f"{text[:64]} is not in the range {self.low} to {self.high}", param, ctx)
        return int(text)


#: A workflow id: 1 to 2**63 - 1.
WORKFLOW_ID = Number("id", 1, MAX_ID)
WORKERS = Number("count", 1, MAX_WORKERS)
LIST_LIMIT = Number("count", 1, MAX_LIST_LIMIT)


def _no_nul(name: str, value: str | None) -> None:
    # PostgreSQL refuses NUL in text: say so before the query does.
    if value is not None and "\x00" in value:
        raise click.BadParameter("the value contains a NUL character", param_hint=name)


# -- worker, housekeeping, migration -----------------------------------------------------------


@geneva_cli.command("worker")
@click.option("-w", "--workers", default=4, show_default=True, type=WORKERS, help="Workers to run.")
@click.option(
    "-k",
    "--worker-type",
    type=click.Choice(["thread", "process", "greenlet"]),
    default="thread",
    show_default=True,
    help="Worker kind.",
)
def worker_command(workers: int, worker_type: str) -> None:
    """Run a Huey consumer that performs workflow steps for this app."""
    state = current_app.extensions["geneva"]
    consumer = make_consumer(state.huey, workers=workers, worker_type=worker_type)
    click.echo(
        f"flask-geneva worker: {workers} {worker_type} worker(s) on {type(state.huey).__name__}"
    )
    consumer.run()


@geneva_cli.command("housekeeping")
def housekeeping_command() -> None:
    """Delete old finished workflows, recover lost workers, re-send lost triggers.

    Runs once and prints what it did. Workers also run it every
    GENEVA_HOUSEKEEPING_INTERVAL; running it by hand at the same time is safe.
    """
    summary = housekeeping.run(_ext())
    click.echo(f"housekeeping: {summary}")


@geneva_cli.command("migration")
@click.option(
    "-d",
    "--directory",
    default=None,
    help="The Flask-Migrate folder (default: the app's Migrate directory, or 'migrations').",
)
@click.option("-m", "--message", default="Add flask-geneva tables", show_default=True)
def migration_command(directory: str | None, message: str) -> None:
    """Write the flask-geneva Alembic revisions the migrations do not hold yet.

    The first creates the tables; each later one upgrades them to a newer release.
    Then run 'flask db upgrade' ('flask db downgrade' takes them back).
    """
    if directory is None:
        migrate = current_app.extensions.get("migrate")
        directory = getattr(migrate, "directory", None) or "migrations"
    for path in write_revisions(_ext(), directory, message=message):
        click.echo(f"wrote {path}")
    click.echo("run 'flask db upgrade' to apply them")


@geneva_cli.command("schedules")
def schedules_command() -> None:
    """List the scheduled workflow classes, their crontab and their next tick."""
    lines = schedules.overview(_ext(), clock.now())
    for line in lines or ["no workflow class has a schedule (set schedule = huey.crontab(...))"]:
        click.echo(line)


# -- finding workflows -------------------------------------------------------------------------


def filter_options(func: F) -> F:
    """Add the shared filter options (--class, --state, --hero, --step, --attention,
    --error, --error-class)."""
    options = [
        click.option("-c", "--class", "class_name", help="Workflow class (name or stored type)."),
        click.option(
            "-s", "--state", "states", multiple=True, help="Workflow state; repeat for several."
        ),
        click.option("--hero", help="Hero as Type or Type:id, e.g. Payment:7."),
        click.option(
            "--step", help="Workflows at this step (scheduled, running, waiting or failed)."
        ),
        click.option(
            "--attention",
            type=click.Choice(queries.ATTENTION),
            help="Workflows that need a look: reattempting (running but failing), overdue "
            "(no worker took a due step), waiting (for a signal over an hour), stranded "
            "(a step the class no longer defines, or no class).",
        ),
        click.option(
            "--error",
            help="Workflows whose current failure's error class or message holds this "
            "text (case-insensitive).",
        ),
        click.option(
            "--error-class", help="Workflows with a current failure of exactly this class."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_filter(
    class_name: str | None,
    states: tuple[str, ...],
    hero: str | None,
    step: str | None,
    attention: str | None = None,
    *,
    error: str | None = None,
    error_class: str | None = None,
) -> queries.WorkflowFilter:
    """Turn the filter options into a :class:`~flask_geneva.queries.WorkflowFilter`."""
    for name, value in (
        ("--class", class_name),
        ("--hero", hero),
        ("--step", step),
        ("--error", error),
        ("--error-class", error_class),
    ):
        _no_nul(name, value)
    hero_type, hero_id = None, None
    if hero is not None:
        hero_type, _, hero_id_text = hero.partition(":")
        hero_id = hero_id_text or None
        if not hero_type:
            raise click.ClickException(f"--hero {hero!r}: expected Type or Type:id")
    try:
        return queries.WorkflowFilter(
            workflow_type=None if class_name is None else workflow_class(class_name)[0],
            states=tuple(states),
            hero_type=hero_type,
            hero_id=hero_id,
            step=step,
            attention=attention,
            error=error,
            error_class=error_class,
        )
    except ValueError as refused:
        raise click.ClickException(str(refused)) from None


def workflow_class(name: str) -> tuple[str, Any]:
    """Return ``(stored type, class)`` for a class name or stored type.

    A stored type with no class in this process (a renamed class's old rows) is
    accepted with class None, so its workflows can still be listed and canceled.
    """
    ext = _ext()
    if name in ext.registry:
        return name, ext.registry[name]
    matches = [
        (identity, cls)
        for identity, cls in ext.registry.items()
        if name in (cls.__name__, cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}")
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches and name in reads.workflow_types(ext):
        return name, None
    known = ", ".join(sorted(ext.registry)) or "none"
    if matches:
        raise click.ClickException(
            f"{name!r} names several workflow classes; use the stored type, one of: "
            f"{', '.join(sorted(m[0] for m in matches))}"
        )
    raise click.ClickException(f"unknown workflow class {name!r}; known classes: {known}")


@geneva_cli.command("list")
@filter_options
@click.option("-n", "--limit", default=50, show_default=True, type=LIST_LIMIT, help="Rows to show.")
def list_command(
    class_name: str | None,
    states: tuple[str, ...],
    hero: str | None,
    step: str | None,
    attention: str | None,
    error: str | None,
    error_class: str | None,
    limit: int,
) -> None:
    """List workflows, newest first."""
    ext = _ext()
    selection = build_filter(
        class_name, states, hero, step, attention, error=error, error_class=error_class
    )
    rows = queries.list_workflows(ext, selection, limit=limit)
    if not rows:
        click.echo("no workflows match")
        return
    current = queries.current_steps(ext, [row["id"] for row in rows])
    table: list[tuple[str, ...]] = [("ID", "CLASS", "STATE", "HERO", "CURRENT STEPS", "UPDATED")]
    for row in rows:
        steps = ", ".join(f"{name} ({state})" for name, state in current.get(row["id"], []))
        table.append(
            (
                str(row["id"]),
                _class_label(row["type"]),
                row["state"],
                display.hero(row),
                steps or "-",
                display.time(row["updated_at"]),
            )
        )
    for line in display.table(table):
        click.echo(line)


@geneva_cli.command("show")
@click.argument("workflow_id", type=WORKFLOW_ID)
def show_command(workflow_id: int) -> None:
    """Show a workflow: its state, its DAG with map progress, executions, outputs, last error."""
    ext = _ext()
    w = ext.tables.workflows
    with ext.engine().connect() as conn:
        row = conn.execute(sa.select(w).where(w.c.id == workflow_id)).mappings().first()
    if row is None:
        raise click.ClickException(f"no workflow with id {workflow_id}")
    for line in show.render(ext, row, _class_label(row["type"])):
        click.echo(line)


# -- graph -------------------------------------------------------------------------------------


@geneva_cli.command("graph")
@click.argument("class_name")
@click.option(
    "-f",
    "--format",
    "output",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
def graph_command(class_name: str, output: str) -> None:
    """Print a workflow class's DAG of steps (text, Mermaid or Graphviz DOT)."""
    identity, cls = workflow_class(class_name)
    if cls is None:
        raise click.ClickException(f"type {identity!r} names no workflow class in this process")
    for line in display.render_graph(cls.__name__, cls.step_graph(), output):
        click.echo(line)


def _class_label(stored_type: str) -> str:
    cls = _ext().registry.get(stored_type)
    return cls.__name__ if cls is not None else f"{stored_type} (no class)"


# The operator commands register on the group when their module is imported.
from . import cli_check  # noqa: E402,F401
from . import cli_operator  # noqa: E402,F401
