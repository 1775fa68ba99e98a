"""DAG execution: fan-out, joins, and what a pause, cancel or finish does to branches.

Executions are run by the real executor, some on worker threads held inside their
body by a gate, so "while a step is running" is a real, observable moment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import Geneva
from flask_geneva import executor
from flask_geneva import step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)

TIMEOUT = 30  # generous: a loaded CI machine must not turn a race test flaky


class Gate:
    """Holds a step body until the test releases it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def pass_through(self) -> None:
        self.entered.set()
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("the test never released the gate")


GATES: dict[str, Gate] = {}
FAILING: set[str] = set()
RAN: list[str] = []


def body(name: str) -> None:
    RAN.append(name)
    gate = GATES.get(name)
    if gate is not None:
        gate.pass_through()
    if name in FAILING:
        raise RuntimeError(f"{name} failed")


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    GATES.clear()
    FAILING.clear()
    RAN.clear()
    yield
    for gate in GATES.values():
        gate.release.set()


class FanWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def start(self) -> None:
        body("start")

    @step(after=[])
    def audit(self) -> None:
        body("audit")

    @step(after="start")
    def left(self) -> None:
        body("left")

    @step(after="start")
    def right(self) -> None:
        body("right")

    @step(after=["left", "right", "audit"])
    def join(self) -> None:
        body("join")


class SkipWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def start(self) -> None:
        body("start")

    @step(after="start", skip_if=True)
    def optional(self) -> None:
        body("optional")

    @step(after="start")
    def required(self) -> None:
        body("required")

    @step(after=["optional", "required"])
    def join(self) -> None:
        body("join")


class BranchWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    """start → {slow → after_slow, other → after_other}; the two tails join in ``join``."""

    @step
    def start(self) -> None:
        body("start")

    @step(after="start")
    def slow(self) -> None:
        body("slow")

    @step(after="slow")
    def after_slow(self) -> None:
        body("after_slow")

    @step(after="start")
    def other(self) -> None:
        body("other")

    @step(after="other")
    def after_other(self) -> None:
        body("after_other")

    @step(after=["after_slow", "after_other"])
    def join(self) -> None:
        body("join")


class FinishWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def start(self) -> None:
        body("start")

    @step(after="start")
    def decide(self) -> None:
        body("decide")
        self.finish()

    @step(after="start")
    def sibling(self) -> None:
        body("sibling")

    @step(after=["decide", "sibling"])
    def join(self) -> None:
        body("join")


def branch(self: Any) -> None:
    body("branch")


class WideWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def start(self) -> None:
        body("start")

    branches = [step(branch, name=f"branch_{i}", after="start") for i in range(8)]

    @step(after=[f"branch_{i}" for i in range(8)])
    def join(self) -> None:
        body("join")


# -- helpers ---------------------------------------------------------------------------


committed = Committed(geneva)
rows = committed.history  # (step, state, outcome), oldest first, on a fresh connection
workflow_state = committed.state
scheduled = committed.scheduled  # step name → id of its scheduled execution


def run(app: Flask, workflow: Any, step_name: str) -> executor.ExecutionReport | None:
    """Run the scheduled execution of ``step_name`` on this thread."""
    return executor.execute(geneva, app.extensions["geneva"], scheduled(workflow)[step_name])


class StepThread(threading.Thread):
    """Runs one execution on a worker thread of its own, like a Huey worker would."""

    def __init__(self, app: Flask, execution_id: int) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.execution_id = execution_id
        self.report: executor.ExecutionReport | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.app.app_context():
                state = self.app.extensions["geneva"]
                self.report = executor.execute(geneva, state, self.execution_id)
        except BaseException as error:
            self.error = error

    def finish(self) -> executor.ExecutionReport | None:
        self.join(TIMEOUT)
        assert not self.is_alive(), "the step did not end in time"
        assert self.error is None, f"the worker thread raised {self.error!r}"
        return self.report


def start_held(app: Flask, workflow: Any, step_name: str) -> tuple[Gate, StepThread]:
    """Start ``step_name`` on a worker thread and wait until its body is running."""
    gate = GATES[step_name] = Gate()
    thread = StepThread(app, scheduled(workflow)[step_name])
    thread.start()
    assert gate.entered.wait(TIMEOUT), "the step body never started"
    return gate, thread


def queued_ids(huey: Any) -> list[int]:
    return [task.args[0] for task in huey.pending()]


# -- tests -----------------------------------------------------------------------------


def test_every_root_is_scheduled_at_creation_and_a_step_fans_out_to_all_its_successors(app, huey):
    workflow = FanWorkflow.create()
    assert sorted(scheduled(workflow)) == ["audit", "start"]
    assert sorted(queued_ids(huey)) == sorted(scheduled(workflow).values())

    run(app, workflow, "start")
    assert sorted(scheduled(workflow)) == ["audit", "left", "right"]


def test_a_join_starts_only_when_all_its_predecessors_are_completed(app, huey):
    workflow = FanWorkflow.create()
    run(app, workflow, "start")
    run(app, workflow, "left")
    assert "join" not in scheduled(workflow)
    run(app, workflow, "audit")
    assert "join" not in scheduled(workflow)
    assert workflow_state(workflow) == "ready"
    run(app, workflow, "right")
    assert "join" in scheduled(workflow)
    assert workflow_state(workflow) == "ready"

    run(app, workflow, "join")
    assert workflow_state(workflow) == "finished"
    assert [r for r in rows(workflow) if r[0] == "join"] == [("join", "completed", "success")]


def test_a_skipped_predecessor_counts_as_done_for_a_join(app, huey):
    workflow = SkipWorkflow.create()
    run(app, workflow, "start")
    run(app, workflow, "optional")
    assert ("optional", "skipped", "skipped") in rows(workflow)
    assert "join" not in scheduled(workflow)
    run(app, workflow, "required")
    run(app, workflow, "join")
    assert workflow_state(workflow) == "finished"
    assert "optional" not in RAN


def test_a_failing_branch_pauses_the_workflow_while_a_running_sibling_finishes_and_waits(app, huey):
    workflow = BranchWorkflow.create()
    run(app, workflow, "start")
    gate, slow = start_held(app, workflow, "slow")

    FAILING.add("other")
    run(app, workflow, "other")
    assert workflow_state(workflow) == "paused"
    assert ("other", "failed", "failed") in rows(workflow)

    huey.flush()
    gate.release.set()
    assert slow.finish().status == "ran"  # type: ignore[union-attr]
    assert ("slow", "completed", "success") in rows(workflow)
    # Its successor exists but is not triggered: nothing new starts while paused.
    assert workflow_state(workflow) == "paused"
    after_slow = scheduled(workflow)["after_slow"]
    assert queued_ids(huey) == []
    report = executor.execute(geneva, app.extensions["geneva"], after_slow)
    assert report is not None and report.status != "ran"
    assert "after_slow" not in RAN

    FAILING.clear()
    workflow.resume()
    assert sorted(queued_ids(huey)) == sorted(scheduled(workflow).values())
    assert sorted(scheduled(workflow)) == ["after_slow", "other"]
    speedrun(workflow)
    assert workflow_state(workflow) == "finished"
    assert RAN.count("after_slow") == 1 and RAN.count("join") == 1


def test_an_external_pause_lets_the_running_step_finish_and_triggers_nothing_until_resume(
    app, huey
):
    workflow = BranchWorkflow.create()
    run(app, workflow, "start")
    gate, slow = start_held(app, workflow, "slow")
    assert workflow_state(workflow) == "performing"

    workflow.pause()
    assert workflow_state(workflow) == "paused"
    huey.flush()
    gate.release.set()
    slow.finish()

    assert ("slow", "completed", "success") in rows(workflow)
    assert workflow_state(workflow) == "paused"
    assert queued_ids(huey) == []
    assert sorted(scheduled(workflow)) == ["after_slow", "other"]

    workflow.resume()
    assert sorted(queued_ids(huey)) == sorted(scheduled(workflow).values())
    speedrun(workflow)
    assert workflow_state(workflow) == "finished"


def test_an_external_cancel_lets_the_running_step_finish_and_never_schedules_more(app, huey):
    workflow = BranchWorkflow.create()
    run(app, workflow, "start")
    other = scheduled(workflow)["other"]
    gate, slow = start_held(app, workflow, "slow")

    workflow.cancel()
    huey.flush()
    gate.release.set()
    slow.finish()

    assert workflow_state(workflow) == "canceled"
    assert ("slow", "completed", "success") in rows(workflow)
    assert ("other", "canceled", "canceled") in rows(workflow)
    assert scheduled(workflow) == {}
    assert queued_ids(huey) == []
    # A trigger still in flight for the canceled sibling is a no-op.
    executor.execute(geneva, app.extensions["geneva"], other)
    assert "other" not in RAN and "after_slow" not in RAN


def test_finish_in_one_branch_cancels_the_scheduled_siblings_and_ends_the_workflow(app, huey):
    workflow = FinishWorkflow.create()
    run(app, workflow, "start")
    sibling = scheduled(workflow)["sibling"]
    run(app, workflow, "decide")

    assert workflow_state(workflow) == "finished"
    assert ("decide", "completed", "success") in rows(workflow)
    assert ("sibling", "canceled", "canceled") in rows(workflow)
    executor.execute(geneva, app.extensions["geneva"], sibling)
    assert "sibling" not in RAN and "join" not in RAN


def test_finish_in_one_branch_lets_a_running_sibling_end_without_scheduling_anything(app, huey):
    workflow = FinishWorkflow.create()
    run(app, workflow, "start")
    gate, sibling = start_held(app, workflow, "sibling")
    run(app, workflow, "decide")
    assert workflow_state(workflow) == "finished"

    gate.release.set()
    sibling.finish()
    assert ("sibling", "completed", "success") in rows(workflow)
    assert [r[0] for r in rows(workflow)].count("join") == 0
    assert workflow_state(workflow) == "finished"


def test_the_workflow_finishes_only_once_every_step_is_done(app, huey):
    workflow = BranchWorkflow.create()
    run(app, workflow, "start")
    run(app, workflow, "other")
    run(app, workflow, "after_other")
    gate, slow = start_held(app, workflow, "slow")
    assert workflow_state(workflow) == "performing"
    gate.release.set()
    slow.finish()
    assert workflow_state(workflow) == "ready"
    run(app, workflow, "after_slow")
    assert workflow_state(workflow) == "ready"
    run(app, workflow, "join")
    assert workflow_state(workflow) == "finished"


def test_eight_parallel_branches_run_on_eight_threads_and_join_once(app, huey):
    workflow = WideWorkflow.create()
    run(app, workflow, "start")
    branches = scheduled(workflow)
    assert sorted(branches) == sorted(f"branch_{i}" for i in range(8))

    barrier = threading.Barrier(8, timeout=TIMEOUT)
    threads = [StepThread(app, ident) for ident in branches.values()]

    def run_together(thread: StepThread) -> None:
        barrier.wait()
        StepThread.run(thread)

    for thread in threads:
        thread.run = lambda t=thread: run_together(t)  # type: ignore[method-assign]
        thread.start()
    reports = [thread.finish() for thread in threads]

    assert all(r is not None and r.status == "ran" for r in reports)
    assert RAN.count("branch") == 8
    assert [r for r in rows(workflow) if r[0] == "join"] == [("join", "scheduled", None)]
    run(app, workflow, "join")
    assert workflow_state(workflow) == "finished"
    assert len(rows(workflow)) == 10
