"""Class-level declarations: inheritance, cancel_if, heroes, job options, stored identity,
and flow-control signals that user code cannot swallow."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import DefinitionError
from flask_geneva import ExceptionPolicy
from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.flow import CancelSignal
from flask_geneva.flow import FinishSignal
from flask_geneva.flow import FlowSignal
from flask_geneva.flow import PauseSignal
from flask_geneva.flow import ReattemptSignal
from flask_geneva.flow import SkipSignal
from flask_geneva.steps import evaluate_condition


@pytest.fixture
def geneva() -> Geneva:
    """A fresh extension per test, so workflow class names never collide."""
    return Geneva(SQLAlchemy())


def names(cls: Any) -> list[str]:
    return list(cls.step_graph().steps)


# -- inheritance -----------------------------------------------------------------------


def test_subclasses_inherit_steps_and_append_their_own(geneva: Geneva) -> None:
    class Parent(geneva.Workflow):
        @step
        def parent_step(self) -> None: ...

    class Child(Parent):
        @step
        def child_step(self) -> None: ...

    class EmptyParent(geneva.Workflow):
        pass

    class OnlyChild(EmptyParent):
        @step
        def child_step(self) -> None: ...

    assert names(Parent) == ["parent_step"]
    assert names(Child) == ["parent_step", "child_step"]
    assert Child.step_graph().predecessors["child_step"] == ("parent_step",)
    assert names(OnlyChild) == ["child_step"]


def test_a_subclass_overriding_a_step_method_runs_the_override(geneva: Geneva) -> None:
    class Parent(geneva.Workflow):
        @step
        def charge(self) -> str:
            return "parent"

        @step(name="charge_card")
        def charge_with_name(self) -> str:
            return "parent named"

    class Child(Parent):
        def charge(self) -> str:
            return "child, then " + super().charge()

        def charge_with_name(self) -> str:
            return "child named"

    steps = Child.step_graph().steps
    assert names(Child) == ["charge", "charge_card"]
    assert steps["charge"].body(Child())() == "child, then parent"
    assert steps["charge_card"].body(Child())() == "child named"
    assert Parent.step_graph().steps["charge"].body(Parent())() == "parent"


def test_an_abstract_base_shares_steps_and_policies_without_being_stored(
    geneva: Geneva,
) -> None:
    class Base(geneva.Workflow):
        __abstract__ = True
        on_exception = ExceptionPolicy("reattempt", max_reattempts=3)

        @step
        def shared(self) -> None: ...

    class Concrete(Base):
        @step
        def own(self) -> None: ...

    assert names(Concrete) == ["shared", "own"]
    assert Concrete.__geneva_definition__.policies[0].max_reattempts == 3
    assert list(geneva.registry) == ["Concrete"]


# -- cancel_if -------------------------------------------------------------------------


def test_cancel_if_accepts_a_condition_or_a_list_of_them(geneva: Geneva) -> None:
    def hero_gone(workflow: Any) -> bool:
        return workflow.gone

    class Single(geneva.Workflow):
        cancel_if = hero_gone

    class Several(geneva.Workflow):
        gone = False
        refunded = True

        def is_refunded(self) -> bool:
            return self.refunded

        cancel_if = [hero_gone, "is_refunded", "refunded", False]

    assert Single.__geneva_definition__.cancel_if == (hero_gone,)
    conditions = Several.__geneva_definition__.cancel_if
    assert conditions == (hero_gone, "is_refunded", "refunded", False)
    workflow = Several()
    assert [evaluate_condition(c, workflow) for c in conditions] == [False, True, True, False]


def test_cancel_if_conditions_accumulate_down_the_inheritance_chain(geneva: Geneva) -> None:
    class Base(geneva.Workflow):
        def hero_inactive(self) -> bool:
            return False

        cancel_if = "hero_inactive"

    class Child(Base):
        cancel_if = [lambda workflow: True]

    class GrandChild(Child):
        pass

    assert Base.__geneva_definition__.cancel_if == ("hero_inactive",)
    assert len(Child.__geneva_definition__.cancel_if) == 2
    assert Child.__geneva_definition__.cancel_if[0] == "hero_inactive"
    assert GrandChild.__geneva_definition__.cancel_if == Child.__geneva_definition__.cancel_if


@pytest.mark.parametrize("bad", [42, [None, 3.5], object()])
def test_cancel_if_of_another_kind_is_rejected(geneva: Geneva, bad: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class BadCancel(geneva.Workflow):
            cancel_if = bad

    assert str(info.value).startswith("BadCancel: cancel_if: invalid condition")


def test_cancel_if_naming_a_missing_method_is_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class MissingCancel(geneva.Workflow):
            cancel_if = "hero_refunded"

    message = str(info.value)
    assert message.startswith("MissingCancel: cancel_if:")
    assert "'hero_refunded' is not a method or attribute of MissingCancel" in message


# -- heroes and job options -----------------------------------------------------------


def test_may_proceed_without_hero_is_off_by_default_and_inherited(geneva: Geneva) -> None:
    class Strict(geneva.Workflow):
        pass

    class Lenient(geneva.Workflow):
        may_proceed_without_hero = True

    class LenientChild(Lenient):
        pass

    assert Strict.__geneva_definition__.may_proceed_without_hero is False
    assert Lenient.__geneva_definition__.may_proceed_without_hero is True
    assert LenientChild.__geneva_definition__.may_proceed_without_hero is True


def test_step_job_options_merge_down_the_inheritance_chain(geneva: Geneva) -> None:
    class Base(geneva.Workflow):
        step_job_options = {"priority": 10}

    class Inherits(Base):
        pass

    class Overrides(Base):
        step_job_options = {"priority": 50}

    class Plain(geneva.Workflow):
        pass

    assert Base.__geneva_definition__.job_options == {"priority": 10}
    assert Inherits.__geneva_definition__.job_options == {"priority": 10}
    assert Overrides.__geneva_definition__.job_options == {"priority": 50}
    assert Base.__geneva_definition__.job_options == {"priority": 10}
    assert Plain.__geneva_definition__.job_options == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": "fast"}, r"unknown step_job_options \['queue'\]; supported: \['priority'\]"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ("priority", "must be a dict"),
    ],
)
def test_invalid_step_job_options_are_rejected(geneva: Geneva, options: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=rf"^BadOptions: .*{message}"):

        class BadOptions(geneva.Workflow):
            step_job_options = options


# -- stored identity -------------------------------------------------------------------


def test_the_stored_identity_defaults_to_the_class_name(geneva: Geneva) -> None:
    class PaymentWorkflow(geneva.Workflow):
        pass

    assert PaymentWorkflow.__geneva_identity__ == "PaymentWorkflow"
    assert PaymentWorkflow.__mapper__.polymorphic_identity == "PaymentWorkflow"
    assert geneva.registry["PaymentWorkflow"] is PaymentWorkflow


def test_geneva_type_pins_the_stored_identity(geneva: Geneva) -> None:
    class RenamedPaymentFlow(geneva.Workflow):
        __geneva_type__ = "PaymentWorkflow"

    class Child(RenamedPaymentFlow):
        pass

    assert RenamedPaymentFlow.__geneva_identity__ == "PaymentWorkflow"
    assert RenamedPaymentFlow.__mapper__.polymorphic_identity == "PaymentWorkflow"
    assert geneva.registry["PaymentWorkflow"] is RenamedPaymentFlow
    # A pinned identity is not inherited: each class stores its own.
    assert Child.__geneva_identity__ == "Child"


def test_two_classes_with_the_same_identity_are_rejected(geneva: Geneva) -> None:
    class First(geneva.Workflow):
        __geneva_type__ = "billing.payment"

    with pytest.raises(DefinitionError) as info:

        class Second(geneva.Workflow):
            __geneva_type__ = "billing.payment"

    message = str(info.value)
    assert "Second" in message and "First" in message
    assert "'billing.payment' is already used" in message
    assert "__geneva_type__" in message
    assert geneva.registry["billing.payment"] is First


def test_two_classes_with_the_same_name_are_rejected_under_one_geneva(geneva: Geneva) -> None:
    def define() -> Any:
        class Onboarding(geneva.Workflow):
            pass

        return Onboarding

    define()
    with pytest.raises(DefinitionError, match="workflow type 'Onboarding' is already used"):
        define()


def test_the_same_class_name_may_be_used_under_two_extensions() -> None:
    first, second = Geneva(SQLAlchemy()), Geneva(SQLAlchemy())

    class Onboarding(first.Workflow):
        pass

    class Onboarding2(second.Workflow):
        __geneva_type__ = "Onboarding"

    assert first.registry["Onboarding"] is Onboarding
    assert second.registry["Onboarding"] is Onboarding2


def test_geneva_type_must_be_a_string(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match="NumberType: __geneva_type__ must be a string"):

        class NumberType(geneva.Workflow):
            __geneva_type__ = 7


# -- flow-control signals --------------------------------------------------------------


@pytest.mark.parametrize(
    "signal",
    [CancelSignal(), PauseSignal(), SkipSignal(), FinishSignal(), ReattemptSignal(timedelta(0))],
)
def test_flow_signals_are_base_exceptions_that_except_exception_cannot_swallow(
    signal: FlowSignal,
) -> None:
    assert isinstance(signal, BaseException)
    assert not isinstance(signal, Exception)

    def careless_step() -> str:
        try:
            raise signal
        except Exception:
            return "swallowed"

    with pytest.raises(FlowSignal):
        careless_step()


def test_flow_signals_name_their_action() -> None:
    actions = [s.action for s in (CancelSignal, PauseSignal, SkipSignal, FinishSignal)]
    assert actions == ["cancel", "pause", "skip", "finish"]
    reattempt = ReattemptSignal(timedelta(seconds=30))
    assert (reattempt.action, reattempt.wait) == ("reattempt", timedelta(seconds=30))


@pytest.mark.parametrize(
    ("call", "signal"),
    [
        (lambda wf: wf.pause(), PauseSignal),
        (lambda wf: wf.cancel(), CancelSignal),
        (lambda wf: wf.skip(), SkipSignal),
        (lambda wf: wf.finish(), FinishSignal),
        (lambda wf: wf.reattempt(wait=30), ReattemptSignal),
    ],
)
def test_flow_control_inside_a_step_escapes_the_steps_own_except_exception(
    geneva: Geneva, call: Any, signal: type[FlowSignal]
) -> None:
    class Careless(geneva.Workflow):
        @step
        def charge(self) -> str:
            try:
                call(self)
            except Exception:
                return "swallowed"
            return "not reached"

    workflow = Careless()
    workflow._geneva_context = object()  # what the executor sets while a body runs
    with pytest.raises(signal):
        Careless.step_graph().steps["charge"].body(workflow)()


def test_defining_the_same_class_twice_says_so_and_how_to_fix_it(geneva: Geneva) -> None:
    def make() -> type:
        class Repeated(geneva.Workflow):  # type: ignore[name-defined,misc]
            @step
            def only(self) -> None:
                pass

        return Repeated

    make()
    with pytest.raises(DefinitionError, match="the same class was defined twice"):
        make()
