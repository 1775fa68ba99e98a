"""The admin's error pages: 400, 403, 404 and 405 in the admin's own look.

Flask's default error page is a bare line of HTML. Inside the admin an operator gets
the status, what went wrong in words (the ``description`` each ``abort()`` gives), and
the way back. An htmx request gets only the message, as a flash, with the same status.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask import render_template
from werkzeug.exceptions import HTTPException

from .htmx import is_htmx

#: The statuses the admin renders itself, with a title each.
TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
}


def register(bp: Blueprint) -> None:
    """Render the blueprint's 400/403/404/405 answers with the admin's templates."""
    for status in TITLES:
        bp.register_error_handler(status, _page)


def _page(error: HTTPException) -> Any:
    status = error.code or 500
    template = "geneva/_partials/error_message.html" if is_htmx() else "geneva/error_page.html"
    body = render_template(
        template,
        status=status,
        title=TITLES.get(status, error.name),
        message=error.description,
        bare=True,  # no session needed: a scraper or an app without SECRET_KEY gets it too
    )
    return body, status
