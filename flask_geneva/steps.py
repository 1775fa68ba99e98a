"""The ``@step`` decorator and the validated, frozen definition of one step.

``@step`` only records what was written (a :class:`StepDeclaration`); the workflow
class turns each declaration into a :class:`StepDefinition` when the class is created,
so every error can name both the class and the step.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from typing import overload

from .errors import DefinitionError
from .policy import UNSET
from .policy import ExceptionPolicy
from .policy import to_wait
from .step_options import as_list
from .step_options import build_policy
from .step_options import map_options
from .step_options import parameters
from .step_options import resumable_options
from .step_options import stuck_after
from .step_options import wait_options
from .synchronous import check_condition_runs
from .synchronous import check_step_runs

_counter = itertools.count()
logger = logging.getLogger("flask_geneva")


StepBody = Callable[[Any], Any]
Condition = Callable[[Any], Any] | str | bool | None


class StepDeclaration:
    """What ``@step`` recorded; becomes a :class:`StepDefinition` when the class is built.

    As a class attribute it behaves like the decorated method, so step methods stay
    callable (``self.capture()``) and overridable in subclasses.
    """

    def __init__(self, func: StepBody, options: dict[str, Any]) -> None:
        if not callable(func):
            hint = " (give the step's name as @step(name=...))" if isinstance(func, str) else ""
            raise TypeError(f"@step needs a function, got {func!r}{hint}")
        self.func = func
        self.options = options
        self.order = next(_counter)
        self.attr_name: str | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        if self.attr_name is None:
            self.attr_name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return self.func.__get__(instance, owner)

    def __repr__(self) -> str:
        return f"<step {self.options.get('name') or self.attr_name or self.func.__name__!r}>"


@overload
def step(func: StepBody, /) -> StepDeclaration: ...
@overload
def step(
    func: StepBody | None = None,
    /,
    *,
    name: str | None = None,
    wait: timedelta | int | float | None = None,
    skip_if: Condition = None,
    on_exception: str | ExceptionPolicy | Callable[..., Any] | None = None,
    max_reattempts: int | None = UNSET,
    terminal_action: str | None = None,
    before_step: str | None = None,
    after_step: str | None = None,
    after: str | Sequence[str] | None = None,
    stuck_after: timedelta | int | float | None = None,
    wait_for: str | None = None,
    timeout: timedelta | int | float | None = None,
    on_timeout: str = "pause",
    matching: Callable[[Any], Any] | None = None,
    for_each: str | None = None,
    max_parallel: int | None = None,
    resumable: bool = False,
    max_iterations: int | None = None,
    max_runtime: timedelta | int | float | None = None,
) -> Callable[[StepBody], StepDeclaration] | StepDeclaration: ...


def step(
    func: StepBody | None = None,
    /,
    **options: Any,
) -> Any:
    """Declare a step of a workflow.

    Use it bare or with options on a method of a workflow class::

        class PaymentWorkflow(geneva.Workflow):
            @step
            def authorize(self): ...

            @step(wait=timedelta(hours=1), on_exception="reattempt", max_reattempts=5)
            def capture(self): ...

            @step(after="authorize")  # runs beside capture
            def notify_risk_team(self): ...

    Called with a function and options, it makes one step from a plain function, so a
    loop in the class body can make several (they are named ``step_1``, ``step_2``...
    by position unless ``name=`` is given)::

        def check_settlement(self): ...
        polls = [step(check_settlement, wait=w) for w in (0, 30, 30, 3600)]

    :param name: the step's name (default: the attribute name).
    :param wait: delay between becoming ready and running (timedelta or seconds).
    :param skip_if: a callable taking the workflow, a method name, or a bool; when true
        at run time the step is recorded as skipped.
    :param on_exception: ``"pause"``, ``"cancel"``, ``"reattempt"``, ``"skip"``, an
        :class:`~flask_geneva.ExceptionPolicy` or a handler ``(workflow, error)``.
    :param max_reattempts: with ``on_exception="reattempt"``: consecutive automatic
        reattempts before ``terminal_action`` (default 100; ``None`` = unlimited).
    :param terminal_action: with ``on_exception="reattempt"``: ``"pause"`` (default)
        or ``"cancel"``.
    :param before_step: insert this step in the sequence before an earlier step.
    :param after_step: insert this step in the sequence after an earlier step.
    :param after: explicit predecessors (a name or a list of names); ``after=[]``
        makes a root step. Without it a step follows the step before it.
    :param stuck_after: how long the step's lease lasts without a heartbeat before
        housekeeping takes its worker for lost (timedelta or seconds, from 1 second to
        365 days; default ``GENEVA_STUCK_IN_PROGRESS_AFTER``). While the body runs, its
        worker renews the lease at least three times per period.
    :param wait_for: the name of a signal the step waits for: it runs only once a
        pending signal of that name exists (see ``docs/signals.md``); the body reads it
        as ``self.received_signal``.
    :param timeout: with ``wait_for``: how long to wait (timedelta or seconds, from when
        the execution started waiting); default forever.
    :param on_timeout: with ``timeout``: ``"pause"`` (default), ``"cancel"``,
        ``"skip"``, or ``"run"`` (the body runs with ``self.received_signal`` None).
    :param matching: with ``wait_for``: a callable taking the payload; only signals it
        accepts are consumed by this step.
    :param for_each: makes a *map step*: it runs once per element of the list that this
        ancestor step returned (``self.item``, ``self.item_index``), and implies
        ``after=`` that step when ``after=`` is not given (see ``docs/data.md``).
    :param max_parallel: with ``for_each``: at most this many items scheduled or running
        at once (default: no limit).
    :param resumable: the body checkpoints its progress (``self.checkpoint(value)``,
        ``self.cursor``) and resumes from the last checkpoint.
    :param max_iterations: with ``resumable``: checkpoints per execution before it ends
        as ``continued`` and a new execution carries on from the cursor.
    :param max_runtime: with ``resumable``: the same, after this long (timedelta or
        seconds).
    """
    # Options are validated when the class is built, so errors name the class and step.
    if func is not None:
        return StepDeclaration(func, options)

    def decorate(f: StepBody) -> StepDeclaration:
        return StepDeclaration(f, options)

    return decorate


_OPTION_NAMES = frozenset(
    {
        "name",
        "wait",
        "skip_if",
        "on_exception",
        "max_reattempts",
        "terminal_action",
        "before_step",
        "after_step",
        "after",
        "stuck_after",
        "wait_for",
        "timeout",
        "on_timeout",
        "matching",
        "for_each",
        "max_parallel",
        "resumable",
        "max_iterations",
        "max_runtime",
    }
)


@dataclass(frozen=True, eq=False)
class StepDefinition:
    """One validated step of one workflow class."""

    #: The step's name, unique within the class.
    name: str
    #: The body; called with the workflow instance.
    func: StepBody
    #: The attribute to look the body up on the instance (so subclasses may override
    #: it), or None for steps made from plain functions.
    method_name: str | None
    wait: timedelta
    skip_if: Condition
    policy: ExceptionPolicy | None
    #: Explicit predecessors, or None for "the step defined before me".
    after: tuple[str, ...] | None
    before_step: str | None
    after_step: str | None
    order: int
    #: Where the body is defined, for the admin's source excerpt: (file, first line).
    source: tuple[str, int] | None
    #: The lease without a heartbeat (None: ``GENEVA_STUCK_IN_PROGRESS_AFTER``).
    stuck_after: timedelta | None = None
    #: The signal the step waits for (None: it does not wait).
    wait_for: str | None = None
    #: How long it waits (None: forever), and what then: ``ON_TIMEOUT``.
    timeout: timedelta | None = None
    on_timeout: str = "pause"
    #: Which payloads it accepts (None: any).
    matching: Callable[[Any], Any] | None = None
    #: A map step: the ancestor whose returned list it runs over (None: not a map step).
    for_each: str | None = None
    #: At most this many of its items scheduled or running at once (None: no limit).
    max_parallel: int | None = None
    #: A resumable step checkpoints a cursor; each execution runs up to these limits.
    resumable: bool = False
    max_iterations: int | None = None
    max_runtime: timedelta | None = None
    #: The body's parameters after ``self``: each names an ancestor, whose output it gets.
    parameters: tuple[str, ...] = ()

    def accepts(self, payload: Any) -> bool:
        """Whether this step takes a signal with ``payload`` (its ``matching``).

        A ``matching`` that raises accepts nothing, and says so in the log: the signal
        stays pending for another step (or for a fixed ``matching`` after a deploy).
        """
        if self.matching is None:
            return True
        try:
            return bool(self.matching(payload))
        except Exception:
            logger.exception(
                "matching of step %r raised on a %r signal; not consumed", self.name, self.wait_for
            )
            return False

    def body(self, workflow: Any) -> Callable[[], Any]:
        """Return the callable that runs this step on ``workflow``."""
        if self.method_name is not None:
            attr = getattr(workflow, self.method_name, None)
            if callable(attr):
                return attr  # type: ignore[no-any-return]
        return lambda: self.func(workflow)

    def should_skip(self, workflow: Any) -> bool:
        """Evaluate ``skip_if`` on ``workflow``."""
        return evaluate_condition(self.skip_if, workflow)


def evaluate_condition(condition: Condition, workflow: Any) -> bool:
    """Evaluate a condition given as a bool, an attribute name or a callable.

    A name is looked up on the workflow: a method is called, any other attribute (a
    property, a flag) is used as it is.
    """
    if condition is None or isinstance(condition, bool):
        return bool(condition)
    if isinstance(condition, str):
        value = getattr(workflow, condition)
        return bool(value() if callable(value) else value)
    return bool(condition(workflow))


def check_condition(condition: Any, where: str, owner: type | None = None) -> Condition:
    """Validate a ``skip_if`` / ``cancel_if`` value at definition time.

    :param where: ``Class.step: option``, the start of any error message.
    :param owner: the workflow class; a condition given as a name must name one of its
        attributes, so a typo fails at import rather than at run time.
    """
    if isinstance(condition, str):
        if owner is not None and not hasattr(owner, condition):
            raise DefinitionError(
                f"{where}: {condition!r} is not a method or attribute of "
                f"{owner.__name__}; define it on the class or pass a callable"
            )
        if owner is not None:
            check_condition_runs(attribute_target(owner, condition), condition, where)
        return condition
    if condition is None or isinstance(condition, bool) or callable(condition):
        check_condition_runs(condition, condition, where)
        return condition  # type: ignore[no-any-return]
    raise DefinitionError(
        f"{where}: invalid condition {condition!r}; expected a callable taking the "
        "workflow, a method name, a bool, or None"
    )


def build_definition(
    declaration: StepDeclaration,
    *,
    class_name: str,
    name: str,
    attr: str | None = None,
    owner: type | None = None,
) -> StepDefinition:
    """Validate a declaration's options and freeze them into a :class:`StepDefinition`.

    :param class_name: the workflow class, named in every error.
    :param name: the step's name (given, attribute or generated).
    :param attr: the class attribute the declaration was found under; the body is looked
        up there on the instance, so a subclass overriding the method runs its override.
    :param owner: the workflow class, to check conditions given as method names.
    """
    opts = declaration.options
    where = f"{class_name}.{name}"
    unknown = set(opts) - _OPTION_NAMES
    if unknown:
        raise DefinitionError(
            f"{where}: unknown step option(s) {', '.join(sorted(unknown))}; "
            f"valid options are {', '.join(sorted(_OPTION_NAMES))}"
        )

    try:
        wait = to_wait(opts.get("wait"))
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: {exc}") from None

    check_step_runs(declaration.func, where)
    policy = build_policy(opts, where)

    if opts.get("before_step") is not None and opts.get("after_step") is not None:
        raise DefinitionError(
            f"{where}: cannot specify both before_step= and after_step=; a step is "
            "inserted at one place in the sequence"
        )

    after = opts.get("after")
    mapped = map_options(opts, where)
    after_names: tuple[str, ...] | None
    if after is None and mapped:
        after_names = (mapped["for_each"],)  # a map step follows the step it maps over
    elif after is None:
        after_names = None
    else:
        items = [after] if isinstance(after, str | StepDeclaration) else as_list(after, where)
        after_names = tuple(step_ref(item, where, "after") for item in items)
        if name in after_names:
            raise DefinitionError(f"{where}: a step cannot run after itself (after={after!r})")

    return StepDefinition(
        name=name,
        func=declaration.func,
        method_name=attr,
        wait=wait,
        skip_if=check_condition(opts.get("skip_if"), f"{where}: invalid skip_if", owner),
        policy=policy,
        after=after_names,
        before_step=optional_ref(opts.get("before_step"), where, "before_step"),
        after_step=optional_ref(opts.get("after_step"), where, "after_step"),
        order=declaration.order,
        source=_source_of(declaration.func),
        stuck_after=stuck_after(opts.get("stuck_after"), where),
        **wait_options(opts, where),
        **mapped,
        **resumable_options(opts, where),
        parameters=parameters(declaration.func, where),
    )


def attribute_target(owner: type, name: str) -> Any:
    """Return what calling or reading attribute ``name`` of an instance of ``owner`` runs.

    Read without running descriptors: a step's function, a static or class method's
    function, a property's getter; any other attribute as it is.
    """
    value = inspect.getattr_static(owner, name, None)
    if isinstance(value, StepDeclaration):
        return value.func
    if isinstance(value, staticmethod | classmethod):
        return value.__func__
    if isinstance(value, property):
        return value.fget
    if isinstance(value, functools.cached_property):
        return value.func
    return value


def _source_of(func: StepBody) -> tuple[str, int] | None:
    try:
        target = inspect.unwrap(func)
        return inspect.getsourcefile(target) or "", target.__code__.co_firstlineno
    except (TypeError, AttributeError):
        return None


def step_ref(item: Any, where: str, option: str) -> str:
    if isinstance(item, StepDeclaration):
        ref = item.options.get("name") or item.attr_name
        if ref:
            return str(ref)
    if isinstance(item, str) and item:
        return item
    raise DefinitionError(f"{where}: {option}= must name steps, got {item!r}")


def optional_ref(item: Any, where: str, option: str) -> str | None:
    return None if item is None else step_ref(item, where, option)
