"""before_step= / after_step=: inserting a step into the sequence (and its default edges)."""

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


def test_before_step_inserts_a_step_before_an_earlier_step(geneva: Geneva) -> None:
    class Before(geneva.Workflow):
        @step
        def first(self) -> None: ...

        @step
        def third(self) -> None: ...

        @step(before_step="third")
        def second(self) -> None: ...

    assert names(Before) == ["first", "second", "third"]


def test_after_step_inserts_a_step_after_an_earlier_step(geneva: Geneva) -> None:
    class After(geneva.Workflow):
        @step
        def first(self) -> None: ...

        @step
        def third(self) -> None: ...

        @step(after_step="first")
        def second(self) -> None: ...

    assert names(After) == ["first", "second", "third"]


def test_positioning_accepts_the_step_object_as_well_as_its_name(geneva: Geneva) -> None:
    class ByObject(geneva.Workflow):
        @step
        def first(self) -> None: ...

        @step
        def third(self) -> None: ...

        @step(after_step=first)  # type: ignore[call-overload]
        def second(self) -> None: ...

    assert names(ByObject) == ["first", "second", "third"]


def test_before_step_can_insert_at_the_very_beginning(geneva: Geneva) -> None:
    class AtStart(geneva.Workflow):
        @step
        def second(self) -> None: ...

        @step
        def third(self) -> None: ...

        @step(before_step="second")
        def first(self) -> None: ...

    assert names(AtStart) == ["first", "second", "third"]


def test_after_step_can_insert_at_the_very_end(geneva: Geneva) -> None:
    class AtEnd(geneva.Workflow):
        @step
        def first(self) -> None: ...

        @step
        def second(self) -> None: ...

        @step(after_step="second")
        def third(self) -> None: ...

    assert names(AtEnd) == ["first", "second", "third"]


def test_positioned_steps_are_inserted_in_definition_order_around_unpositioned_ones(
    geneva: Geneva,
) -> None:
    class Complex(geneva.Workflow):
        @step
        def step_1(self) -> None: ...

        @step
        def step_4(self) -> None: ...

        @step(after_step="step_1")
        def step_2(self) -> None: ...

        @step(before_step="step_4")
        def step_3(self) -> None: ...

    class Around(geneva.Workflow):
        @step
        def middle(self) -> None: ...

        @step(before_step="middle")
        def first(self) -> None: ...

        @step(after_step="middle")
        def last(self) -> None: ...

    class Plain(geneva.Workflow):
        @step
        def alpha(self) -> None: ...

        @step
        def beta(self) -> None: ...

        @step
        def gamma(self) -> None: ...

    assert names(Complex) == ["step_1", "step_2", "step_3", "step_4"]
    assert names(Around) == ["first", "middle", "last"]
    assert names(Plain) == ["alpha", "beta", "gamma"]


def test_two_steps_inserted_after_the_same_target_end_up_latest_first(geneva: Geneva) -> None:
    # Each insertion goes right next to its target in the sequence built so far.
    class SameTarget(geneva.Workflow):
        @step
        def a(self) -> None: ...

        @step(after_step="a")
        def x(self) -> None: ...

        @step(after_step="a")
        def y(self) -> None: ...

    assert names(SameTarget) == ["a", "y", "x"]


def test_positioning_composes_with_other_options(geneva: Geneva) -> None:
    class Composed(geneva.Workflow):
        @step(wait=timedelta(minutes=1))
        def first(self) -> None: ...

        @step(after_step="first")
        def third(self) -> None: ...

        @step(before_step="third", wait=timedelta(minutes=2), on_exception="skip")
        def second(self) -> None: ...

    steps = Composed.step_graph().steps
    assert names(Composed) == ["first", "second", "third"]
    assert [s.wait for s in steps.values()] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(0),
    ]
    policy = steps["second"].policy
    assert policy is not None and policy.action == "skip"


def test_positioning_works_relative_to_inherited_steps(geneva: Geneva) -> None:
    class Parent(geneva.Workflow):
        @step
        def parent_first(self) -> None: ...

        @step
        def parent_last(self) -> None: ...

    class Child(Parent):
        @step(before_step="parent_first")
        def child_before(self) -> None: ...

        @step(after_step="parent_last")
        def child_after(self) -> None: ...

        @step(after_step="parent_first")
        def child_middle(self) -> None: ...

    assert names(Parent) == ["parent_first", "parent_last"]
    assert names(Child) == [
        "child_before",
        "parent_first",
        "child_middle",
        "parent_last",
        "child_after",
    ]


def test_default_edges_follow_the_sequence_after_insertion(geneva: Geneva) -> None:
    class Inserted(geneva.Workflow):
        @step
        def b(self) -> None: ...

        @step
        def c(self) -> None: ...

        @step(before_step="b")
        def a(self) -> None: ...

    graph = Inserted.step_graph()
    assert graph.predecessors == {"a": (), "b": ("a",), "c": ("b",)}


def test_a_step_inserted_before_the_first_defined_step_runs_first(geneva: Geneva) -> None:
    class FirstInserted(geneva.Workflow):
        @step
        def b(self) -> None: ...

        @step
        def c(self) -> None: ...

        @step(before_step="b")
        def a(self) -> None: ...

    graph = FirstInserted.step_graph()
    assert graph.roots == ("a",)
    assert graph.ready_steps(done=[], started=[]) == ["a"]
    assert graph.topological_order == ("a", "b", "c")


def test_before_step_and_after_step_together_are_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Both(geneva.Workflow):
            @step
            def first(self) -> None: ...

            @step(before_step="first", after_step="first")
            def second(self) -> None: ...

    assert "Both.second" in str(info.value)
    assert "cannot specify both before_step= and after_step=" in str(info.value)


@pytest.mark.parametrize("option", ["before_step", "after_step"])
@pytest.mark.parametrize("with_earlier_step", [False, True])
def test_positioning_must_reference_an_already_defined_step(
    geneva: Geneva, option: str, with_earlier_step: bool
) -> None:
    with pytest.raises(DefinitionError) as info:

        class Unknown(geneva.Workflow):
            if with_earlier_step:

                @step
                def first(self) -> None: ...

            @step(**{option: "nonexistent"})
            def positioned(self) -> None: ...

    message = str(info.value)
    assert "Unknown.positioned" in message
    assert "references non-existent step" in message
    assert "'nonexistent'" in message
    assert option in message
    assert "already been defined" in message


def test_positioning_cannot_reference_a_step_defined_later(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match=r"Forward\.early: before_step='late' references"):

        class Forward(geneva.Workflow):
            @step(before_step="late")
            def early(self) -> None: ...

            @step
            def late(self) -> None: ...


def test_positioning_target_must_be_a_step_name(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match=r"NotAName\.second: before_step= must name steps"):

        class NotAName(geneva.Workflow):
            @step
            def first(self) -> None: ...

            @step(before_step=3)  # type: ignore[call-overload]
            def second(self) -> None: ...
