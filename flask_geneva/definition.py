"""Collect a workflow class's declarations into its definition when the class is created.

Runs from ``Workflow.__init_subclass__``: pure Python, no app or database. Each class
gets a :class:`WorkflowDefinition` holding its step graph, class-level policies,
``cancel_if`` conditions, hero rule and job options, inherited ones included.
"""

from __future__ import annotations

import inspect
import unicodedata
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .crontabs import Schedule
from .crontabs import coerce as coerce_schedule
from .errors import DefinitionError
from .graph import StepGraph
from .models import BASE_IDENTITY
from .policy import ExceptionPolicy
from .policy import class_policy_order
from .policy import coerce_policy
from .schedules import coerce_catch_up
from .steps import Condition
from .steps import StepDeclaration
from .steps import StepDefinition
from .steps import attribute_target
from .steps import build_definition
from .steps import check_condition
from .synchronous import check_condition_runs
from .synchronous import check_handler_runs
from .synchronous import check_step_runs

#: Job options a class may set in ``step_job_options``.
JOB_OPTIONS = frozenset({"priority"})
#: The longest step name the ``step_name`` column stores, and the longest identity the
#: ``type`` column stores (both are 191 characters: see ``models``).
MAX_NAME_LENGTH = 191


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
    #: The identity the class's rows store in the ``type`` column (checked), or None
    #: for an ``__abstract__`` class, which stores no rows.
    identity: str | None = None
    #: ``schedule`` (inherited like any attribute), or None; see :mod:`~flask_geneva.schedules`.
    schedule: Schedule | None = None
    #: How many missed ticks a run starts (0: only the latest).
    schedule_catch_up: int = 0
    #: Whether ``scheduled_heroes()`` names the heroes to start it for at each tick.
    scheduled_heroes: bool = False
    #: Whether a step waits for a signal: then every locked snapshot reads the
    #: workflow's signals too (one more statement; classes without one never pay it).
    waits: bool = False
    #: ``removed_steps``: names of steps the class no longer defines whose executions
    #: are skipped (the workflow carries on with the current graph).
    removed_steps: frozenset[str] = frozenset()
    #: ``skip_undefined_steps``: every step the class does not define is skipped so.
    skip_undefined_steps: bool = False

    def skips(self, step_name: str) -> bool:
        """Whether an execution of ``step_name``, which the class does not define, is skipped."""
        return self.skip_undefined_steps or step_name in self.removed_steps


def build(cls: type, parent: WorkflowDefinition | None) -> WorkflowDefinition:
    """Build ``cls``'s definition from its own class body and its parent's definition."""
    name = cls.__name__
    identity = stored_identity(cls)
    inherited = parent.definitions if parent else ()
    definitions = list(inherited)
    inherited_names = {d.name for d in inherited}

    for attr, declaration in _own_declarations(cls):
        explicit = declaration.options.get("name")
        if explicit is not None and (not isinstance(explicit, str) or not explicit):
            raise DefinitionError(
                f"{name}.{attr or '?'}: name= must be a non-empty string, got {explicit!r}"
            )
        step_name = explicit or attr or f"step_{len(definitions) + 1}"
        if len(step_name) > MAX_NAME_LENGTH:
            raise DefinitionError(
                f"{name}.{step_name[:40]}...: step names are stored in a column of "
                f"{MAX_NAME_LENGTH} characters; give the step a shorter name="
            )
        if step_name in inherited_names:
            raise DefinitionError(
                f"{name}.{step_name}: step {step_name!r} is already defined in a parent "
                "class (step names must be unique, inherited ones included); to change "
                "its body, override the method without @step"
            )
        definitions.append(
            build_definition(declaration, class_name=name, name=step_name, attr=attr, owner=cls)
        )
    graph = StepGraph(name, definitions)
    _check_inherited_names_run(cls, name, parent)

    policies = _policies(cls, name)
    declared = (parent.declared_policies if parent else ()) + ((policies,) if policies else ())
    conditions = tuple(
        check_condition(c, f"{name}: cancel_if", cls)
        for c in _as_tuple(cls.__dict__.get("cancel_if"))
    )
    return WorkflowDefinition(
        class_name=name,
        definitions=tuple(definitions),
        graph=graph,
        declared_policies=declared,
        policies=class_policy_order(declared),
        cancel_if=(parent.cancel_if if parent else ()) + conditions,
        may_proceed_without_hero=bool(getattr(cls, "may_proceed_without_hero", False)),
        job_options=_job_options(cls, name, parent),
        identity=identity,
        **_schedule(cls, name, identity),
        waits=any(d.wait_for is not None for d in definitions),
        removed_steps=_removed_steps(cls, name, graph),
        skip_undefined_steps=_flag(cls, name, "skip_undefined_steps"),
    )


def stored_identity(cls: type) -> str | None:
    """Return the identity ``cls`` stores in the ``type`` column, after checking it.

    It is ``__geneva_type__`` from the class's own body, else the class name; None for
    an ``__abstract__`` class. Every row of the class carries it, and it maps rows back
    to the class, so it must be a name the column holds on every database and that no
    other identity can be mistaken for.

    :raises DefinitionError: it is not a string, is empty or padded with whitespace,
        holds control characters, is longer than the column (191 characters), or is the
        base class's identity; or ``__mapper_args__`` maps the class to another one.
    """
    name = cls.__name__
    if cls.__dict__.get("_geneva_base"):
        return BASE_IDENTITY
    if cls.__dict__.get("__abstract__"):
        return None
    pinned = "__geneva_type__" in cls.__dict__
    identity = cls.__dict__["__geneva_type__"] if pinned else name
    what = "__geneva_type__" if pinned else "the class name (the default stored identity)"
    fix = (
        "give __geneva_type__ another value, or remove it to store the class name"
        if pinned
        else "pin another identity with __geneva_type__ = '...'"
    )
    if not isinstance(identity, str):
        raise DefinitionError(
            f"{name}: __geneva_type__ must be a string (the identity stored in the type "
            f"column), got {identity!r}; {fix}"
        )
    problem = _identity_problem(identity)
    if problem is not None:
        shown = f"{identity[:40]!r}..." if len(identity) > 40 else repr(identity)
        raise DefinitionError(f"{name[:80]}: {what} {shown} {problem}; {fix}")
    _check_mapper_identity(cls, identity)
    return identity


def _identity_problem(identity: str) -> str | None:
    if not identity.strip():
        return "is empty; an identity must name the class"
    if identity != identity.strip():
        return (
            "begins or ends with whitespace, which MariaDB ignores when comparing, so it "
            "would match another identity"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in identity):
        return (
            "contains a control character or a lone surrogate, which the databases refuse "
            "to store (PostgreSQL rejects NUL, none encode a lone surrogate)"
        )
    if len(identity) > MAX_NAME_LENGTH:
        return (
            f"is {len(identity)} characters long; the type column stores at most {MAX_NAME_LENGTH}"
        )
    if identity.casefold() == BASE_IDENTITY.casefold():
        return (
            "is the identity of the base class (rows whose class is missing load as "
            "it), and MariaDB compares identities without regard to case"
            if identity != BASE_IDENTITY
            else "is the identity of the base class (rows whose class is missing load as it)"
        )
    return None


def _check_mapper_identity(cls: type, identity: str) -> None:
    """A class's own ``__mapper_args__`` must map it to the identity it registers under.

    The identity is set as the ``polymorphic_identity`` only when the class has no
    ``__mapper_args__`` of its own; given one, rows would be stored under whatever it
    says (or none), and no class would be found for them.
    """
    args = cls.__dict__.get("__mapper_args__")
    if not isinstance(args, Mapping) or args.get("polymorphic_abstract"):
        return
    mapped = args.get("polymorphic_identity")
    if mapped != identity:
        raise DefinitionError(
            f"{cls.__name__}: __mapper_args__ gives polymorphic_identity {mapped!r}, but the "
            f'class is registered as {identity!r}; put "polymorphic_identity": '
            f"{identity!r} in __mapper_args__, or set __geneva_type__ to store another "
            "identity (and use the same value in both)"
        )


def _own_declarations(cls: type) -> list[tuple[str | None, StepDeclaration]]:
    """Return the steps declared in ``cls``'s own body, in definition order.

    A declaration is a step once, however many attributes refer to it (an alias such as
    ``retry = capture`` is not a second step); the attribute it was decorated under
    names it. Lists and tuples of declarations (a loop in the class body) give unnamed
    steps.
    """
    found: dict[int, tuple[str | None, StepDeclaration]] = {}
    for attr, value in cls.__dict__.items():
        if isinstance(value, StepDeclaration):
            if value.attr_name == attr or id(value) not in found:
                found[id(value)] = (attr if value.attr_name == attr else None, value)
        elif (
            isinstance(value, list | tuple)
            and value
            and all(isinstance(v, StepDeclaration) for v in value)
        ):
            for v in value:
                found.setdefault(id(v), (None, v))
    return sorted(found.values(), key=lambda pair: pair[1].order)


def _schedule(cls: type, name: str, identity: str | None) -> dict[str, Any]:
    """Check ``schedule``, ``schedule_catch_up`` and ``scheduled_heroes`` (inherited too)."""
    raw = getattr(cls, "schedule", None)
    if isinstance(inspect.getattr_static(cls, "schedule", None), StepDeclaration):
        raw = None  # a step named "schedule", not a crontab
    heroes = inspect.getattr_static(cls, "scheduled_heroes", None)
    catch_up = getattr(cls, "schedule_catch_up", None)
    if raw is None:
        if heroes is not None or catch_up not in (None, False, 0):
            what = "scheduled_heroes" if heroes is not None else "schedule_catch_up"
            raise DefinitionError(
                f"{name}: {what} is set but the class has no schedule; add "
                "schedule = huey.crontab(...)"
            )
        return {}
    if heroes is not None and not isinstance(heroes, classmethod):
        raise DefinitionError(
            f"{name}: scheduled_heroes must be a classmethod returning the heroes to start "
            f"the workflow for at each tick (decorate it with @classmethod), got {heroes!r}"
        )
    schedule = coerce_schedule(raw, name)
    return {
        # An __abstract__ class stores no rows: its subclasses inherit the schedule.
        "schedule": schedule if identity is not None else None,
        "schedule_catch_up": coerce_catch_up(catch_up, name),
        "scheduled_heroes": heroes is not None,
    }


def _removed_steps(cls: type, name: str, graph: StepGraph) -> frozenset[str]:
    """Check ``removed_steps`` (inherited like any attribute): names the class lacks."""
    raw = getattr(cls, "removed_steps", ())
    if isinstance(raw, str) or not isinstance(raw, list | tuple | set | frozenset):
        raise DefinitionError(
            f"{name}: removed_steps must be a tuple of step names such as "
            f"('old_name',), got {raw!r}"
        )
    for removed in raw:
        if not isinstance(removed, str) or not removed:
            raise DefinitionError(
                f"{name}: removed_steps must hold step names (non-empty strings), got {removed!r}"
            )
        if removed in graph:
            raise DefinitionError(
                f"{name}.{removed}: step {removed!r} is both defined and listed in "
                "removed_steps; remove it from removed_steps (or remove the step)"
            )
    return frozenset(raw)


def _flag(cls: type, name: str, attribute: str) -> bool:
    value = getattr(cls, attribute, False)
    if not isinstance(value, bool):
        raise DefinitionError(f"{name}: {attribute} must be True or False, got {value!r}")
    return value


def _job_options(cls: type, name: str, parent: WorkflowDefinition | None) -> dict[str, Any]:
    """Merge ``step_job_options`` down the inheritance chain (a subclass's keys win)."""
    job_options = dict(parent.job_options if parent else {})
    own = cls.__dict__.get("step_job_options")
    if own is None:
        return job_options
    problem = job_options_problem(own)
    if problem is not None:
        raise DefinitionError(f"{name}: {problem}")
    job_options.update(own)
    return job_options


def job_options_problem(options: Any) -> str | None:
    """What is wrong with a ``step_job_options`` dict (a class's, or one ``create``'s)."""
    if not isinstance(options, Mapping):
        return f"step_job_options must be a dict such as {{'priority': 10}}, got {options!r}"
    unknown = set(options) - JOB_OPTIONS
    if unknown:
        return (
            f"unknown step_job_options {sorted(map(str, unknown))}; "
            f"supported: {sorted(JOB_OPTIONS)}"
        )
    priority = options.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        return f"step_job_options priority must be an integer (higher runs first), got {priority!r}"
    return None


def _policies(cls: type, name: str) -> tuple[ExceptionPolicy, ...]:
    """Return the class-level policies declared in ``cls``'s own body, as listed."""
    raw = cls.__dict__.get("on_exception")
    if raw is None:
        return ()
    items = raw if isinstance(raw, list | tuple) else [raw]
    policies = []
    for item in items:
        try:
            policies.append(coerce_policy(item))
        except ValueError as exc:
            raise DefinitionError(f"{name}: class-level {exc}") from None
    for policy in policies:
        check_handler_runs(policy, f"{name}: class-level on_exception")
    blankets = [p for p in policies if p.is_blanket]
    if len(blankets) > 1:
        raise DefinitionError(
            f"{name}: on_exception lists {len(blankets)} blanket policies (without "
            "exceptions=); only the first could ever apply, so keep one and give the "
            "others exceptions=(...)"
        )
    return tuple(policies)


def _check_inherited_names_run(cls: type, name: str, parent: WorkflowDefinition | None) -> None:
    """Check what inherited names resolve to in ``cls``: a subclass may override them.

    A step's body and a condition given as a method name are looked up on the instance
    at run time, so an ``async def`` override in a subclass would not run either.
    """
    if parent is None:
        return
    for definition in parent.definitions:
        where = f"{name}.{definition.name}"
        if definition.method_name is not None:
            check_step_runs(attribute_target(cls, definition.method_name), where)
        if isinstance(definition.skip_if, str):
            target = attribute_target(cls, definition.skip_if)
            check_condition_runs(target, definition.skip_if, f"{where}: invalid skip_if")
    for condition in parent.cancel_if:
        if isinstance(condition, str):
            target = attribute_target(cls, condition)
            check_condition_runs(target, condition, f"{name}: cancel_if")


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def step_names(definition: WorkflowDefinition) -> Iterable[str]:
    """Return the step names in sequence order."""
    return definition.graph.steps.keys()
