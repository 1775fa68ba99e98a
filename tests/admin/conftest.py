"""Admin fixtures: the blueprint mounted on the ``app`` fixture."""

from __future__ import annotations

import pytest
from admin_helpers import PREFIX
from flask import Flask
from flask.testing import FlaskClient


@pytest.fixture
def admin(app: Flask, request: pytest.FixtureRequest) -> FlaskClient:
    """A test client for an app with the admin mounted at ``/admin/workflows``."""
    app.register_blueprint(request.module.geneva.admin_blueprint, url_prefix=PREFIX)
    return app.test_client()
