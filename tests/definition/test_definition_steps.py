"""Declaring steps: @step forms, names, waits, skip_if, generated steps, duplicates."""

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


def names(cls: Any) -> list[str]:
    return list(cls.step_graph().steps)


def check_settlement(workflow: Any) -> str:
    """A plain function made into several polling steps."""
    workflow.calls.append("check")
    return "checked"


def test_bare_step_decorator_declares_a_step_named_after_the_method(geneva: Geneva) -> None:
    class Onboarding(geneva.Workflow):
        @step
        def send_welcome(self) -> str:
            return "welcome"

    graph = Onboarding.step_graph()
    assert names(Onboarding) == ["send_welcome"]
    definition = graph.steps["send_welcome"]
    assert definition.wait == timedelta(0)
    assert definition.policy is None
    assert definition.skip_if is None
    assert definition.body(Onboarding())() == "welcome"


def test_step_with_options_and_with_empty_parentheses_are_steps(geneva: Geneva) -> None:
    class Drip(geneva.Workflow):
        @step()
        def first(self) -> None: ...

        @step(wait=timedelta(days=1), skip_if=False, on_exception="skip")
        def second(self) -> None: ...

    second = Drip.step_graph().steps["second"]
    assert names(Drip) == ["first", "second"]
    assert second.wait == timedelta(days=1)
    assert second.skip_if is False
    assert second.policy is not None and second.policy.action == "skip"


def test_step_methods_stay_callable_on_the_instance(geneva: Geneva) -> None:
    class Callable_(geneva.Workflow):
        @step
        def compute(self) -> int:
            return 42

    assert Callable_().compute() == 42


def test_name_option_overrides_the_method_name(geneva: Geneva) -> None:
    class Renamed(geneva.Workflow):
        @step(name="charge_card")
        def charge(self) -> str:
            return "charged"

    assert names(Renamed) == ["charge_card"]
    assert Renamed.step_graph().steps["charge_card"].body(Renamed())() == "charged"


@pytest.mark.parametrize("bad", ["", 7])
def test_name_option_must_be_a_non_empty_string(geneva: Geneva, bad: Any) -> None:
    with pytest.raises(DefinitionError, match=r"BadName\.charge: name= must be a non-empty"):

        class BadName(geneva.Workflow):
            @step(name=bad)
            def charge(self) -> None: ...


def test_a_positional_name_is_refused_with_a_hint(geneva: Geneva) -> None:
    with pytest.raises(TypeError, match=r"@step\(name=\.\.\.\)"):
        step("charge")  # type: ignore[call-overload]


def test_an_unknown_step_option_names_the_class_and_step(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match=r"Typo\.charge: unknown step option\(s\) wiat"):

        class Typo(geneva.Workflow):
            @step(wiat=5)  # type: ignore[call-overload]
            def charge(self) -> None: ...


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        (timedelta(hours=2), timedelta(hours=2)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (0, timedelta(0)),
        (timedelta(0), timedelta(0)),
        (None, timedelta(0)),
    ],
)
def test_wait_accepts_a_timedelta_seconds_zero_or_none(
    geneva: Geneva, wait: Any, expected: timedelta
) -> None:
    class Waiting(geneva.Workflow):
        @step(wait=wait)
        def later(self) -> None: ...

    assert Waiting.step_graph().steps["later"].wait == expected


@pytest.mark.parametrize("wait", [timedelta(minutes=-5), -1, -0.5])
def test_a_negative_wait_is_rejected(geneva: Geneva, wait: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class Negative(geneva.Workflow):
            @step(wait=wait)
            def later(self) -> None: ...

    assert "Negative.later" in str(info.value)
    assert "invalid wait value" in str(info.value)
    assert "non-negative" in str(info.value)


@pytest.mark.parametrize("wait", ["5", True, [1]])
def test_a_wait_that_is_not_a_duration_is_rejected(geneva: Geneva, wait: Any) -> None:
    with pytest.raises(DefinitionError, match=r"NotADuration\.later: invalid wait value"):

        class NotADuration(geneva.Workflow):
            @step(wait=wait)
            def later(self) -> None: ...


def test_skip_if_accepts_a_callable_a_method_name_a_bool_or_none(geneva: Geneva) -> None:
    def is_vip(workflow: Any) -> bool:
        return workflow.vip

    class Conditional(geneva.Workflow):
        vip = True

        def already_sent(self) -> bool:
            return False

        @step(skip_if=is_vip)
        def by_callable(self) -> None: ...

        @step(skip_if="already_sent")
        def by_method_name(self) -> None: ...

        @step(skip_if="vip")
        def by_attribute_name(self) -> None: ...

        @step(skip_if=True)
        def always(self) -> None: ...

        @step(skip_if=False)
        def never(self) -> None: ...

        @step(skip_if=None)
        def unset(self) -> None: ...

        @step
        def absent(self) -> None: ...

    steps = Conditional.step_graph().steps
    workflow = Conditional()
    decisions = {name: steps[name].should_skip(workflow) for name in steps}
    assert decisions == {
        "by_callable": True,
        "by_method_name": False,
        "by_attribute_name": True,
        "always": True,
        "never": False,
        "unset": False,
        "absent": False,
    }
    workflow.vip = False
    assert steps["by_callable"].should_skip(workflow) is False


def test_skip_if_method_name_is_called_on_the_workflow(geneva: Geneva) -> None:
    class ByName(geneva.Workflow):
        answer = False

        def should_skip(self) -> bool:
            return self.answer

        @step(skip_if="should_skip")
        def maybe(self) -> None: ...

    workflow = ByName()
    definition = ByName.step_graph().steps["maybe"]
    assert definition.should_skip(workflow) is False
    workflow.answer = True
    assert definition.should_skip(workflow) is True


def test_skip_if_naming_a_missing_method_is_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Missing(geneva.Workflow):
            @step(skip_if="not_a_method")
            def maybe(self) -> None: ...

    assert "Missing.maybe" in str(info.value)
    assert "invalid skip_if" in str(info.value)
    assert "'not_a_method'" in str(info.value)


@pytest.mark.parametrize("bad", [42, 1.5, ["already_sent"], object()])
def test_skip_if_of_any_other_kind_is_rejected(geneva: Geneva, bad: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class BadCondition(geneva.Workflow):
            @step(skip_if=bad)
            def maybe(self) -> None: ...

    message = str(info.value)
    assert "BadCondition.maybe" in message
    assert "invalid skip_if" in message
    assert "a callable taking the workflow, a method name, a bool, or None" in message


def test_steps_made_from_a_plain_function_in_a_loop_get_generated_names(
    geneva: Geneva,
) -> None:
    class Settlement(geneva.Workflow):
        @step
        def submit(self) -> None: ...

        polls = [step(check_settlement, wait=w) for w in (0, 30, 30, 3600)]

        @step
        def reconcile(self) -> None: ...

    graph = Settlement.step_graph()
    assert names(Settlement) == ["submit", "step_2", "step_3", "step_4", "step_5", "reconcile"]
    assert [graph.steps[f"step_{n}"].wait.total_seconds() for n in range(2, 6)] == [
        0,
        30,
        30,
        3600,
    ]
    # A straight line: each poll follows the one before it.
    assert graph.predecessors["step_3"] == ("step_2",)
    assert graph.predecessors["reconcile"] == ("step_5",)


def test_a_generated_step_runs_its_function_with_the_workflow(geneva: Geneva) -> None:
    class Polling(geneva.Workflow):
        polls = [step(check_settlement, wait=w) for w in (0, 30)]

    workflow = Polling()
    workflow.calls = []  # type: ignore[attr-defined]
    assert Polling.step_graph().steps["step_2"].body(workflow)() == "checked"
    assert workflow.calls == ["check"]  # type: ignore[attr-defined]


def test_a_function_of_the_class_body_becomes_steps_through_a_for_loop(geneva: Geneva) -> None:
    class InClassLoop(geneva.Workflow):
        def poll(self) -> str:
            return "polled"

        polls = []
        for seconds in (0, 60):
            polls.append(step(poll, wait=seconds))
        del seconds

    graph = InClassLoop.step_graph()
    assert names(InClassLoop) == ["step_1", "step_2"]
    assert graph.steps["step_2"].wait == timedelta(seconds=60)
    assert graph.steps["step_1"].body(InClassLoop())() == "polled"


def test_generated_names_count_the_steps_already_defined_including_inherited(
    geneva: Geneva,
) -> None:
    class Parent(geneva.Workflow):
        @step
        def named_step(self) -> None: ...

    class Child(Parent):
        polls = [step(check_settlement) for _ in range(2)]

    assert names(Parent) == ["named_step"]
    assert names(Child) == ["named_step", "step_2", "step_3"]


def test_a_generated_step_inserted_before_another_keeps_its_generated_name(
    geneva: Geneva,
) -> None:
    class Inserted(geneva.Workflow):
        @step
        def first(self) -> None: ...

        @step
        def third(self) -> None: ...

        extra = [step(check_settlement, before_step="third")]

    assert names(Inserted) == ["first", "step_3", "third"]


def test_a_generated_step_may_be_given_a_name(geneva: Geneva) -> None:
    class NamedPolls(geneva.Workflow):
        polls = [step(check_settlement, name=f"poll_{n}") for n in range(2)]

    assert names(NamedPolls) == ["poll_0", "poll_1"]


def test_an_alias_of_a_step_method_is_not_a_second_step(geneva: Geneva) -> None:
    class Aliased(geneva.Workflow):
        @step
        def capture(self) -> None: ...

        retry_capture = capture

    assert names(Aliased) == ["capture"]


def test_duplicate_step_names_are_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Duplicate(geneva.Workflow):
            @step
            def my_step(self) -> None: ...

            @step(name="my_step")
            def other(self) -> None: ...

    assert "Duplicate.my_step" in str(info.value)
    assert "already defined" in str(info.value)


def test_a_step_name_already_defined_by_a_parent_is_rejected(geneva: Geneva) -> None:
    class Parent(geneva.Workflow):
        @step
        def my_step(self) -> None: ...

    with pytest.raises(DefinitionError) as info:

        class Child(Parent):
            @step
            def my_step(self) -> None: ...

    message = str(info.value)
    assert "Child.my_step" in message
    assert "already defined" in message
    assert "override the method without @step" in message


def test_a_step_name_longer_than_the_column_is_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match=r"LongName\.x{40}\.\.\.: step names are stored"):

        class LongName(geneva.Workflow):
            @step(name="x" * 200)
            def short(self) -> None: ...


def test_a_workflow_class_with_no_steps_is_allowed(geneva: Geneva) -> None:
    class Empty(geneva.Workflow):
        pass

    graph = Empty.step_graph()
    assert len(graph) == 0
    assert graph.roots == ()
    assert graph.topological_order == ()
    assert graph.ready_steps(done=[], started=[]) == []


def test_a_step_records_where_its_body_is_defined(geneva: Geneva) -> None:
    class Located(geneva.Workflow):
        @step
        def here(self) -> None: ...

    source = Located.step_graph().steps["here"].source
    assert source is not None
    path, line = source
    assert path == __file__
    assert line > 0
