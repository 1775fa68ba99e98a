"""Exception policies: step options, ExceptionPolicy, class-level lists, resolution order."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import DefinitionError
from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.policy import DEFAULT_POLICY
from flask_geneva.policy import resolve


class TransientError(Exception):
    pass


class GatewayTimeout(TransientError):
    pass


class FatalError(Exception):
    pass


@pytest.fixture
def geneva() -> Geneva:
    """A fresh extension per test, so workflow class names never collide."""
    return Geneva(SQLAlchemy())


def policy_of(cls: Any, name: str) -> Any:
    return cls.step_graph().steps[name].policy


def resolved(cls: Any, step_name: str, error: BaseException) -> ExceptionPolicy:
    definition = cls.__geneva_definition__
    return resolve(definition.graph.steps[step_name].policy, definition.policies, error)


# -- step-level on_exception -----------------------------------------------------------


@pytest.mark.parametrize("action", ["pause", "cancel", "reattempt", "skip"])
def test_on_exception_accepts_each_action_name(geneva: Geneva, action: str) -> None:
    class Actions(geneva.Workflow):
        @step(on_exception=action)
        def risky(self) -> None: ...

    policy = policy_of(Actions, "risky")
    assert policy.action == action
    assert policy.is_blanket
    assert policy.max_reattempts == (100 if action == "reattempt" else None)


def test_on_exception_accepts_an_exception_policy_object_as_is(geneva: Geneva) -> None:
    given = ExceptionPolicy("reattempt", wait=30, max_reattempts=5)

    class WithPolicy(geneva.Workflow):
        @step(on_exception=given)
        def risky(self) -> None: ...

    assert policy_of(WithPolicy, "risky") is given


def test_on_exception_accepts_a_handler_callable(geneva: Geneva) -> None:
    def handler(workflow: Any, error: BaseException) -> None:
        workflow.skip()

    class WithHandler(geneva.Workflow):
        @step(on_exception=handler)
        def risky(self) -> None: ...

    policy = policy_of(WithHandler, "risky")
    assert policy.handler is handler
    assert policy.action is None


def test_without_on_exception_a_step_has_no_policy_of_its_own(geneva: Geneva) -> None:
    class Plain(geneva.Workflow):
        @step
        def risky(self) -> None: ...

    assert policy_of(Plain, "risky") is None
    assert resolved(Plain, "risky", RuntimeError()) is DEFAULT_POLICY
    assert DEFAULT_POLICY.action == "pause"


@pytest.mark.parametrize("bad", ["explode", "pause!", ""])
def test_an_unknown_action_name_is_rejected_with_the_valid_ones(geneva: Geneva, bad: str) -> None:
    with pytest.raises(DefinitionError) as info:

        class Unknown(geneva.Workflow):
            @step(on_exception=bad)
            def risky(self) -> None: ...

    message = str(info.value)
    assert "Unknown.risky" in message
    assert f"invalid on_exception {bad!r}" in message
    assert "'pause', 'cancel', 'reattempt', 'skip'" in message


@pytest.mark.parametrize("bad", [42, TransientError, ["pause"]])
def test_an_on_exception_of_another_kind_is_rejected(geneva: Geneva, bad: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class BadKind(geneva.Workflow):
            @step(on_exception=bad)
            def risky(self) -> None: ...

    assert "BadKind.risky" in str(info.value)
    assert "an ExceptionPolicy, or a callable" in str(info.value)


# -- max_reattempts and terminal_action ------------------------------------------------


def test_reattempt_defaults_to_100_reattempts_then_pause(geneva: Geneva) -> None:
    class Default(geneva.Workflow):
        @step(on_exception="reattempt")
        def risky(self) -> None: ...

    policy = policy_of(Default, "risky")
    assert policy.max_reattempts == 100
    assert policy.terminal_action == "pause"
    assert policy.wait == timedelta(0)


def test_max_reattempts_may_be_set_or_none_for_unlimited(geneva: Geneva) -> None:
    class Limits(geneva.Workflow):
        @step(on_exception="reattempt", max_reattempts=7)
        def limited(self) -> None: ...

        @step(on_exception="reattempt", max_reattempts=None)
        def unlimited(self) -> None: ...

    assert policy_of(Limits, "limited").max_reattempts == 7
    assert policy_of(Limits, "limited").action == "reattempt"
    assert policy_of(Limits, "unlimited").max_reattempts is None


@pytest.mark.parametrize("bad", [0, -5, 5.5, True, "3"])
def test_max_reattempts_must_be_a_positive_integer(geneva: Geneva, bad: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class NonPositive(geneva.Workflow):
            @step(on_exception="reattempt", max_reattempts=bad)
            def risky(self) -> None: ...

    assert "NonPositive.risky" in str(info.value)
    assert "max_reattempts must be a positive integer" in str(info.value)


@pytest.mark.parametrize("action", ["pause", "cancel", "skip", None])
def test_max_reattempts_without_reattempt_is_rejected(geneva: Geneva, action: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class NotReattempt(geneva.Workflow):
            @step(on_exception=action, max_reattempts=10)
            def risky(self) -> None: ...

    message = str(info.value)
    assert "NotReattempt.risky" in message
    assert "max_reattempts=" in message
    assert "on_exception is not 'reattempt'" in message


@pytest.mark.parametrize("option", [{"max_reattempts": 10}, {"terminal_action": "cancel"}])
@pytest.mark.parametrize(
    "on_exception",
    [ExceptionPolicy("reattempt", max_reattempts=5), lambda workflow, error: None],
)
def test_limits_cannot_be_combined_with_a_policy_object_or_a_handler(
    geneva: Geneva, option: dict[str, Any], on_exception: Any
) -> None:
    with pytest.raises(DefinitionError) as info:

        class Combined(geneva.Workflow):
            @step(on_exception=on_exception, **option)
            def risky(self) -> None: ...

    assert "Combined.risky" in str(info.value)
    assert "ExceptionPolicy or a handler callable" in str(info.value)


@pytest.mark.parametrize("terminal_action", ["pause", "cancel"])
def test_terminal_action_is_pause_or_cancel_with_reattempt(
    geneva: Geneva, terminal_action: str
) -> None:
    class Terminal(geneva.Workflow):
        @step(on_exception="reattempt", max_reattempts=3, terminal_action=terminal_action)
        def risky(self) -> None: ...

    policy = policy_of(Terminal, "risky")
    assert policy.terminal_action == terminal_action
    assert type(policy.terminal_action) is str
    assert policy.max_reattempts == 3


def test_actions_given_as_string_enum_members_are_stored_as_plain_strings(
    geneva: Geneva,
) -> None:
    class Action(StrEnum):
        REATTEMPT = "reattempt"
        CANCEL = "cancel"

    class EnumTerminal(geneva.Workflow):
        @step(on_exception=Action.REATTEMPT, terminal_action=Action.CANCEL)
        def risky(self) -> None: ...

    policy = policy_of(EnumTerminal, "risky")
    assert (policy.action, policy.terminal_action) == ("reattempt", "cancel")
    assert type(policy.action) is str
    assert type(policy.terminal_action) is str
    assert repr(policy) == (
        "ExceptionPolicy('reattempt', wait=datetime.timedelta(0), max_reattempts=100, "
        "terminal_action='cancel')"
    )


@pytest.mark.parametrize("bad", ["skip", "reattempt", "finish", 1])
def test_terminal_action_rejects_other_values(geneva: Geneva, bad: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class BadTerminal(geneva.Workflow):
            @step(on_exception="reattempt", terminal_action=bad)
            def risky(self) -> None: ...

    assert "BadTerminal.risky" in str(info.value)
    assert f"invalid terminal_action {bad!r}; expected 'pause' or 'cancel'" in str(info.value)


def test_terminal_action_without_reattempt_is_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class NoReattempt(geneva.Workflow):
            @step(on_exception="pause", terminal_action="cancel")
            def risky(self) -> None: ...

    assert "NoReattempt.risky" in str(info.value)
    assert "terminal_action=" in str(info.value)
    assert "not 'reattempt'" in str(info.value)


# -- ExceptionPolicy constructor -------------------------------------------------------


def test_exception_policy_declarative_form_keeps_its_settings() -> None:
    policy = ExceptionPolicy(
        "reattempt",
        exceptions=(TimeoutError, "billing.GatewayError"),
        wait=timedelta(seconds=30),
        max_reattempts=5,
        terminal_action="cancel",
    )
    assert policy.action == "reattempt"
    assert policy.exceptions == (TimeoutError, "billing.GatewayError")
    assert policy.wait == timedelta(seconds=30)
    assert policy.max_reattempts == 5
    assert policy.terminal_action == "cancel"
    assert not policy.is_blanket


def test_exception_policy_defaults() -> None:
    reattempt = ExceptionPolicy("reattempt", wait=15)
    assert reattempt.wait == timedelta(seconds=15)
    assert reattempt.max_reattempts == 100
    assert reattempt.terminal_action == "pause"
    pause = ExceptionPolicy("pause")
    assert pause.max_reattempts is None
    assert pause.terminal_action == "pause"
    assert pause.is_blanket
    single = ExceptionPolicy("cancel", exceptions=FatalError)
    assert single.exceptions == (FatalError,)


def test_exception_policy_handler_form() -> None:
    def handler(workflow: Any, error: BaseException) -> None: ...

    policy = ExceptionPolicy(handler=handler, exceptions=[TransientError])
    assert policy.handler is handler
    assert policy.action is None
    assert policy.matches(GatewayTimeout())
    assert "handler=" in repr(policy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs an action"),
        ({"action": "explode"}, "invalid ExceptionPolicy action 'explode'"),
        ({"action": "pause", "handler": lambda w, e: None}, "an action or a handler, not both"),
        ({"handler": "skip"}, "handler must be callable"),
        ({"handler": lambda w, e: None, "wait": 5}, "the handler decides"),
        ({"handler": lambda w, e: None, "max_reattempts": 5}, "the handler decides"),
        ({"handler": lambda w, e: None, "terminal_action": "cancel"}, "the handler decides"),
        ({"action": "pause", "max_reattempts": 3}, "only to the 'reattempt' action"),
        ({"action": "skip", "terminal_action": "cancel"}, "only to the 'reattempt' action"),
        ({"action": "cancel", "wait": 10}, "only to the 'reattempt' action"),
        ({"action": "reattempt", "max_reattempts": 0}, "positive integer or None"),
        ({"action": "reattempt", "max_reattempts": 2.5}, "positive integer or None"),
        ({"action": "reattempt", "terminal_action": "skip"}, "invalid terminal_action 'skip'"),
        ({"action": "reattempt", "wait": -1}, "must be non-negative"),
        ({"action": "reattempt", "wait": "soon"}, "invalid wait value 'soon'"),
        ({"action": "pause", "exceptions": [str]}, "exception classes or their names"),
        ({"action": "pause", "exceptions": [""]}, "exception classes or their names"),
        ({"action": "pause", "exceptions": 42}, "exception classes or names"),
    ],
)
def test_exception_policy_rejects_contradictory_or_invalid_arguments(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ExceptionPolicy(**kwargs)


def test_a_specific_policy_matches_listed_classes_and_their_subclasses() -> None:
    policy = ExceptionPolicy("cancel", exceptions=(TransientError, KeyError))
    assert policy.matches(TransientError())
    assert policy.matches(GatewayTimeout())
    assert policy.matches(KeyError())
    assert not policy.matches(FatalError())


def test_a_policy_may_name_exceptions_by_class_name_resolved_when_matching() -> None:
    short = ExceptionPolicy("cancel", exceptions="TransientError")
    qualified = ExceptionPolicy("cancel", exceptions=f"{__name__}.TransientError")
    missing = ExceptionPolicy("cancel", exceptions="nowhere.FakeError")
    assert short.matches(GatewayTimeout())
    assert qualified.matches(TransientError())
    assert not short.matches(FatalError())
    assert not missing.matches(TransientError())


# -- class-level on_exception and resolution order ------------------------------------


def test_class_level_on_exception_may_be_a_single_policy(geneva: Geneva) -> None:
    class Blanket(geneva.Workflow):
        on_exception = ExceptionPolicy("reattempt", max_reattempts=3)

        @step
        def risky(self) -> None: ...

    policy = resolved(Blanket, "risky", RuntimeError())
    assert policy.action == "reattempt"
    assert policy.max_reattempts == 3


def test_class_level_on_exception_may_be_an_action_name_or_a_handler(geneva: Geneva) -> None:
    def handler(workflow: Any, error: BaseException) -> None: ...

    class ByName(geneva.Workflow):
        on_exception = "skip"

        @step
        def risky(self) -> None: ...

    class ByHandler(geneva.Workflow):
        on_exception = [ExceptionPolicy(handler=handler, exceptions=[TransientError])]

        @step
        def risky(self) -> None: ...

    assert resolved(ByName, "risky", RuntimeError()).action == "skip"
    assert resolved(ByHandler, "risky", TransientError()).handler is handler
    assert resolved(ByHandler, "risky", FatalError()) is DEFAULT_POLICY


def test_class_level_list_selects_specific_policies_by_class_and_by_name(
    geneva: Geneva,
) -> None:
    class Specific(geneva.Workflow):
        on_exception = [
            ExceptionPolicy("reattempt", exceptions=[TransientError], max_reattempts=2),
            ExceptionPolicy("cancel", exceptions="FatalError"),
        ]

        @step
        def risky(self) -> None: ...

    assert resolved(Specific, "risky", GatewayTimeout()).action == "reattempt"
    assert resolved(Specific, "risky", FatalError()).action == "cancel"
    assert resolved(Specific, "risky", RuntimeError()) is DEFAULT_POLICY


def test_a_specific_class_policy_wins_over_a_blanket_listed_before_it(geneva: Geneva) -> None:
    class Mixed(geneva.Workflow):
        on_exception = [
            ExceptionPolicy("pause"),
            ExceptionPolicy("cancel", exceptions=[FatalError]),
        ]

        @step
        def risky(self) -> None: ...

    assert resolved(Mixed, "risky", FatalError()).action == "cancel"
    assert resolved(Mixed, "risky", RuntimeError()).action == "pause"


def test_within_one_class_the_first_matching_specific_policy_wins(geneva: Geneva) -> None:
    class Ordered(geneva.Workflow):
        on_exception = [
            ExceptionPolicy("skip", exceptions=[GatewayTimeout]),
            ExceptionPolicy("reattempt", exceptions=[TransientError]),
        ]

        @step
        def risky(self) -> None: ...

    assert resolved(Ordered, "risky", GatewayTimeout()).action == "skip"
    assert resolved(Ordered, "risky", TransientError()).action == "reattempt"


def test_more_than_one_class_level_blanket_policy_is_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class TwoBlankets(geneva.Workflow):
            on_exception = [ExceptionPolicy("pause"), "cancel"]

    assert str(info.value).startswith("TwoBlankets: on_exception lists 2 blanket policies")


@pytest.mark.parametrize("bad", ["explode", 42, [ExceptionPolicy("pause"), 3]])
def test_an_invalid_class_level_on_exception_is_rejected(geneva: Geneva, bad: Any) -> None:
    with pytest.raises(DefinitionError, match=r"^BadClassPolicy: class-level invalid on_exc"):

        class BadClassPolicy(geneva.Workflow):
            on_exception = bad


def test_the_step_policy_comes_first_then_class_specific_then_blanket_then_pause(
    geneva: Geneva,
) -> None:
    class Layered(geneva.Workflow):
        on_exception = [
            ExceptionPolicy("cancel"),
            ExceptionPolicy("reattempt", exceptions=[TransientError]),
        ]

        @step(on_exception="skip")
        def own(self) -> None: ...

        @step(on_exception=ExceptionPolicy("skip", exceptions=[FatalError]))
        def narrow(self) -> None: ...

        @step
        def inherits(self) -> None: ...

    class Bare(geneva.Workflow):
        @step
        def inherits(self) -> None: ...

    assert resolved(Layered, "own", TransientError()).action == "skip"
    assert resolved(Layered, "narrow", FatalError()).action == "skip"
    # The step policy does not match: class-level specific, then the blanket.
    assert resolved(Layered, "narrow", TransientError()).action == "reattempt"
    assert resolved(Layered, "inherits", TransientError()).action == "reattempt"
    assert resolved(Layered, "inherits", RuntimeError()).action == "cancel"
    assert resolved(Bare, "inherits", RuntimeError()) is DEFAULT_POLICY


def test_subclass_policies_are_consulted_before_the_parents(geneva: Geneva) -> None:
    class Parent(geneva.Workflow):
        on_exception = [
            ExceptionPolicy("pause"),
            ExceptionPolicy("cancel", exceptions=[TransientError]),
        ]

        @step
        def risky(self) -> None: ...

    class Child(Parent):
        on_exception = [
            ExceptionPolicy("reattempt", max_reattempts=3),
            ExceptionPolicy("skip", exceptions=[GatewayTimeout]),
        ]

    class GrandChild(Child):
        pass

    # Specific: the child's narrower entry first, then the parent's.
    assert resolved(Child, "risky", GatewayTimeout()).action == "skip"
    assert resolved(Child, "risky", TransientError()).action == "cancel"
    # Blanket: the child's replaces the parent's.
    assert resolved(Child, "risky", RuntimeError()).action == "reattempt"
    # Inherited unchanged by a subclass that declares nothing; the parent is untouched.
    assert GrandChild.__geneva_definition__.policies == Child.__geneva_definition__.policies
    assert len(Parent.__geneva_definition__.policies) == 2
    assert len(Child.__geneva_definition__.policies) == 4
    assert resolved(Parent, "risky", GatewayTimeout()).action == "cancel"
    assert resolved(Parent, "risky", RuntimeError()).action == "pause"


def test_a_subclass_specific_policy_wins_over_the_parent_blanket(geneva: Geneva) -> None:
    class Parent(geneva.Workflow):
        on_exception = ExceptionPolicy("pause")

        @step
        def risky(self) -> None: ...

    class Child(Parent):
        on_exception = ExceptionPolicy("cancel", exceptions=[KeyError])

    assert resolved(Child, "risky", KeyError()).action == "cancel"
    assert resolved(Child, "risky", RuntimeError()).action == "pause"
