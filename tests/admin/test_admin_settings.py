"""Wrong admin settings fail at ``init_app`` (and when the blueprint is registered), with a
message that names the setting, as ``docs/config.md`` promises."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import ConfigurationError
from flask_geneva import Geneva

db = SQLAlchemy()
geneva = Geneva(db)


def _app(tmp_path: Path, **settings: Any) -> tuple[Flask, SQLAlchemy]:
    """An app on a fresh ``SQLAlchemy`` (each ``Geneva`` defines its models on one)."""
    app = Flask("settings", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'settings.db'}",
        GENEVA_HUEY="memory://",
        **settings,
    )
    fresh = SQLAlchemy()
    fresh.init_app(app)
    return app, fresh


def _init_fails(tmp_path: Path, **settings: Any) -> str:
    app, fresh = _app(tmp_path, **settings)
    with pytest.raises(ConfigurationError) as raised:
        Geneva(fresh).init_app(app)
    return str(raised.value)


@pytest.mark.parametrize("value", ["admin", 42, True, ["view"]])
def test_an_authorize_hook_that_is_not_callable_fails_at_init_app(tmp_path, value):
    message = _init_fails(tmp_path, GENEVA_ADMIN_AUTHORIZE=value)
    assert message == (
        f"GENEVA_ADMIN_AUTHORIZE must be a function (action) -> bool, or None, got {value!r}"
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://logs/?q={workflow}", "unknown placeholder {workflow}"),
        ("https://logs/?q={}", "unknown placeholder {}"),
        ("https://logs/?q={0}", "unknown placeholder {0}"),
        ("https://logs/?q={hero_id.__class__}", "unknown placeholder {hero_id.__class__}"),
        ("https://logs/?q={workflow_id", "is not a valid template"),
        ("https://logs/?q=}", "is not a valid template"),
        ("https://logs/?q={workflow_id:d}", "is not a valid template"),
        ("https://logs/?q={step!z}", "is not a valid template"),
        ("javascript:alert({workflow_id})", "must start with http://, https:// or /"),
        (b"https://logs/", "must be a URL template (str) or None"),
    ],
)
def test_a_bad_logs_url_template_fails_at_init_app(tmp_path, template, expected):
    message = _init_fails(tmp_path, GENEVA_ADMIN_LOGS_URL=template)
    assert message.startswith("GENEVA_ADMIN_LOGS_URL"), message
    assert expected in message, message


@pytest.mark.parametrize("value", ["3s", "3", 0, -1, 0.0, timedelta(0), True, float("nan"), None])
def test_a_poll_interval_that_is_not_a_positive_duration_fails_at_init_app(tmp_path, value):
    message = _init_fails(tmp_path, GENEVA_ADMIN_POLL_INTERVAL=value)
    assert message == (
        "GENEVA_ADMIN_POLL_INTERVAL must be a positive number of seconds or a timedelta, "
        f"got {value!r}"
    )


def test_good_admin_settings_pass_init_app(tmp_path):
    app, fresh = _app(
        tmp_path,
        GENEVA_ADMIN_AUTHORIZE=lambda action: action == "view",
        GENEVA_ADMIN_LOGS_URL="https://logs.example.com/?q={workflow_id}+{{literal}}&s={step:>4}",
        GENEVA_ADMIN_POLL_INTERVAL=timedelta(seconds=1.5),
    )
    Geneva(fresh).init_app(app)
    (tmp_path / "other").mkdir()
    other, other_db = _app(tmp_path / "other", GENEVA_ADMIN_LOGS_URL="/logs/{execution_id}")
    other.config["GENEVA_ADMIN_POLL_INTERVAL"] = 0.25
    Geneva(other_db).init_app(other)


def test_a_setting_spoiled_after_init_app_fails_when_the_blueprint_is_registered(tmp_path):
    app = Flask("spoiled", instance_path=str(tmp_path / "instance"))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'spoiled.db'}", GENEVA_HUEY="memory://"
    )
    db.init_app(app)
    geneva.init_app(app)
    app.config["GENEVA_ADMIN_POLL_INTERVAL"] = "3s"
    with pytest.raises(ConfigurationError, match="GENEVA_ADMIN_POLL_INTERVAL"):
        app.register_blueprint(geneva.admin_blueprint)
