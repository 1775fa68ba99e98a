"""Collect a workflow class's declarations into its definition when the class is created.

Runs from ``Workflow.__init_subclass__``: pure Python, no app or database. Each class
gets a :class:`WorkflowDefinition` holding its step graph, class-level policies,
``cancel_if`` conditions, hero rule and job options, inherited ones included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import DefinitionError
from .graph import StepGraph
from .policy import ExceptionPolicy
from .policy import class_policy_order
from .policy import coerce_policy
from .steps import Condition
from .steps import StepDeclaration
from .steps import StepDefinition
from .steps import build_definition
from .steps import check_condition

#: Job options a class may set in ``step_job_options``.
JOB_OPTIONS = frozenset({"priority"})


@dataclass(frozen=True)
class WorkflowDefinition:
    """Everything declared on one workflow class (inherited declarations included)."""

    class_name: str
    #: Every step in definition order, inherited first (the input of the graph).
    definitions: tuple[StepDefinition, ...]
    graph: StepGraph
    #: Class-level policies per class, base first (as declared).
    declared_policies: tuple[tuple[ExceptionPolicy, ...], ...]
    #: Class-level policies in resolution order.
    policies: tuple[ExceptionPolicy, ...]
    cancel_if: tuple[Condition, ...]
    may_proceed_without_hero: bool
    job_options: dict[str, Any]


def build(cls: type, parent: WorkflowDefinition | None) -> WorkflowDefinition:
    """Build ``cls``'s definition from its own class body and its parent's definition."""
    name = cls.__name__
    inherited = parent.definitions if parent else ()
    definitions = list(inherited)

    own = _own_declarations(cls)
    for attr, declaration in own:
        explicit = declaration.options.get("name")
        if explicit is not None and (not isinstance(explicit, str) or not explicit):
            raise DefinitionError(f"{name}.{attr or '?'}: name= must be a non-empty string")
        step_name = explicit or attr or f"step_{len(definitions) + 1}"
        definitions.append(build_definition(declaration, class_name=name, name=step_name))
    graph = StepGraph(name, definitions)

    policies = _policies(cls, name)
    declared = (parent.declared_policies if parent else ()) + ((policies,) if policies else ())
    conditions = tuple(
        check_condition(c, f"{name}: cancel_if") for c in _as_tuple(cls.__dict__.get("cancel_if"))
    )
    job_options = dict(parent.job_options if parent else {})
    own_options = cls.__dict__.get("step_job_options") or {}
    unknown = set(own_options) - JOB_OPTIONS
    if unknown:
        raise DefinitionError(
            f"{name}: unknown step_job_options {sorted(unknown)}; supported: {sorted(JOB_OPTIONS)}"
        )
    job_options.update(own_options)
    return WorkflowDefinition(
        class_name=name,
        definitions=tuple(definitions),
        graph=graph,
        declared_policies=declared,
        policies=class_policy_order(declared),
        cancel_if=(parent.cancel_if if parent else ()) + conditions,
        may_proceed_without_hero=bool(getattr(cls, "may_proceed_without_hero", False)),
        job_options=job_options,
    )


def _own_declarations(cls: type) -> list[tuple[str | None, StepDeclaration]]:
    found: list[tuple[str | None, StepDeclaration]] = []
    for attr, value in cls.__dict__.items():
        if isinstance(value, StepDeclaration):
            found.append((attr if value.attr_name == attr else None, value))
        elif (
            isinstance(value, list | tuple)
            and value
            and all(isinstance(v, StepDeclaration) for v in value)
        ):
            found.extend((None, v) for v in value)
    found.sort(key=lambda pair: pair[1].order)
    return found


def _policies(cls: type, name: str) -> tuple[ExceptionPolicy, ...]:
    raw = cls.__dict__.get("on_exception")
    if raw is None:
        return ()
    items = raw if isinstance(raw, list | tuple) else [raw]
    policies = []
    for item in items:
        try:
            policies.append(coerce_policy(item))
        except ValueError as exc:
            raise DefinitionError(f"{name}: on_exception: {exc}") from None
    blankets = [p for p in policies if not p.exceptions]
    if len(blankets) > 1:
        raise DefinitionError(
            f"{name}: on_exception lists {len(blankets)} blanket policies (without "
            "exceptions=); only the first could ever apply, so list one"
        )
    return tuple(policies)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def step_names(definition: WorkflowDefinition) -> Iterable[str]:
    """Return the step names in sequence order."""
    return definition.graph.steps.keys()
