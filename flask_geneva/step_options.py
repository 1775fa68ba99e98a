"""The options of ``@step`` checked one by one, each turned into what a step holds.

:func:`~flask_geneva.steps.build_definition` calls these when the class is created; a
bad option is a :class:`~flask_geneva.errors.DefinitionError` naming the class and the
step.
"""

from __future__ import annotations

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
