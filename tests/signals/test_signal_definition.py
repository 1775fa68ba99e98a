"""``@step(wait_for=, timeout=, on_timeout=, matching=)``: checked at import, no database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import DefinitionError
from flask_geneva import Geneva
from flask_geneva import step


@pytest.fixture
def geneva() -> Geneva:
    """A fresh extension per test, so workflow class names never collide."""
    return Geneva(SQLAlchemy())


def define(geneva: Geneva, **options: Any) -> type[Any]:
    class Waits(geneva.Workflow):  # type: ignore[name-defined,misc]
        @step(**options)
        def record(self) -> None: ...

    return Waits


def test_a_step_that_waits_keeps_its_options(geneva: Geneva) -> None:
    cls = define(
        geneva, wait_for="settled", timeout=3600, on_timeout="run", matching=lambda p: True
    )
    definition = cls.step_graph().steps["record"]
    assert definition.wait_for == "settled"
    assert definition.timeout == timedelta(hours=1)
    assert definition.on_timeout == "run"
    assert cls.__geneva_definition__.waits is True


def test_defaults_wait_forever_and_pause_on_timeout(geneva: Geneva) -> None:
    definition = define(geneva, wait_for="settled").step_graph().steps["record"]
    assert (definition.timeout, definition.on_timeout, definition.matching) == (None, "pause", None)


def test_a_class_without_waiting_steps_reads_no_signals(geneva: Geneva) -> None:
    assert define(geneva).__geneva_definition__.waits is False


async def _async_matching(payload: Any) -> bool:
    return True


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"wait_for": ""}, "wait_for= must be a non-empty signal name"),
        ({"wait_for": "  "}, "wait_for= must be a non-empty signal name"),
        ({"wait_for": 3}, "wait_for= must be a non-empty signal name"),
        ({"wait_for": "x" * 192}, "at most 191 characters"),
        ({"wait_for": "s", "on_timeout": "explode"}, "invalid on_timeout 'explode'"),
        ({"timeout": 60}, "timeout= applies only to a step that waits"),
        ({"on_timeout": "skip"}, "on_timeout= applies only to a step that waits"),
        ({"matching": lambda p: True}, "matching= applies only to a step that waits"),
        ({"wait_for": "s", "timeout": -1}, "invalid timeout: .*non-negative"),
        ({"wait_for": "s", "timeout": "soon"}, "invalid timeout"),
        ({"wait_for": "s", "matching": "yes"}, "matching= must be a callable"),
        ({"wait_for": "s", "matching": _async_matching}, "invalid matching.*async function"),
    ],
)
def test_wrong_wait_options_fail_at_import_naming_the_step(
    geneva: Geneva, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(DefinitionError, match=match) as raised:
        define(geneva, **options)
    assert str(raised.value).startswith("Waits.record: ")
