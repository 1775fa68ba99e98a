"""The admin's ``GET /metrics``: :func:`~flask_geneva.metrics.collect` in the Prometheus
text format, for a scraper.

Opt-in: the route exists only on apps whose ``GENEVA_ADMIN_METRICS`` is true when the
blueprint is registered (elsewhere ``/metrics`` is a 404). It is a page of the admin,
so the blueprint's guard runs first: ``GENEVA_ADMIN_AUTHORIZE`` is asked for the
action ``"view"``, as for every other GET; a hook can tell the scraper's requests from
a browser's by ``request.endpoint == "geneva.metrics"`` (see ``docs/metrics.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint
from flask import Response
from flask.sansio.blueprints import BlueprintSetupState

from .. import metrics

if TYPE_CHECKING:
    from ..extension import Geneva

#: The config key that turns the endpoint on.
ENABLE_KEY = "GENEVA_ADMIN_METRICS"
#: The endpoint's name within the blueprint (``geneva.metrics`` in ``url_for``).
ENDPOINT = "metrics"


def register(bp: Blueprint, ext: Geneva) -> None:
    """Add ``GET /metrics`` to each app that registers ``bp`` with the setting on."""

    def prometheus() -> Response:
        text = metrics.render_prometheus(metrics.collect(ext))
        return Response(text, content_type=metrics.CONTENT_TYPE)

    def setup(state: BlueprintSetupState) -> None:
        if state.app.config.get(ENABLE_KEY, False):
            state.add_url_rule("/metrics", ENDPOINT, prometheus, methods=["GET"])

    bp.record(setup)
