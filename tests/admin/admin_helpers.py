"""Helpers for the admin tests: where the admin is mounted, CSRF tokens, htmx posts."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

PREFIX = "/admin/workflows"
_TOKEN = re.compile(r'"X-CSRFToken": "([^"]+)"')


def csrf_token(client: FlaskClient, headers: dict[str, str] | None = None) -> str:
    """Open the overview (which issues the session's token) and return the token."""
    response = client.get(f"{PREFIX}/", headers=headers or {})
    assert response.status_code == 200, response.text
    match = _TOKEN.search(response.text)
    assert match, "the page carries no CSRF token in hx-headers"
    return match.group(1)


def hx_post(client: FlaskClient, path: str, **kwargs: Any) -> Any:
    """POST like htmx does: HX-Request and the CSRF header, same-origin."""
    extra = kwargs.pop("headers", {})
    headers = {
        "HX-Request": "true",
        "X-CSRFToken": csrf_token(client, extra),
        "Sec-Fetch-Site": "same-origin",
    }
    headers.update(extra)
    return client.post(f"{PREFIX}{path}", headers=headers, **kwargs)
