"""Reattempt backoff (SPEC 13): ``ExceptionPolicy("reattempt", wait=...)`` with a strategy.

The strategies' bounds as pure functions; the checks made when a policy is made; then,
on each database, the due times the executor gives the reattempts of a failing step
(the test clock travels to each one), and a callable wait that fails, which pauses the
workflow with an error that says so, in the executor and in a real Huey worker.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Rows
from helpers import running_consumer
from helpers import wait_until

from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.backoff import EXPONENTIAL_CAP
from flask_geneva.backoff import JITTER
from flask_geneva.backoff import exponential
from flask_geneva.backoff import polynomial
from flask_geneva.policy import MAX_WAIT
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)
rows = Rows(db, geneva)

#: A draw as close to 1 as random.random() returns: the largest jitter.
HIGHEST = math.nextafter(1.0, 0.0)
#: Microsecond rounding (a timedelta, a DATETIME(6) column) on either side of a bound.
SLACK = 1e-5


def exponential_bounds(n: int) -> tuple[float, float]:
    cap = EXPONENTIAL_CAP.total_seconds()
    return min(2.0**n, cap), min(2.0**n * (1 + JITTER), cap)


def polynomial_bounds(n: int) -> tuple[float, float]:
    return n**4 + 2.0, n**4 * (1 + JITTER) + 2.0


BOUNDS = {"exponential": exponential_bounds, "polynomial": polynomial_bounds}
STRATEGIES = {"exponential": exponential, "polynomial": polynomial}


def within(seconds: float, bounds: tuple[float, float]) -> bool:
    low, high = bounds
    return low - SLACK <= seconds <= high + SLACK


# -- the strategies as pure functions ----------------------------------------------------


@pytest.mark.parametrize("name", ["exponential", "polynomial"])
def test_each_delay_lies_between_the_nominal_one_and_15_percent_more(name: str) -> None:
    strategy, bounds = STRATEGIES[name], BOUNDS[name]
    draws = random.Random(13)
    for n in range(1, 21):
        low, high = bounds(n)
        assert strategy(n, lambda: 0.0).total_seconds() == pytest.approx(low)
        assert strategy(n, lambda: HIGHEST).total_seconds() == pytest.approx(high)
        delays = [strategy(n, draws.random).total_seconds() for _ in range(200)]
        assert all(within(d, (low, high)) for d in delays), (n, min(delays), max(delays))
        # With the module's own random draws too (what the executor uses).
        assert within(strategy(n).total_seconds(), (low, high)), n
        if low < high:  # below the cap the jitter spreads the delays
            assert len(set(delays)) > 100, n


def test_exponential_doubles_then_stays_at_one_hour() -> None:
    nominal = [exponential(n, lambda: 0.0).total_seconds() for n in range(1, 21)]
    assert nominal[:11] == [2.0**n for n in range(1, 12)]
    assert nominal[11:] == [3600.0] * 9  # 2 ** 12 s is over an hour
    # Even the largest jitter never passes the cap, and the last doubling under it stays under.
    assert exponential(11, lambda: HIGHEST) < EXPONENTIAL_CAP
    assert all(exponential(n, lambda: HIGHEST) == EXPONENTIAL_CAP for n in range(12, 21))
    # A limitless policy counts on: any n gives a delay, never an overflow.
    assert exponential(10**6) == EXPONENTIAL_CAP


def test_polynomial_grows_as_n_to_the_fourth_and_stays_within_a_century() -> None:
    nominal = [polynomial(n, lambda: 0.0).total_seconds() for n in range(1, 6)]
    assert nominal == [3.0, 18.0, 83.0, 258.0, 627.0]
    assert polynomial(20, lambda: 0.0) == timedelta(seconds=160_002)  # about 1.9 days
    # The 100-year limit every due time keeps: reached with the largest jitter at
    # n = 229, without jitter at n = 238; beyond, the delay stays at the limit.
    assert polynomial(228, lambda: HIGHEST) < MAX_WAIT == polynomial(229, lambda: HIGHEST)
    assert polynomial(237, lambda: 0.0) < MAX_WAIT == polynomial(238, lambda: 0.0)
    assert polynomial(10**9) == MAX_WAIT


# -- checked when the policy is made ------------------------------------------------------


def test_a_strategy_is_kept_by_name_and_shown_by_name() -> None:
    policy = ExceptionPolicy("reattempt", wait="exponential", max_reattempts=8)
    assert policy.wait == "exponential"
    assert repr(policy) == (
        "ExceptionPolicy('reattempt', wait='exponential', max_reattempts=8, "
        "terminal_action='pause')"
    )
    assert within(policy.delay(3).total_seconds(), exponential_bounds(3))
    assert ExceptionPolicy("reattempt", wait="polynomial").wait == "polynomial"
    # A constant stays a timedelta, the same for every attempt.
    constant = ExceptionPolicy("reattempt", wait=30)
    assert constant.wait == timedelta(seconds=30)
    assert {constant.delay(n) for n in (1, 2, 50)} == {timedelta(seconds=30)}


def test_a_callable_wait_is_kept_and_given_the_attempt_number() -> None:
    def linear(attempt: int) -> int:
        return 10 * attempt

    policy = ExceptionPolicy("reattempt", wait=linear)
    assert policy.wait is linear
    assert "wait=<function" in repr(policy) and "linear" in repr(policy)
    assert [policy.delay(n) for n in (1, 2, 3)] == [timedelta(seconds=s) for s in (10, 20, 30)]
    by_timedelta = ExceptionPolicy("reattempt", wait=lambda n: timedelta(minutes=n))
    assert by_timedelta.delay(4) == timedelta(minutes=4)


def test_an_unknown_strategy_fails_the_class_definition_naming_the_known_ones() -> None:
    known = r"a backoff strategy is one of 'exponential', 'polynomial'"
    with pytest.raises(ValueError, match=rf"^invalid wait value 'exponentail': {known}"):

        class Typo(geneva.Workflow):  # type: ignore[name-defined,misc]
            on_exception = ExceptionPolicy("reattempt", wait="exponentail")

    with pytest.raises(ValueError, match=rf"'Exponential': {known}"):

        class OnTheStep(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step(on_exception=ExceptionPolicy("reattempt", wait="Exponential"))
            def call(self) -> None: ...


async def _async_wait(attempt: int) -> int:
    return attempt


def _generator_wait(attempt: int) -> Any:
    yield attempt


@pytest.mark.parametrize(
    ("wait", "message"),
    [
        (lambda: 30, "called with the attempt number .* cannot take it"),
        (lambda attempt, other: 30, "called with the attempt number .* cannot take it"),
        (_async_wait, "an async function .* only make a coroutine, not a wait"),
        (_generator_wait, "a generator function .* only make a generator, not a wait"),
        (object(), "expected a timedelta or a number of seconds, a backoff strategy"),
        (-1, "must be non-negative"),
        (float("nan"), "finite number of seconds"),
        (timedelta(days=36526), "a wait is at most 100 years"),
    ],
)
def test_a_wait_no_reattempt_could_use_is_refused_when_the_policy_is_made(
    wait: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ExceptionPolicy("reattempt", wait=wait)


def test_strategies_are_refused_where_no_reattempt_is_counted() -> None:
    with pytest.raises(ValueError, match="only to the 'reattempt' action"):
        ExceptionPolicy("pause", wait="exponential")
    with pytest.raises(ValueError, match="the handler decides"):
        ExceptionPolicy(handler=lambda workflow, error: None, wait="polynomial")


# -- the executor's due times, on each database -------------------------------------------


class Unreachable(ConnectionError):
    pass


def failing_call(workflow: Any) -> None:
    raise Unreachable("upstream down")


def _backing_off(name: str, wait: Any, max_reattempts: int = 5) -> Any:
    policy = ExceptionPolicy("reattempt", wait=wait, max_reattempts=max_reattempts)
    namespace = {"call": step(on_exception=policy)(failing_call)}
    return type(name, (geneva.Workflow,), namespace)


BACKING_OFF = {name: _backing_off(f"BacksOff_{name}", name) for name in BOUNDS}


def run_due(app: Flask, workflow: Any) -> Any:
    """Run the step's scheduled execution as a worker would: only once it is due."""
    return rows.run(app, workflow, "call")


def reattempt_delay(workflow: Any) -> timedelta:
    """The last failure's end to the due time of the reattempt it scheduled."""
    *_, ended, again = rows.executions(workflow, "call")
    assert (ended.state, ended.outcome) == ("completed", "reattempted")
    assert again.state == "scheduled"
    assert ended.finished_at is not None
    return again.scheduled_for - ended.finished_at


@pytest.mark.parametrize("name", ["exponential", "polynomial"])
def test_reattempts_are_due_later_and_later_within_the_strategy_s_bounds(
    app: Flask, name: str
) -> None:
    bounds = BOUNDS[name]
    workflow = BACKING_OFF[name].create()
    delays: list[float] = []
    with ExitStack() as stack:
        for n in range(1, 6):
            report = run_due(app, workflow)
            assert isinstance(report.error, Unreachable)
            delay = reattempt_delay(workflow)
            assert within(delay.total_seconds(), bounds(n)), (n, delay)
            delays.append(delay.total_seconds())
            # Not before its time: a worker that gets it early leaves it scheduled...
            assert run_due(app, workflow).status == "deferred"
            assert len(rows.executions(workflow, "call")) == n + 1
            # ... and runs it once the clock has reached the due time.
            stack.enter_context(travel(delay + timedelta(seconds=1)))
        run_due(app, workflow)  # the sixth failure: the limit (5) is reached
        assert workflow.state == "paused"
        assert [e.consecutive_reattempts for e in rows.executions(workflow)] == [0, 1, 2, 3, 4, 5]
        assert delays == sorted(delays) and len(set(delays)) == 5
        # An operator's resume starts the count, and so the backoff, again at n = 1.
        workflow.resume()
        run_due(app, workflow)
        assert within(reattempt_delay(workflow).total_seconds(), bounds(1))


# -- a callable wait that fails ---------------------------------------------------------


def _raises(attempt: int) -> Any:
    raise RuntimeError(f"no wait for attempt {attempt}")


#: What a buggy wait callable does at attempt 2 (attempt 1 gets 30 s), and the error
#: the paused execution keeps: its class and what the message says about the value.
GARBAGE: dict[str, tuple[Callable[[int], Any], str, str]] = {
    "negative": (lambda n: -5, "ValueError", "returned an invalid wait value -5: it must be"),
    "nan": (lambda n: math.nan, "ValueError", "invalid wait value nan: it must be a finite"),
    "text": (lambda n: "soon", "TypeError", "invalid wait value 'soon': expected a timedelta"),
    "nothing": (lambda n: None, "TypeError", "returned an invalid wait value None"),
    "millennium": (
        lambda n: timedelta(days=365_000),
        "ValueError",
        "a wait is at most 100 years",
    ),
    "raises": (_raises, "RuntimeError", "no wait for attempt 2"),
}


def _good_then(bad: Callable[[int], Any], seen: list[int]) -> Callable[[int], Any]:
    def wait(attempt: int) -> Any:
        seen.append(attempt)
        return 30 if attempt == 1 else bad(attempt)

    return wait


SEEN: dict[str, list[int]] = {kind: [] for kind in GARBAGE}
BAD_WAITS = {
    kind: _backing_off(f"BadWait_{kind}", _good_then(bad, SEEN[kind]), max_reattempts=10)
    for kind, (bad, _, _) in GARBAGE.items()
}


def test_a_callable_wait_that_fails_pauses_the_workflow_with_a_clear_error(app: Flask) -> None:
    for kind, (_, error_class, says) in GARBAGE.items():
        SEEN[kind].clear()
        workflow = BAD_WAITS[kind].create()
        run_due(app, workflow)
        assert 29 <= reattempt_delay(workflow).total_seconds() <= 31, kind
        with travel(timedelta(seconds=31)):
            report = run_due(app, workflow)
        assert isinstance(report.error, Unreachable), kind  # the step's error is reported
        assert SEEN[kind] == [1, 2], kind
        assert workflow.state == "paused", kind
        *_, failed = rows.executions(workflow)
        assert (failed.state, failed.outcome) == ("failed", "failed"), kind
        assert failed.error_class == error_class, kind
        message = failed.error_message
        assert message.startswith("the reattempt policy's wait failed for reattempt 2: "), kind
        assert says in message, (kind, message)
        assert "workflow paused instead of reattempting" in message, kind
        assert message.endswith(f"The step's error was {__name__}.Unreachable: upstream down")
        # The traceback shows the step's error, then the wait's.
        trace = failed.error_traceback
        assert trace.index("Unreachable: upstream down") < trace.index("While choosing")
        assert not [e for e in rows.executions(workflow) if e.state == "scheduled"], kind


class StepBacksOffItself(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def poll(self) -> None:
        self.reattempt(wait="exponential")  # type: ignore[arg-type]


def test_self_reattempt_takes_durations_only_and_says_where_strategies_go(app: Flask) -> None:
    workflow = StepBacksOffItself.create()
    report = rows.run(app, workflow, "poll")
    assert isinstance(report.error, TypeError)
    assert workflow.state == "paused"
    (failed,) = rows.executions(workflow)
    assert failed.error_message.startswith(
        "reattempt(wait=...) was given an invalid wait value 'exponential'"
    )
    assert "are for ExceptionPolicy(wait=...), which counts the attempts" in failed.error_message


# -- in a real worker --------------------------------------------------------------------


class Healthy(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def work(self) -> None:
        pass


RaisingWait = _backing_off("RaisingWait", _raises)


def committed_state(workflow_id: int) -> str:
    w = geneva.tables.workflows
    with geneva.engine().connect() as conn:
        return str(conn.execute(sa.select(w.c.state).where(w.c.id == workflow_id)).scalar_one())


@pytest.mark.slow
def test_a_worker_pauses_on_a_failing_wait_and_goes_on_working(app: Flask, huey: Any) -> None:
    with running_consumer(huey, workers=2, periodic=False):
        broken = RaisingWait.create().id
        db.session.commit()
        wait_until(lambda: committed_state(broken) == "paused")
        # The same worker runs the next workflow: the failing wait crashed nothing.
        healthy = Healthy.create().id
        db.session.commit()
        wait_until(lambda: committed_state(healthy) == "finished")
    *_, failed = rows.executions(broken)
    assert (failed.state, failed.outcome) == ("failed", "failed")
    assert failed.error_class == "RuntimeError"
    assert "wait failed for reattempt 1: no wait for attempt 1" in failed.error_message
    assert len(rows.executions(broken)) == 1  # one run, no reattempt loop
