"""htmx request/response helpers: detect htmx, answer polls, stop polling with 286."""

from __future__ import annotations

from flask import Response
from flask import request

#: htmx stops an ``hx-trigger="every ..."`` poll when a response has this status.
STOP_POLLING = 286


def is_htmx() -> bool:
    """Return whether the current request was sent by htmx (``HX-Request: true``)."""
    return request.headers.get("HX-Request") == "true"


def client_digests() -> dict[str, str]:
    """Return the fragment digests a poll sent back (``h_<fragment>=<digest>`` fields).

    Every fragment carries the digest of its own HTML in a hidden input; the poller
    includes them, so the server can answer with only the fragments that changed.
    """
    return {
        key[2:]: value for key, value in request.values.items() if key.startswith("h_") and value
    }


def poll_response(html: str, *, ongoing: bool) -> Response:
    """Answer a poll: 204 when nothing changed, 286 (stop) once nothing is ongoing.

    :param html: the out-of-band fragments that changed (may be empty).
    :param ongoing: whether anything on the page may still change.
    """
    if not ongoing:
        return Response(html, status=STOP_POLLING, mimetype="text/html")
    if not html.strip():
        return Response(status=204)
    return Response(html, mimetype="text/html")
