"""The ``Geneva`` extension: builds the models on ``db.Model`` and wires each app."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Flask
from flask import current_app
from sqlalchemy.engine import Engine

from . import tasks
from .config import DEFAULTS
from .config import GenevaConfig
from .config import make_huey
from .errors import DefinitionError
from .hero import HeroResolver
from .logging import logger
from .scheduling import Trigger
from .scheduling import install_session_hooks
from .store import Tables
from .transaction import configure_sqlite
from .transaction import track_writes
from .workflow import build_models


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
        self.tables = Tables(Workflow.__table__, StepExecution.__table__)
        if app is not None:
            self.init_app(app)

    def register(self, cls: type[Any], identity: str) -> None:
        """Record a workflow class under its stored identity (called at class creation)."""
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
        with app.app_context():
            for engine in self.db.engines.values():
                configure_sqlite(engine)
                track_writes(engine)
        install_session_hooks(self.db.session)

        from .cli import geneva_cli

        app.cli.add_command(geneva_cli)

    def get_state(self) -> GenevaState:
        """Return the current app's state.

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
        """Create the two tables if missing (quick starts; use the migration in production)."""
        self.db.metadata.create_all(
            bind=self.engine(), tables=[self.tables.workflows, self.tables.executions]
        )

    def drop_all(self) -> None:
        """Drop the two tables (tests and demos)."""
        self.db.metadata.drop_all(
            bind=self.engine(), tables=[self.tables.workflows, self.tables.executions]
        )

    @property
    def huey(self) -> Any:
        """The current app's Huey instance."""
        return self.get_state().huey

    @property
    def admin_blueprint(self) -> Any:
        """The admin blueprint; mount it with ``app.register_blueprint(...)``."""
        from .admin import make_blueprint

        return make_blueprint(self)
