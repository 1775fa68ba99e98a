"""Who may use the admin (the authorization hook) and CSRF / Sec-Fetch-Site checks.

Every request to the blueprint passes :func:`guard` first:

1. the authorization hook ``GENEVA_ADMIN_AUTHORIZE`` decides (``action`` is ``"view"``
   for GET, or the operation name: ``pause``, ``resume``, ``cancel``, ``skip``,
   ``reattempt``, ``rerun_from``, or ``signal`` for the send-signal form); when it
   answers with a string, that is the operator's name, recorded with every action the
   request takes (:func:`actor`); without a hook the admin is open only when the app
   runs with ``DEBUG`` or ``TESTING``, so a production deploy never exposes it
   anonymously;
2. a state-changing request (anything but GET/HEAD/OPTIONS) must come from the same
   origin when the browser says where it comes from (``Sec-Fetch-Site``) and must carry
   the session's CSRF token in the ``X-CSRFToken`` header (htmx) or the ``csrf_token``
   form field (plain forms).

Every response of the blueprint then gets :func:`add_security_headers`: it may not be
framed (clickjacking), the browser runs only scripts and styles served by this app
(``Content-Security-Policy``), never guesses a content type, and never stores a page
(they show heroes and error messages).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Any

from flask import Response
from flask import abort
from flask import current_app
from flask import g
from flask import request
from flask import session

#: Config key of the authorization hook: ``callable(action: str) -> bool | str``; a
#: string answer allows the request and names the operator (recorded with each action).
AUTHORIZE_KEY = "GENEVA_ADMIN_AUTHORIZE"
CSRF_SESSION_KEY = "_geneva_csrf"
CSRF_HEADER = "X-CSRFToken"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Sec-Fetch-Site values a state-changing request may have (``none``: typed/bookmarked).
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
#: The admin's Content-Security-Policy. Scripts and styles come from the app only: no
#: inline ``<script>``, ``on...=`` handler, ``<style>`` or ``style=`` anywhere in the
#: templates, and htmx is configured (``htmx-config`` in ``base.html``) not to inject
#: its indicator styles nor to evaluate code. No framing, no plugins, no ``<base>``;
#: forms post to the app only.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
#: Endpoints whose answers hold no data (files shipped with the package): they keep
#: their own caching, everything else is ``no-store``.
CACHEABLE_ENDPOINTS = frozenset({"geneva.static", "geneva.source_css"})


def requested_action() -> str:
    """Return what the current request wants to do: ``view`` or an operation name."""
    if request.method in SAFE_METHODS:
        return "view"
    operation = (request.view_args or {}).get("operation") or request.form.get("op")
    return str(operation) if operation else "act"


def authorize(action: str) -> None:
    """Abort with 403 unless the app's hook (or the default rule) allows ``action``."""
    hook: Callable[[str], Any] | None = current_app.config.get(AUTHORIZE_KEY)
    if hook is None:
        if current_app.debug or current_app.testing:
            return
        abort(
            403,
            description=(
                "The workflow admin is closed: set GENEVA_ADMIN_AUTHORIZE to a function "
                "(action) -> bool that says who may use it (it is open without one only "
                "when DEBUG or TESTING is on)."
            ),
        )
    if not callable(hook):
        raise TypeError(f"{AUTHORIZE_KEY} must be a callable taking the action name, got {hook!r}")
    allowed = hook(action)
    if not allowed:
        abort(403, description=f"You are not allowed to {action} workflows here.")
    # A hook that answers with a name (``return current_user.email``) says who acts:
    # the operator actions record it.
    if isinstance(allowed, str):
        g.geneva_actor = allowed


def actor() -> str | None:
    """Who gives the current request's command: the name the hook answered, if any."""
    found = g.get("geneva_actor")
    return found if isinstance(found, str) else None


def csrf_token() -> str:
    """Return this session's CSRF token, creating it on first use.

    :raises RuntimeError: when the app has no ``SECRET_KEY`` (sessions need one).
    """
    if not current_app.secret_key:
        raise RuntimeError(
            "The flask-geneva admin keeps its CSRF token in the session: set the app's SECRET_KEY."
        )
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def check_origin_and_token() -> None:
    """Abort with 403 if a state-changing request is cross-site or lacks the CSRF token."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ALLOWED_FETCH_SITES:
        abort(403, description=f"Cross-site request refused (Sec-Fetch-Site: {site}).")
    expected = session.get(CSRF_SESSION_KEY)
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        abort(
            403,
            description="Missing or wrong CSRF token: reload the page and try again.",
        )


def guard() -> None:
    """The blueprint's ``before_request``: authorize, then check state-changing requests."""
    authorize(requested_action())
    if request.method not in SAFE_METHODS:
        check_origin_and_token()


def add_security_headers(response: Response) -> Response:
    """The blueprint's ``after_request``: the headers every admin answer carries.

    Error answers (400, 403, 404, 500) pass here too. A header a view already set is
    kept; the app's own ``after_request`` functions run after this one.
    """
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint not in CACHEABLE_ENDPOINTS:
        response.headers["Cache-Control"] = "no-store"
    return response
