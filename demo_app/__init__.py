"""The flask-geneva demo: four workflows (one scheduled), a fake bank, fault switches, the admin.

Run it with ``make demo`` (or ``python -m demo_app``): it starts the web app and a
worker and prints the URL. ``flask --app demo_app ...`` finds :func:`create_app`.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask import request

from . import fakes
from . import workflows  # noqa: F401  (registers the workflow classes)
from .models import BankDelays
from .models import BankSwitches
from .models import Switches
from .models import db
from .models import geneva
from .timing import TIME_SCALE

#: Where the admin is mounted.
ADMIN_PREFIX = "/admin/workflows"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the demo app; the first run creates its database in the instance folder.

    :param config: settings that override the embedded defaults. ``INSTANCE_PATH``
        (or the ``DEMO_INSTANCE_PATH`` environment variable, which the web and worker
        processes inherit) moves the instance folder; the tests use it.
    """
    config = dict(config or {})
    instance_path = config.pop("INSTANCE_PATH", None) or os.environ.get("DEMO_INSTANCE_PATH")
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(
        SECRET_KEY="demo-only-not-secret",
        # Both files are created in the instance folder on first run.
        SQLALCHEMY_DATABASE_URI="sqlite:///demo.db",
        GENEVA_HUEY="sqlite:///demo-huey.db",
        DEMO_TIME_SCALE=TIME_SCALE,
        # The fake bank posts its settlement webhook by itself after each charge.
        DEMO_BANK_POSTS=True,
        # The admin asks the app who may use it; the demo lets in this machine only.
        GENEVA_ADMIN_AUTHORIZE=local_requests_only,
    )
    app.config.update(config)
    db.init_app(app)
    geneva.init_app(app)
    _register_bank(app)
    _mount_admin(app)

    from .views import bp

    app.register_blueprint(bp)
    with app.app_context():
        db.create_all()  # the demo's own tables
        geneva.create_all()  # flask-geneva's two tables (use the migration in production)
        if db.session.get(Switches, 1) is None:
            # Every fault off: the walkthrough turns on the ones it shows.
            db.session.add(Switches(id=1, **fakes.DEFAULT_SWITCHES))
            db.session.commit()
        if db.session.get(BankSwitches, 1) is None:
            db.session.add(BankSwitches(id=1, duplicate_webhooks=False))
            db.session.commit()
        if db.session.get(BankDelays, 1) is None:
            db.session.add(BankDelays(id=1, bank_slow=False, bank_silent=False))
            db.session.commit()
    return app


def local_requests_only(action: str) -> bool:
    """Allow every admin action to requests from this machine (a demo, not a policy)."""
    return request.remote_addr in ("127.0.0.1", "::1")


def _register_bank(app: Flask) -> None:
    """Give the fake bank its own task on the app's Huey: the worker runs it at the due time.

    The bank is outside every workflow, so it is not a step: the gateway schedules this
    message when it records a charge (:func:`~demo_app.fakes.bank_posts_later`).
    """
    huey = app.extensions["geneva"].huey

    @huey.task(name=fakes.BANK_TASK, retries=0)  # type: ignore[untyped-decorator]
    def bank_posts_settlement(idempotency_key: str, reference: str) -> None:
        with app.app_context():
            fakes.bank_posts_settlement(idempotency_key, reference)

    app.extensions["demo_bank"] = bank_posts_settlement


def _mount_admin(app: Flask) -> None:
    try:
        blueprint = geneva.admin_blueprint
    except ImportError:
        app.logger.warning("flask_geneva.admin is not available; the demo runs without it")
        return
    app.register_blueprint(blueprint, url_prefix=ADMIN_PREFIX)
