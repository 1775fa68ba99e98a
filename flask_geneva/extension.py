"""The ``Geneva`` extension: builds the models on ``db.Model`` and wires each app."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from flask import Flask
from flask import current_app
from sqlalchemy.engine import Engine

from . import executor
from . import housekeeping as _housekeeping
from . import metrics
from . import operations
from . import policy
from . import queries
from . import tasks
from .config import DEFAULTS
from .config import GenevaConfig
from .config import make_huey
from .errors import DefinitionError
from .hero import HeroResolver
from .logging import logger
from .mapping import build_models
from .models import schedule_ticks_table
from .scheduling import Trigger
from .scheduling import install_session_hooks
from .store import Tables
from .transaction import configure_sqlite
from .transaction import track_writes

if TYPE_CHECKING:
    from flask import Blueprint


class GenevaState:
    """Per-app state, kept in ``app.extensions["geneva"]``."""

    def __init__(self, app: Flask, ext: Geneva, config: GenevaConfig) -> None:
        self.app = app
        self.ext = ext
        self.config = config
        #: The app's Huey instance (from ``GENEVA_HUEY``).
        self.huey = make_huey(config.huey, name=config.huey_name, instance_path=app.instance_path)
        self.perform_step = tasks.register_step_task(self)
        #: The ``geneva.housekeeping`` periodic task (None when the interval is None).
        self.housekeeping_task = tasks.register_housekeeping_task(self)
        #: The ``geneva.schedules`` periodic task (None while no class has a schedule).
        self.schedules_task = tasks.register_schedules_task(self)

    def send(self, triggers: Iterable[Trigger]) -> None:
        """Enqueue Huey messages for committed executions."""
        tasks.send(self, triggers)


class Geneva:
    """Durable workflows for a Flask app, stored through Flask-SQLAlchemy.

    ::

        db = SQLAlchemy()
        geneva = Geneva(db)

        class PaymentWorkflow(geneva.Workflow):
            @step
            def authorize(self): ...

        geneva.init_app(app)   # after db.init_app(app)

    The attributes and methods a user may rely on are listed in ``docs/api.md``;
    :meth:`register`, :attr:`heroes`, :attr:`log` and :meth:`get_state` serve the package
    itself and are internal.

    :param db: the app's ``flask_sqlalchemy.SQLAlchemy``; the ``Workflow`` and
        ``StepExecution`` models are built on its ``db.Model``.
    :param app: call :meth:`init_app` with it now (one-file apps).
    """

    def __init__(self, db: Any, app: Flask | None = None) -> None:
        self.db = db
        #: Workflow classes by stored identity (the ``type`` column).
        self.registry: dict[str, type[Any]] = {}
        self.heroes = HeroResolver(db.Model)
        self.log = logger
        Workflow, StepExecution = build_models(db, self)
        #: Subclass this to declare a workflow.
        self.Workflow: Any = Workflow
        #: The step execution model (one row per attempt to run a step).
        self.StepExecution: Any = StepExecution
        #: The two Core tables (``workflows``, ``executions``), for your own read queries.
        self.tables = Tables(Workflow.__table__, StepExecution.__table__)
        #: The schedule ticks table (one row per scheduled class, hero and tick).
        self.schedule_ticks = schedule_ticks_table(db.metadata)
        self._states: weakref.WeakSet[GenevaState] = weakref.WeakSet()
        self._admin_blueprint: Blueprint | None = None
        self._admin_lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def register(self, cls: type[Any], identity: str) -> None:
        """Record a workflow class under its stored identity (internal: class creation calls it)."""
        existing = self.registry.get(identity)
        if existing is not None and existing is not cls:
            name = f"{cls.__module__}.{cls.__qualname__}"
            hint = "give one of them another name with __geneva_type__ = '...'"
            if name == f"{existing.__module__}.{existing.__qualname__}":
                # The same class statement ran twice, e.g. inside a function called twice.
                hint = (
                    "the same class was defined twice (a class inside a function that runs "
                    "more than once?); define it once, or give each a distinct __geneva_type__"
                )
            raise DefinitionError(
                f"{name}: workflow type {identity!r} is already used by "
                f"{existing.__module__}.{existing.__qualname__}; {hint}"
            )
        self.registry[identity] = cls
        if cls.__geneva_definition__.schedule is not None:
            # A scheduled class defined after init_app (a one-file app): its apps now
            # need the schedules task.
            for state in list(self._states):
                if state.schedules_task is None:
                    state.schedules_task = tasks.register_schedules_task(state)

    def init_app(self, app: Flask) -> None:
        """Wire flask-geneva into ``app``: config, Huey, CLI, SQLite settings.

        Call it after ``db.init_app(app)``.
        """
        if "geneva" in app.extensions:
            raise RuntimeError(
                "A 'Geneva' instance has already been registered on this Flask app. "
                "Import and use that instance instead."
            )
        if "sqlalchemy" not in app.extensions:
            raise RuntimeError(
                "Call 'db.init_app(app)' before 'geneva.init_app(app)': flask-geneva "
                "stores workflows through Flask-SQLAlchemy."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        config = GenevaConfig.from_mapping(app.config)
        state = GenevaState(app, self, config)
        app.extensions["geneva"] = state
        self._states.add(state)
        with app.app_context():
            for engine in self.db.engines.values():
                configure_sqlite(engine)
                track_writes(engine)
        install_session_hooks(self.db.session)

        from .cli import geneva_cli

        app.cli.add_command(geneva_cli)

    def get_state(self) -> GenevaState:
        """Return the current app's internal state (its public parts: :attr:`huey`, :attr:`config`).

        :raises RuntimeError: outside an app context, or if ``init_app`` was not called.
        """
        try:
            state = current_app.extensions["geneva"]
        except KeyError:
            raise RuntimeError(
                "The current Flask app is not registered with this 'Geneva' instance. "
                "Did you forget to call 'geneva.init_app(app)'?"
            ) from None
        if state.ext is not self:
            raise RuntimeError(
                "The current Flask app is registered with another 'Geneva' instance."
            )
        return state  # type: ignore[no-any-return]

    def engine(self) -> Engine:
        """Return the engine the workflow tables live on (the current app's)."""
        bind_key = self.tables.workflows.info.get("bind_key")
        return self.db.engines[bind_key]  # type: ignore[no-any-return]

    def create_all(self) -> None:
        """Create the tables if missing (quick starts; use the migration in production)."""
        self.db.metadata.create_all(bind=self.engine(), tables=self._own_tables())

    def drop_all(self) -> None:
        """Drop the tables (tests and demos)."""
        self.db.metadata.drop_all(bind=self.engine(), tables=self._own_tables())

    def _own_tables(self) -> list[Any]:
        return [*self.tables.all, self.schedule_ticks]

    @property
    def huey(self) -> Any:
        """The current app's Huey instance (from ``GENEVA_HUEY``)."""
        return self.get_state().huey

    @property
    def config(self) -> GenevaConfig:
        """The current app's ``GENEVA_*`` settings, validated and parsed (read-only).

        ::

            assert geneva.config.stuck_recovery == "reattempt"
        """
        return self.get_state().config

    @property
    def admin_blueprint(self) -> Blueprint:
        """The admin blueprint; mount it with ``app.register_blueprint(...)``.

        Built once per ``Geneva`` instance: every access returns the same blueprint,
        which may be registered on several apps (one per test, say), each with its own
        ``url_prefix``.
        """
        if self._admin_blueprint is None:
            with self._admin_lock:
                if self._admin_blueprint is None:
                    from .admin import make_blueprint

                    self._admin_blueprint = make_blueprint(self)
        return self._admin_blueprint

    # -- running steps ---------------------------------------------------------------------

    def make_consumer(
        self, *, workers: int = 4, worker_type: str = "thread", **options: Any
    ) -> Any:
        """Return a Huey consumer for the current app's queue, as ``flask geneva worker`` runs.

        flask-geneva's low-latency polling defaults apply (see the Huey page of the
        manual); any other Huey consumer option can be passed as a keyword argument.
        ``consumer.run()`` blocks; ``consumer.start()`` runs the workers on threads and
        returns, and ``consumer.stop(graceful=True)`` waits for the running steps::

            consumer = geneva.make_consumer(workers=2)
            consumer.start()

        :param workers: how many steps run at once in this process.
        :param worker_type: ``thread``, ``process`` or ``greenlet``.
        """
        return tasks.make_consumer(self.huey, workers=workers, worker_type=worker_type, **options)

    def execute(
        self, execution_id: int, *, ignore_schedule: bool = False, raise_errors: bool = False
    ) -> executor.ExecutionReport | None:
        """Run one step execution now, exactly as a worker does for its Huey message.

        Safe to call any number of times for the same id: only one call runs the body.
        Its report's ``status`` is ``ran``, ``settled`` (decided before the body: skip,
        cancel, pause), ``deferred`` (not due yet; the trigger was sent again for the
        due time) or ``noop`` (no longer scheduled).

        :param execution_id: the id a Huey message carries (``StepExecution.id``).
        :param ignore_schedule: run it even if it is not due yet.
        :param raise_errors: re-raise the step's exception after its outcome is committed.
        :return: the report, or None when no execution has that id.
        """
        return executor.execute(
            self,
            self.get_state(),
            execution_id,
            ignore_schedule=ignore_schedule,
            raise_errors=raise_errors,
        )

    def housekeeping(self) -> _housekeeping.HousekeepingSummary:
        """Run housekeeping once for the current app and return what it did.

        Deletes old finished workflows, recovers executions whose worker was lost and
        re-sends lost triggers, in short batches; safe beside workers and beside another
        run. It is what ``flask geneva housekeeping`` and the periodic task run::

            summary = geneva.housekeeping()
            print(summary.workflows_deleted, summary.retriggered)
        """
        return _housekeeping.run(self)

    # -- operator commands -----------------------------------------------------------------

    def perform(
        self,
        operation: str,
        workflows: Iterable[int] | queries.WorkflowFilter,
        *,
        step: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        raise_errors: bool = True,
    ) -> operations.OperationResult:
        """Pause, resume, cancel, skip, reattempt or rerun workflows by id or by filter.

        The same commands as ``wf.pause()`` & co., the admin's buttons and ``flask
        geneva pause``: one short locked transaction per workflow, triggers sent after
        each commit. A filter is walked in batches of 200 ids, newest first::

            geneva.perform("pause", [12, 13])
            geneva.perform("resume", WorkflowFilter(workflow_type="PaymentWorkflow",
                                                    states=("paused",)))

        :param operation: ``pause``, ``resume``, ``cancel``, ``skip``, ``reattempt``,
            ``resume_at`` or ``rerun_from``.
        :param workflows: workflow ids, or a :class:`~flask_geneva.WorkflowFilter`.
        :param step: for ``skip`` / ``reattempt``: the step; needed when several are due.
            For ``resume_at`` / ``rerun_from``: the step (required).
        :param actor: who acts, recorded with each action (the audit).
        :param reason: why, recorded with each action.
        :param raise_errors: raise the first error, or else collect each in
            :attr:`OperationResult.errors` (by workflow id) and go on.
        :raises InvalidStateError: the command is not allowed in a workflow's state.
        :raises ValueError: ``actor`` or ``reason`` is too long or holds control characters.
        """
        batches = (
            queries.iter_ids(self, workflows, batch_size=200)
            if isinstance(workflows, queries.WorkflowFilter)
            else [list(workflows)]
        )
        result = operations.OperationResult(operation)
        for ids in batches:
            batch = operations.perform(
                self,
                operation,
                ids,
                step=step,
                actor=actor,
                reason=reason,
                raise_errors=raise_errors,
            )
            result.done.extend(batch.done)
            result.errors.update(batch.errors)
            result.details.update(batch.details)
        return result

    # -- finding workflows -----------------------------------------------------------------

    def list_workflows(
        self,
        filter: queries.WorkflowFilter | None = None,
        *,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Mapping[str, Any]]:
        """Return up to ``limit`` workflow rows (dicts of every column), newest first.

        Pages by keyset, never by offset: pass the last row's ``id`` as ``before_id``
        for the next, older page; fewer than ``limit`` rows means it was the last.

        :param filter: which workflows (default: all).
        """
        return queries.list_workflows(
            self, filter or queries.WorkflowFilter(), limit=limit, before_id=before_id
        )

    def iter_ids(
        self, filter: queries.WorkflowFilter | None = None, *, batch_size: int = 500
    ) -> Iterator[list[int]]:
        """Yield the matching workflow ids in lists of at most ``batch_size``, newest first.

        Each batch is a fresh keyset query and no connection is held between batches,
        so acting on one batch neither skips nor repeats a workflow in the next.
        """
        return queries.iter_ids(self, filter or queries.WorkflowFilter(), batch_size=batch_size)

    def count_workflows(
        self, filter: queries.WorkflowFilter | None = None, *, cap: int | None = None
    ) -> int:
        """Return how many workflows match, counting at most ``cap`` of them.

        With ``cap`` the cost is bounded (a result equal to ``cap`` means "``cap`` or
        more"); without it the count is exact and reads every matching index entry.
        """
        return queries.count_matching(self, filter or queries.WorkflowFilter(), cap=cap)

    def counts_by_state(
        self, workflow_type: str | None = None, *, cap: int | None = None
    ) -> dict[str, int]:
        """Return ``{state: count}`` for every workflow state, zeros included.

        :param workflow_type: a stored identity (``"PaymentWorkflow"``), or None for all.
        :param cap: count at most this many per state (keeps the cost flat however many
            finished workflows pile up).
        """
        return queries.counts_by_state(self, workflow_type, cap=cap)

    def metrics(self) -> metrics.Metrics:
        """Return counts per class and state, paused share, active steps, queue delay and
        recent failures, each read at a bounded cost (see :mod:`flask_geneva.metrics`)."""
        return metrics.collect(self)

    # -- definitions and deployment --------------------------------------------------------

    def policy_for(
        self, workflow_class: type[Any], step_name: str, error: BaseException
    ) -> policy.ExceptionPolicy:
        """Return the exception policy that applies when ``step_name`` raises ``error``.

        The same resolution the executor uses (the step's own, then the class's
        specific ones, subclass first, then the blanket one, then pause), without
        running anything.

        :raises ValueError: the class has no step of that name.
        """
        definition = workflow_class.__geneva_definition__
        node = definition.graph.steps.get(step_name)
        if node is None:
            raise ValueError(f"{workflow_class.__name__} has no step {step_name!r}")
        return policy.resolve(node.policy, definition.policies, error)

    def write_migration(
        self, directory: str | Path = "migrations", *, message: str = "Add flask-geneva tables"
    ) -> Path:
        """Write the flask-geneva revisions the app does not hold yet; return the last path.

        What ``flask geneva migration`` does: on a new app, the revision that creates the
        tables and each later one; on an app upgraded from an earlier release, only the
        revisions it lacks. Each goes into ``<directory>/versions`` after the current
        head; ``flask db upgrade`` applies them. ``message`` names the first one.

        :param directory: the Flask-Migrate folder.
        :raises GenevaError: the folder is missing (run ``flask db init``), it has several
            heads (run ``flask db merge heads``), or it already holds every revision.
        """
        from .migration import write_revision

        return write_revision(self, directory, message=message)
