"""A lost Huey trigger, end to end: housekeeping sends it again and a real consumer runs it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import running_consumer

from flask_geneva import Geneva
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class LostTriggerWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        pass

    @step
    def second(self) -> None:
        pass


@pytest.fixture
def huey_url(tmp_path: Path) -> str:
    """A SqliteHuey queue: a real storage that a consumer polls."""
    return f"sqlite:///{tmp_path / 'huey.db'}"


@pytest.fixture
def start_consumer(app: Flask, huey: Any) -> Iterator[Any]:
    """Start a real Huey consumer (worker threads) for the app; stopped after the test."""
    with ExitStack() as consumers:

        def start() -> None:
            consumers.enter_context(running_consumer(huey, workers=2, periodic=False))

        yield start


def wait_for_state(workflow: Any, state: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        db.session.rollback()
        db.session.refresh(workflow)
        if workflow.state == state or time.monotonic() > deadline:
            return str(workflow.state)
        time.sleep(0.05)


def test_a_workflow_whose_trigger_was_flushed_finishes_after_housekeeping(
    app, huey, start_consumer
):
    workflow = LostTriggerWorkflow.create()
    assert huey.pending_count() == 1
    huey.flush()  # the queue loses the trigger
    start_consumer()
    assert wait_for_state(workflow, "finished", timeout=0.5) == "ready"  # stuck
    with travel(timedelta(minutes=16)):
        summary = housekeeping.run(geneva)
        assert summary.retriggered == 1
        assert wait_for_state(workflow, "finished", timeout=15) == "finished"
    assert [(x.step_name, x.state) for x in workflow.executions] == [
        ("first", "completed"),
        ("second", "completed"),
    ]
