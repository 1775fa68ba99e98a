"""The step graph: default edges, after= edges, fan-out and fan-in, cycles, the ready set."""

from __future__ import annotations

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


@pytest.fixture
def payment(geneva: Geneva) -> Any:
    """The SPEC's payment flow: fan-out after authorize, join at send_receipt."""

    class PaymentWorkflow(geneva.Workflow):
        @step
        def authorize(self) -> None: ...

        @step(wait=3600)
        def capture(self) -> None: ...

        @step(after="authorize")
        def notify_risk_team(self) -> None: ...

        @step(after=["capture", "notify_risk_team"])
        def send_receipt(self) -> None: ...

    return PaymentWorkflow


def test_without_after_each_step_depends_on_the_step_defined_before_it(geneva: Geneva) -> None:
    class Straight(geneva.Workflow):
        @step
        def one(self) -> None: ...

        @step
        def two(self) -> None: ...

        @step
        def three(self) -> None: ...

    graph = Straight.step_graph()
    assert graph.predecessors == {"one": (), "two": ("one",), "three": ("two",)}
    assert graph.successors == {"one": ("two",), "two": ("three",), "three": ()}
    assert graph.roots == ("one",)
    assert graph.topological_order == ("one", "two", "three")


def test_after_a_name_adds_an_edge_and_fans_out(payment: Any) -> None:
    graph = payment.step_graph()
    assert graph.predecessors["capture"] == ("authorize",)
    assert graph.predecessors["notify_risk_team"] == ("authorize",)
    assert graph.successors["authorize"] == ("capture", "notify_risk_team")


def test_after_a_list_joins_several_branches(payment: Any) -> None:
    graph = payment.step_graph()
    assert graph.predecessors["send_receipt"] == ("capture", "notify_risk_team")
    assert graph.successors["capture"] == ("send_receipt",)
    assert graph.successors["notify_risk_team"] == ("send_receipt",)
    assert graph.successors["send_receipt"] == ()


def test_the_payment_graph_has_one_root_and_a_topological_order(payment: Any) -> None:
    graph = payment.step_graph()
    order = graph.topological_order
    assert graph.roots == ("authorize",)
    assert set(order) == set(graph.steps)
    for name, predecessors in graph.predecessors.items():
        assert all(order.index(p) < order.index(name) for p in predecessors)
    assert graph.describe() == [
        ("authorize", ()),
        ("capture", ("authorize",)),
        ("notify_risk_team", ("authorize",)),
        ("send_receipt", ("capture", "notify_risk_team")),
    ]


def test_ready_steps_walks_the_dag_as_branches_finish(payment: Any) -> None:
    graph = payment.step_graph()
    assert graph.ready_steps(done=[], started=[]) == ["authorize"]
    assert graph.ready_steps(done=["authorize"], started=["authorize"]) == [
        "capture",
        "notify_risk_team",
    ]
    started = ["authorize", "capture", "notify_risk_team"]
    # The join waits for both branches.
    assert graph.ready_steps(done=["authorize", "capture"], started=started) == []
    done = ["authorize", "capture", "notify_risk_team"]
    assert graph.ready_steps(done=done, started=started) == ["send_receipt"]
    assert graph.ready_steps(done=done + ["send_receipt"], started=done + ["send_receipt"]) == []


def test_an_empty_after_list_makes_a_root_step(geneva: Geneva) -> None:
    class TwoRoots(geneva.Workflow):
        @step
        def fetch_orders(self) -> None: ...

        @step(after=[])
        def fetch_invoices(self) -> None: ...

        @step(after=["fetch_orders", "fetch_invoices"])
        def reconcile(self) -> None: ...

    graph = TwoRoots.step_graph()
    assert graph.roots == ("fetch_orders", "fetch_invoices")
    assert graph.ready_steps(done=[], started=[]) == ["fetch_orders", "fetch_invoices"]


def test_a_step_without_after_follows_the_previous_step_even_if_that_one_has_after(
    geneva: Geneva,
) -> None:
    class Mixed(geneva.Workflow):
        @step
        def a(self) -> None: ...

        @step(after=[])
        def b(self) -> None: ...

        @step
        def c(self) -> None: ...

    graph = Mixed.step_graph()
    assert graph.predecessors == {"a": (), "b": (), "c": ("b",)}
    assert graph.roots == ("a", "b")


def test_after_may_name_a_step_defined_later(geneva: Geneva) -> None:
    class Forward(geneva.Workflow):
        @step(after="load")
        def report(self) -> None: ...

        @step(after=[])
        def load(self) -> None: ...

    graph = Forward.step_graph()
    assert graph.roots == ("load",)
    assert graph.topological_order == ("load", "report")


def test_after_may_reference_inherited_steps(geneva: Geneva) -> None:
    class Base(geneva.Workflow):
        @step
        def extract(self) -> None: ...

        @step
        def load(self) -> None: ...

    class WithAudit(Base):
        @step(after="extract")
        def audit(self) -> None: ...

    assert WithAudit.step_graph().successors["extract"] == ("load", "audit")
    assert Base.step_graph().successors["extract"] == ("load",)


def test_after_accepts_step_objects_and_ignores_repeated_names(geneva: Geneva) -> None:
    class Objects(geneva.Workflow):
        @step
        def a(self) -> None: ...

        @step(after=[])
        def b(self) -> None: ...

        @step(after=[a, b, "a"])  # type: ignore[list-item]
        def c(self) -> None: ...

    assert Objects.step_graph().predecessors["c"] == ("a", "b")


def test_after_naming_an_unknown_step_is_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Unknown(geneva.Workflow):
            @step
            def a(self) -> None: ...

            @step(after=["a", "ghost"])
            def b(self) -> None: ...

    assert "Unknown.b" in str(info.value)
    assert "after='ghost' references non-existent step" in str(info.value)


@pytest.mark.parametrize("after", ["itself", ["other", "itself"]])
def test_a_step_cannot_run_after_itself(geneva: Geneva, after: Any) -> None:
    with pytest.raises(DefinitionError, match=r"Selfish\.itself: a step cannot run after itself"):

        class Selfish(geneva.Workflow):
            @step
            def other(self) -> None: ...

            @step(after=after)
            def itself(self) -> None: ...


@pytest.mark.parametrize("after", [3, [None], [""], object()])
def test_after_must_name_steps(geneva: Geneva, after: Any) -> None:
    with pytest.raises(DefinitionError, match=r"BadAfter\.b: after= must"):

        class BadAfter(geneva.Workflow):
            @step
            def a(self) -> None: ...

            @step(after=after)
            def b(self) -> None: ...


def test_a_cycle_through_after_is_rejected_and_named(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError) as info:

        class Cyclic(geneva.Workflow):
            @step(after="c")
            def a(self) -> None: ...

            @step
            def b(self) -> None: ...

            @step
            def c(self) -> None: ...

            @step
            def downstream(self) -> None: ...

    message = str(info.value)
    assert message.startswith("Cyclic.a:")
    assert "cycle (a -> b -> c -> a)" in message
    assert "downstream" not in message  # blocked by the cycle, but not part of it


def test_a_two_step_cycle_between_explicit_edges_is_rejected(geneva: Geneva) -> None:
    with pytest.raises(DefinitionError, match=r"cycle \(ping -> pong -> ping\)"):

        class PingPong(geneva.Workflow):
            @step(after="pong")
            def ping(self) -> None: ...

            @step(after="ping")
            def pong(self) -> None: ...


def test_a_wide_fan_out_and_join_is_ordered_topologically(geneva: Geneva) -> None:
    class Wide(geneva.Workflow):
        @step
        def start(self) -> None: ...

        @step(after="start")
        def left(self) -> None: ...

        @step(after="start")
        def middle(self) -> None: ...

        @step(after="start")
        def right(self) -> None: ...

        @step(after="left")
        def left_again(self) -> None: ...

        @step(after=["left_again", "middle", "right"])
        def join(self) -> None: ...

    graph = Wide.step_graph()
    assert graph.successors["start"] == ("left", "middle", "right")
    assert graph.topological_order == ("start", "left", "middle", "right", "left_again", "join")
    assert (
        graph.ready_steps(
            done=["start", "middle", "right"], started=["start", "left", "middle", "right"]
        )
        == []
    )
    assert "join" in graph and "nope" not in graph
    assert len(graph) == 6
