"""Definitions that used to be accepted and then failed at run time, now refused at import.

* A wait no due time can hold (``@step(wait=)``, ``ExceptionPolicy(wait=)``): it
  crashed the finalize that scheduled the step, and the step before it ran again and
  again.
* A step or a condition that does not run when called (``async def``, a generator): an
  async step was recorded as succeeded without running, an async ``skip_if`` always
  skipped.
* A stored identity the ``type`` column cannot hold, or one that is no identity (empty,
  the base class's): accepted, then ``create()`` failed on PostgreSQL and MariaDB, or
  the base class's rows loaded as the impostor.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import DefinitionError
from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.flow import ReattemptSignal
from flask_geneva.policy import MAX_WAIT
from flask_geneva.policy import to_wait


@pytest.fixture
def geneva() -> Geneva:
    """A fresh extension per test, so workflow class names never collide."""
    return Geneva(SQLAlchemy())


# -- waits -----------------------------------------------------------------------------

#: Waits whose due time no date holds, or that are no wait, and words of the message.
BAD_WAITS = [
    pytest.param(timedelta(days=10**6), "at most 100 years", id="ten_thousand_centuries"),
    pytest.param(1e12, "at most 100 years", id="a_trillion_seconds"),
    pytest.param(10**30, "at most 100 years", id="an_integer_no_timedelta_holds"),
    pytest.param(MAX_WAIT + timedelta(seconds=1), "at most 100 years", id="just_over_the_max"),
    pytest.param(float("inf"), "finite number of seconds", id="infinity"),
    pytest.param(float("-inf"), "finite number of seconds", id="minus_infinity"),
    pytest.param(float("nan"), "finite number of seconds", id="nan"),
    pytest.param(-1, "non-negative", id="negative"),
    pytest.param(timedelta(microseconds=-1), "non-negative", id="a_negative_microsecond"),
]


@pytest.mark.parametrize(("wait", "message"), BAD_WAITS)
def test_a_step_wait_no_due_time_can_hold_is_a_definition_error(
    geneva: Geneva, wait: Any, message: str
) -> None:
    with pytest.raises(DefinitionError) as info:

        class Forever(geneva.Workflow):
            @step
            def first(self) -> None: ...

            @step(wait=wait)
            def later(self) -> None: ...

    assert str(info.value).startswith(f"Forever.later: invalid wait value {wait!r}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(("wait", "message"), BAD_WAITS)
def test_a_policy_wait_no_due_time_can_hold_is_refused(wait: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExceptionPolicy("reattempt", wait=wait)


@pytest.mark.parametrize(("wait", "message"), BAD_WAITS)
def test_a_reattempt_signal_with_such_a_wait_raises_an_ordinary_exception(
    wait: Any, message: str
) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        raise ReattemptSignal(wait)
    assert str(info.value).startswith("reattempt(wait=...) was given an invalid wait value")
    assert message in str(info.value)


def test_the_longest_wait_is_a_hundred_years_and_is_accepted_everywhere(geneva: Geneva) -> None:
    assert MAX_WAIT == timedelta(days=36525)

    class Patient(geneva.Workflow):
        @step(wait=MAX_WAIT)
        def much_later(self) -> None: ...

        @step(
            wait=MAX_WAIT.total_seconds(), on_exception=ExceptionPolicy("reattempt", wait=MAX_WAIT)
        )
        def even_later(self) -> None: ...

    steps = Patient.step_graph().steps
    assert steps["much_later"].wait == steps["even_later"].wait == MAX_WAIT
    assert ReattemptSignal(MAX_WAIT).wait == MAX_WAIT
    assert ReattemptSignal(None).wait == timedelta(0)
    assert ReattemptSignal(1.5).wait == timedelta(seconds=1.5)
    assert to_wait(0) == timedelta(0)


@pytest.mark.parametrize("wait", ["30", True, [1], b"1"])
def test_a_wait_of_the_wrong_kind_is_a_type_error_at_run_time(wait: Any) -> None:
    with pytest.raises(TypeError, match="expected a timedelta or a number of seconds"):
        ReattemptSignal(wait)
