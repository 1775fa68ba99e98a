"""The options of ``@step`` checked one by one, each turned into what a step holds.

:func:`~flask_geneva.steps.build_definition` calls these when the class is created; a
bad option is a :class:`~flask_geneva.errors.DefinitionError` naming the class and the
step.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any

from .errors import DefinitionError
from .policy import ACTIONS
from .policy import UNSET
from .policy import ExceptionPolicy
from .policy import coerce_policy
from .policy import to_wait
from .synchronous import check_condition_runs
from .synchronous import check_handler_runs

#: What ``@step(on_timeout=)`` may be: what happens when a signal does not come in time.
ON_TIMEOUT = ("pause", "cancel", "skip", "run")


def wait_options(opts: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``wait_for``, ``timeout``, ``on_timeout`` and ``matching``."""
    wait_for = opts.get("wait_for")
    timeout = opts.get("timeout")
    on_timeout = opts.get("on_timeout", "pause")
    matching = opts.get("matching")
    if wait_for is None:
        for option in ("timeout", "on_timeout", "matching"):
            if opts.get(option) is not None:
                raise DefinitionError(
                    f"{where}: {option}= applies only to a step that waits for a signal; "
                    "add wait_for='signal-name' or remove it"
                )
        return {}
    if not isinstance(wait_for, str) or not wait_for.strip():
        raise DefinitionError(
            f"{where}: wait_for= must be a non-empty signal name, got {wait_for!r}"
        )
    if len(wait_for) > 191:
        raise DefinitionError(f"{where}: wait_for= names a signal of at most 191 characters")
    if on_timeout not in ON_TIMEOUT:
        raise DefinitionError(
            f"{where}: invalid on_timeout {on_timeout!r}; expected one of "
            f"{', '.join(map(repr, ON_TIMEOUT))}"
        )
    delta: timedelta | None = None
    if timeout is not None:
        try:
            delta = to_wait(timeout)
        except (TypeError, ValueError) as exc:
            raise DefinitionError(f"{where}: invalid timeout: {exc}") from None
    if matching is not None:
        if not callable(matching):
            raise DefinitionError(
                f"{where}: matching= must be a callable taking the payload, got {matching!r}"
            )
        check_condition_runs(matching, matching, f"{where}: invalid matching")
    return dict(wait_for=wait_for, timeout=delta, on_timeout=on_timeout, matching=matching)


#: The range of ``stuck_after=``: a lease renewed every third of it, and a date range
#: the database can subtract it from.
STUCK_AFTER_RANGE = (timedelta(seconds=1), timedelta(days=365))


def stuck_after(value: Any, where: str) -> timedelta | None:
    if value is None:
        return None
    low, high = STUCK_AFTER_RANGE
    try:
        delta = to_wait(value)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: invalid stuck_after: {exc}") from None
    if not low <= delta <= high:
        raise DefinitionError(
            f"{where}: invalid stuck_after {value!r}: it must be between {low} and {high}"
        )
    return delta


def map_options(opts: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``for_each`` and ``max_parallel`` (that the producer is an ancestor: the graph)."""
    for_each = opts.get("for_each")
    max_parallel = opts.get("max_parallel")
    if for_each is None:
        if max_parallel is not None:
            raise DefinitionError(
                f"{where}: max_parallel= applies only to a map step; add for_each='step' "
                "(the step whose list it maps over) or remove it"
            )
        return {}
    if not isinstance(for_each, str) or not for_each:
        raise DefinitionError(
            f"{where}: for_each= must name the step whose returned list this step maps "
            f"over, got {for_each!r}"
        )
    if opts.get("wait_for") is not None:
        raise DefinitionError(
            f"{where}: a map step cannot wait for a signal (each signal is consumed by one "
            "execution); wait in a step before it, or in the producer"
        )
    _limit(max_parallel, where, "max_parallel", "items")
    return dict(for_each=for_each, max_parallel=max_parallel)


def _limit(value: Any, where: str, option: str, what: str) -> None:
    """Refuse a count limit that is not None or a positive whole number."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DefinitionError(
            f"{where}: {option}= must be a positive whole number of {what} (or None for "
            f"no limit), got {value!r}"
        )


def resumable_options(opts: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``resumable``, ``max_iterations`` and ``max_runtime``."""
    resumable = opts.get("resumable", False)
    max_iterations = opts.get("max_iterations")
    max_runtime = opts.get("max_runtime")
    if not isinstance(resumable, bool):
        raise DefinitionError(f"{where}: resumable= must be True or False, got {resumable!r}")
    if not resumable:
        for option, value in (("max_iterations", max_iterations), ("max_runtime", max_runtime)):
            if value is not None:
                raise DefinitionError(
                    f"{where}: {option}= applies only to a resumable step; add "
                    "resumable=True or remove it"
                )
        return {}
    _limit(max_iterations, where, "max_iterations", "checkpoints")
    runtime: timedelta | None = None
    if max_runtime is not None:
        try:
            runtime = to_wait(max_runtime)
        except (TypeError, ValueError) as exc:
            raise DefinitionError(f"{where}: invalid max_runtime: {exc}") from None
        if runtime <= timedelta(0):
            raise DefinitionError(f"{where}: max_runtime= must be longer than zero")
    return dict(resumable=True, max_iterations=max_iterations, max_runtime=runtime)


def parameters(func: Any, where: str) -> tuple[str, ...]:
    """The names of a step body's parameters after ``self`` (checked against the graph later)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return ()
    found = list(signature.parameters.values())[1:]
    for parameter in found:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise DefinitionError(
                f"{where}: a step takes only parameters named after its ancestors (each "
                f"receives that step's output), not {parameter}"
            )
        if parameter.kind == parameter.POSITIONAL_ONLY:
            raise DefinitionError(
                f"{where}: parameter {parameter.name!r} is positional-only; a step's "
                "parameters are passed by name (each receives the output of the ancestor "
                "it names)"
            )
    return tuple(p.name for p in found)


def as_list(value: Any, where: str) -> list[Any]:
    try:
        return list(value)
    except TypeError:
        raise DefinitionError(
            f"{where}: after= must be a step name or a list of step names, got {value!r}"
        ) from None


def build_policy(opts: dict[str, Any], where: str) -> ExceptionPolicy | None:
    on_exception = opts.get("on_exception")
    max_reattempts = opts.get("max_reattempts", UNSET)
    terminal_action = opts.get("terminal_action")
    limits = max_reattempts is not UNSET or terminal_action is not None
    if on_exception is None or isinstance(on_exception, str):
        action = on_exception or "pause"
        if on_exception is not None and on_exception not in ACTIONS:
            raise DefinitionError(
                f"{where}: invalid on_exception {on_exception!r}; expected one of "
                f"{', '.join(map(repr, ACTIONS))}, an ExceptionPolicy, or a callable "
                "taking (workflow, error)"
            )
        if limits and action != "reattempt":
            option = "max_reattempts=" if max_reattempts is not UNSET else "terminal_action="
            raise DefinitionError(
                f"{where}: {option} applies only when on_exception='reattempt', and "
                f"on_exception is not 'reattempt' ({action!r}); set on_exception='reattempt' "
                f"or remove {option}"
            )
        if on_exception is None:
            return None
        kwargs: dict[str, Any] = {}
        if action == "reattempt":
            kwargs["max_reattempts"] = max_reattempts
            kwargs["terminal_action"] = terminal_action
        try:
            return ExceptionPolicy(action, **kwargs)
        except (TypeError, ValueError) as exc:
            raise DefinitionError(f"{where}: {exc}") from None
    if limits:
        raise DefinitionError(
            f"{where}: max_reattempts= and terminal_action= cannot be combined with an "
            "ExceptionPolicy or a handler callable; put them in the ExceptionPolicy"
        )
    try:
        policy = coerce_policy(on_exception)
    except ValueError as exc:
        raise DefinitionError(f"{where}: {exc}") from None
    check_handler_runs(policy, where)
    return policy
