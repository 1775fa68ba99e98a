"""The admin blueprint: the browser console for workflows (server-rendered, htmx).

Mount it with one line::

    app.register_blueprint(geneva.admin_blueprint, url_prefix="/admin/workflows")

Who may use it is decided by ``GENEVA_ADMIN_AUTHORIZE`` (see
:mod:`flask_geneva.admin.security`); every state change is a POST with a CSRF token.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING
from typing import Any

from flask import Blueprint
from flask import Response
from flask import url_for

from ..config import check_admin_settings
from . import actions
from . import definitions
from . import errors
from . import fleet
from . import metrics_view
from . import present
from . import reruns
from . import security
from . import views
from .source import stylesheet

if TYPE_CHECKING:
    from ..extension import Geneva

#: The vendored htmx (the version is in the name so browsers never cache a stale one).
HTMX_FILE = "geneva/htmx-2.0.11.min.js"


def make_blueprint(ext: Geneva) -> Blueprint:
    """Return a new admin blueprint for ``ext`` (name ``geneva``, default prefix ``/geneva``).

    :attr:`Geneva.admin_blueprint <flask_geneva.Geneva.admin_blueprint>` calls it once per
    ``Geneva`` and hands out that one blueprint; users never call this.

    Templates live under ``flask_geneva/templates/geneva/`` (an app may override one on
    purpose by putting a file with the same path in its own templates folder), static
    files under ``flask_geneva/static/geneva/``.
    """
    bp = Blueprint(
        "geneva",
        "flask_geneva",
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
        url_prefix="/geneva",
    )
    bp.record(lambda state: check_admin_settings(state.app.config))
    bp.before_request(security.guard)
    bp.after_request(security.add_security_headers)
    errors.register(bp)

    @bp.context_processor
    def helpers() -> dict[str, Any]:
        return {
            "csrf_token": security.csrf_token,
            "csrf_header": security.CSRF_HEADER,
            "htmx_url": lambda: url_for("geneva.static", filename=HTMX_FILE),
            "duration": present.duration,
            "clock_time": present.clock_time,
            "relative": present.relative,
            "digest": _digest,
        }

    @bp.get("/source.css")
    def source_css() -> Response:
        return Response(
            stylesheet(), mimetype="text/css", headers={"Cache-Control": "max-age=3600"}
        )

    views.register(bp, ext)
    actions.register(bp, ext)
    reruns.register(bp, ext)
    definitions.register(bp, ext)
    fleet.register(bp, ext)
    metrics_view.register(bp, ext)
    return bp


def _digest(html: str) -> str:
    return hashlib.blake2b(str(html).encode(), digest_size=8).hexdigest()
