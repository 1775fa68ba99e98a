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

import functools
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterator
from datetime import timedelta
from enum import StrEnum
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import DefinitionError
from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.flow import ReattemptSignal
from flask_geneva.models import BASE_IDENTITY
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


# -- steps and conditions that calling would not run -----------------------------------


def wraps(func: Callable[..., Any]) -> Callable[..., Any]:
    """A sync decorator around ``func``, as logging or retry decorators are written."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


async def async_check(workflow: Any) -> bool:
    return False


def generator_check(workflow: Any) -> Iterator[bool]:
    yield False


class AsyncCallable:
    async def __call__(self, workflow: Any) -> bool:
        return False


def test_an_async_step_is_a_definition_error_naming_class_step_and_fix(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Fetching(geneva.Workflow):
            @step
            def first(self) -> None: ...

            @step
            async def fetch(self) -> None: ...

    message = str(info.value)
    assert message.startswith("Fetching.fetch: the step is an async function (async def);")
    assert "its body would never run" in message
    assert "make it a plain def (run async code inside it with asyncio.run(...))" in message


def test_generator_steps_are_definition_errors(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match=r"Gen\.produce: the step is a generator function"):

        class Gen(geneva.Workflow):
            @step
            def produce(self) -> Iterator[int]:
                yield 1

    with pytest.raises(DefinitionError) as info:

        class AsyncGen(geneva.Workflow):
            @step(name="stream")
            async def produce(self) -> AsyncIterator[int]:
                yield 1

    assert str(info.value).startswith("AsyncGen.stream: the step is an async generator function")
    assert "make it a plain def" in str(info.value)


def test_a_step_wrapped_around_an_async_function_is_a_definition_error(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Decorated(geneva.Workflow):
            @step
            @wraps
            async def fetch(self) -> None: ...

    message = str(info.value)
    assert message.startswith("Decorated.fetch: the step is an async function (async def)")
    assert "behind a decorator (seen through __wrapped__)" in message


def test_steps_made_from_async_functions_in_a_loop_are_definition_errors(geneva: Geneva) -> None:
    async def poll(workflow: Any) -> None: ...

    with pytest.raises(DefinitionError, match=r"Polling\.step_1: the step is an async function"):

        class Polling(geneva.Workflow):
            polls = [step(poll, wait=w) for w in (0, 30)]


def test_a_subclass_overriding_a_step_with_an_async_method_is_a_definition_error(
    geneva: Geneva,
) -> None:
    class Parent(geneva.Workflow):
        @step
        def charge(self) -> None: ...

    with pytest.raises(DefinitionError, match=r"Child\.charge: the step is an async function"):

        class Child(Parent):
            async def charge(self) -> None:  # type: ignore[override]
                ...


@pytest.mark.parametrize(
    ("condition", "kind"),
    [
        pytest.param(async_check, "an async function", id="async_def"),
        pytest.param(generator_check, "a generator function", id="generator"),
        pytest.param(wraps(async_check), "behind a decorator", id="wrapped"),
        pytest.param(functools.partial(async_check), "an async function", id="partial"),
        pytest.param(AsyncCallable(), "an async function", id="callable_object"),
    ],
)
def test_an_async_skip_if_is_a_definition_error(geneva: Geneva, condition: Any, kind: str) -> None:
    with pytest.raises(DefinitionError) as info:

        class Skipping(geneva.Workflow):
            @step(skip_if=condition)
            def nag(self) -> None: ...

    message = str(info.value)
    assert message.startswith(f"Skipping.nag: invalid skip_if: {condition!r} is ")
    assert kind in message
    assert "is always true" in message
    assert "make it a plain def returning a bool" in message


@pytest.mark.parametrize("how", ["method", "staticmethod", "property", "wrapped_method"])
def test_an_async_skip_if_given_by_name_is_a_definition_error(geneva: Geneva, how: str) -> None:
    async def is_vip(self: Any) -> bool:
        return True

    attribute: Any = {
        "method": is_vip,
        "staticmethod": staticmethod(async_check),
        "property": property(is_vip),
        "wrapped_method": wraps(is_vip),
    }[how]
    with pytest.raises(DefinitionError) as info:
        type(
            "Nagging",
            (geneva.Workflow,),
            {"is_vip": attribute, "nag": step(skip_if="is_vip")(lambda self: None)},
        )
    assert str(info.value).startswith("Nagging.nag: invalid skip_if: 'is_vip' is an async")


def test_an_async_cancel_if_is_a_definition_error(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Canceling(geneva.Workflow):
            cancel_if = [lambda workflow: False, async_check]

    assert str(info.value).startswith(f"Canceling: cancel_if: {async_check!r} is an async")

    with pytest.raises(DefinitionError, match=r"ByName: cancel_if: 'gone' is an async function"):

        class ByName(geneva.Workflow):
            cancel_if = "gone"

            async def gone(self) -> bool:
                return False


def test_a_subclass_overriding_a_condition_with_an_async_method_is_a_definition_error(
    geneva: Geneva,
) -> None:
    class Parent(geneva.Workflow):
        cancel_if = "gone"

        def gone(self) -> bool:
            return False

        def is_vip(self) -> bool:
            return False

        @step(skip_if="is_vip")
        def nag(self) -> None: ...

    with pytest.raises(DefinitionError, match=r"Child: cancel_if: 'gone' is an async function"):

        class Child(Parent):
            async def gone(self) -> bool:  # type: ignore[override]
                return False

    with pytest.raises(DefinitionError, match=r"Other\.nag: invalid skip_if: 'is_vip' is an async"):

        class Other(Parent):
            async def is_vip(self) -> bool:  # type: ignore[override]
                return False


def test_an_async_exception_handler_is_a_definition_error(geneva: Geneva) -> None:
    async def handler(workflow: Any, error: BaseException) -> None: ...

    with pytest.raises(DefinitionError) as info:

        class StepLevel(geneva.Workflow):
            @step(on_exception=handler)
            def charge(self) -> None: ...

    assert str(info.value).startswith(f"StepLevel.charge: the on_exception handler {handler!r}")
    assert "every error would pause the workflow" in str(info.value)

    with pytest.raises(DefinitionError, match=r"ClassLevel: class-level on_exception: the"):

        class ClassLevel(geneva.Workflow):
            on_exception = [ExceptionPolicy("skip", exceptions=KeyError), handler]


def test_plain_steps_conditions_and_decorated_sync_functions_are_accepted(geneva: Geneva) -> None:
    def check(workflow: Any) -> bool:
        return False

    class Fine(geneva.Workflow):
        cancel_if = [check, "is_gone", wraps(check), functools.partial(check)]
        on_exception = ExceptionPolicy(handler=lambda workflow, error: None)

        @property
        def is_gone(self) -> bool:
            return False

        @step(skip_if=wraps(check))
        @wraps
        def charge(self) -> None: ...

        @step(skip_if="is_gone")
        def notify(self) -> None: ...

    assert list(Fine.step_graph().steps) == ["charge", "notify"]


# -- stored identities -----------------------------------------------------------------


class Kind(StrEnum):
    PAYMENT = "billing.payment"


def define(geneva: Geneva, name: str = "Payment", **body: Any) -> Any:
    """Create a workflow class the way a class statement does."""
    return type(name, (geneva.Workflow,), body)


def test_the_longest_identity_is_the_type_columns_length(geneva: Geneva) -> None:
    length = geneva.tables.workflows.c.type.type.length
    assert length == 191

    pinned = define(geneva, "Long", __geneva_type__="x" * length)
    derived = define(geneva, "W" * length)
    assert pinned.__geneva_identity__ == "x" * length
    assert derived.__geneva_identity__ == "W" * length
    assert pinned.__geneva_definition__.identity == "x" * length


def test_a_pinned_identity_longer_than_the_type_column_is_a_definition_error(
    geneva: Geneva,
) -> None:
    with pytest.raises(DefinitionError) as info:
        define(geneva, "Long", __geneva_type__="billing." + "x" * 184)
    message = str(info.value)
    assert message.startswith("Long: __geneva_type__ 'billing.xxxxxxxx")
    assert "is 192 characters long; the type column stores at most 191" in message
    assert "give __geneva_type__ another value" in message
    assert "billing." + "x" * 184 not in geneva.registry


def test_a_class_name_longer_than_the_type_column_is_a_definition_error(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:
        define(geneva, "W" * 192)
    message = str(info.value)
    assert "the class name (the default stored identity)" in message
    assert "is 192 characters long" in message
    assert "pin another identity with __geneva_type__" in message
    # Pinning a shorter identity is the way out.
    assert define(geneva, "W" * 192, __geneva_type__="Short").__geneva_identity__ == "Short"


@pytest.mark.parametrize("identity", [BASE_IDENTITY, BASE_IDENTITY.upper()])
def test_claiming_the_base_identity_is_a_definition_error(geneva: Geneva, identity: str) -> None:
    with pytest.raises(DefinitionError) as info:
        define(geneva, "Impostor", __geneva_type__=identity)
    assert str(info.value).startswith(
        f"Impostor: __geneva_type__ {identity!r} is the identity of the base class"
    )
    assert identity not in geneva.registry
    # The base mapper still owns the identity: rows of missing classes load as the base.
    mapper = geneva.Workflow.__mapper__
    assert mapper.polymorphic_map[BASE_IDENTITY] is mapper


def test_a_class_named_like_the_base_identity_is_a_definition_error(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match="the class name .* is the identity of the base"):
        define(geneva, BASE_IDENTITY)


@pytest.mark.parametrize(
    ("identity", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("\t\n", "is empty"),
        (" Payment", "begins or ends with whitespace"),
        ("Payment ", "begins or ends with whitespace"),
        ("Pay\x00ment", "contains a control character"),
        ("Pay\nment", "contains a control character"),
        ("Pay\udcffment", "contains a control character or a lone surrogate"),
    ],
)
def test_an_empty_padded_or_unstorable_identity_is_a_definition_error(
    geneva: Geneva, identity: str, problem: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        define(geneva, "Payment", __geneva_type__=identity)
    assert str(info.value).startswith(f"Payment: __geneva_type__ {identity!r} {problem}")
    # Not silently replaced by the class name either.
    assert "Payment" not in geneva.registry


@pytest.mark.parametrize("identity", [None, 0, False, b"Payment", ["Payment"], 7.5])
def test_an_identity_that_is_not_a_string_is_a_definition_error(
    geneva: Geneva, identity: Any
) -> None:
    with pytest.raises(DefinitionError) as info:
        define(geneva, "Payment", __geneva_type__=identity)
    assert str(info.value).startswith(
        f"Payment: __geneva_type__ must be a string (the identity stored in the type column), "
        f"got {identity!r}"
    )
    assert geneva.registry == {}


def test_a_string_enum_member_is_a_valid_identity(geneva: Geneva) -> None:
    cls = define(geneva, "Payment", __geneva_type__=Kind.PAYMENT)
    assert cls.__geneva_identity__ == "billing.payment"
    assert geneva.registry["billing.payment"] is cls


def test_mapper_args_mapping_the_class_to_another_identity_is_a_definition_error(
    geneva: Geneva,
) -> None:
    with pytest.raises(DefinitionError) as info:
        define(geneva, "Mapped", __mapper_args__={"polymorphic_identity": "other"})
    message = str(info.value)
    assert message.startswith(
        "Mapped: __mapper_args__ gives polymorphic_identity 'other', but the class is "
        "registered as 'Mapped'"
    )
    assert "__geneva_type__" in message

    with pytest.raises(DefinitionError, match="gives polymorphic_identity None"):
        define(geneva, "Unmapped", __mapper_args__={})

    agreed = define(
        geneva, "Agreed", __geneva_type__="other", __mapper_args__={"polymorphic_identity": "other"}
    )
    assert agreed.__mapper__.polymorphic_identity == "other"
    assert geneva.registry["other"] is agreed


def test_an_abstract_class_stores_no_identity(geneva: Geneva) -> None:
    base = define(geneva, "Shared", __abstract__=True)
    assert base.__geneva_definition__.identity is None
    assert geneva.registry == {}
