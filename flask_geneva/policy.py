"""Exception policies: what a step's exception does, and which policy applies.

Resolution order (first match wins): the step's own policy, then the class-level
policies that name specific exception classes (subclass before parent, in the order
listed), then the class-level blanket policy, then the default: **pause**.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

#: The actions a policy may name.
ACTIONS = ("pause", "cancel", "reattempt", "skip")
#: The actions allowed once the reattempt limit is exhausted.
TERMINAL_ACTIONS = ("pause", "cancel")
#: The reattempt limit when none is given.
DEFAULT_MAX_REATTEMPTS = 100
#: The longest wait a step, a policy or ``self.reattempt(wait=)`` may ask for. A due
#: time is ``now + wait``, and dates end at the year 9999 (Python's and MariaDB's); a
#: wait past that would crash the transaction that schedules it. A century is longer
#: than any workflow waits and keeps every due time far from the edge.
MAX_WAIT = timedelta(days=36525)
_MAX_WAIT_TEXT = "100 years"

ExceptionSpec = type[BaseException] | str
Handler = Callable[[Any, BaseException], Any]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


class ExceptionPolicy:
    """What to do when a step raises.

    Declarative form: an action, optionally limited to some exception classes::

        ExceptionPolicy("reattempt", exceptions=(TimeoutError,), wait=30, max_reattempts=5)

    Imperative form: a handler receiving ``(workflow, error)`` that calls a flow-control
    method (``workflow.reattempt(wait=...)``, ``workflow.skip()``, ...). A handler that
    returns without calling one pauses the workflow::

        ExceptionPolicy(handler=lambda wf, error: wf.skip())

    :param action: ``"pause"``, ``"cancel"``, ``"reattempt"`` or ``"skip"``.
    :param exceptions: exception classes (or their names, matched against the error's
        class hierarchy) this policy applies to; empty means every ``Exception``.
    :param wait: delay before a reattempt: a timedelta or seconds (the same every
        time), ``"exponential"`` (``2 ** n`` s plus jitter, at most 1 h),
        ``"polynomial"`` (``n ** 4 + 2`` s plus jitter), or a callable taking ``n`` and
        returning a timedelta or seconds (see :mod:`~flask_geneva.backoff`). ``n`` is
        the number of the reattempt being scheduled: 1 after the step's first failure,
        then 2, 3, ... while it keeps failing (its consecutive automatic reattempts so
        far, plus one). Kept as :attr:`wait`: the timedelta, the strategy's name or the
        callable.
    :param max_reattempts: consecutive automatic reattempts allowed before
        ``terminal_action`` applies; 100 by default, ``None`` for no limit.
    :param terminal_action: with ``"reattempt"``: what happens once the limit is
        exhausted, ``"pause"`` (default) or ``"cancel"``.
    :param handler: a callable taking ``(workflow, error)``, instead of an action.
    """

    __slots__ = ("action", "exceptions", "handler", "max_reattempts", "terminal_action", "wait")

    def __init__(
        self,
        action: str | None = None,
        *,
        exceptions: ExceptionSpec | Iterable[ExceptionSpec] = (),
        wait: timedelta | int | float | str | Callable[[int], Any] | None = None,
        max_reattempts: int | None = UNSET,
        terminal_action: str | None = None,
        handler: Handler | None = None,
    ) -> None:
        if handler is not None:
            if action is not None:
                raise ValueError("ExceptionPolicy takes an action or a handler, not both")
            if not callable(handler):
                raise ValueError(f"ExceptionPolicy handler must be callable, got {handler!r}")
            if wait is not None or max_reattempts is not UNSET or terminal_action is not None:
                raise ValueError(
                    "ExceptionPolicy with a handler takes no wait, max_reattempts or "
                    "terminal_action: the handler decides (e.g. workflow.reattempt(wait=30))"
                )
        elif action is None:
            raise ValueError(
                "ExceptionPolicy needs an action (one of "
                f"{', '.join(map(repr, ACTIONS))}) or handler=a callable (workflow, error)"
            )
        elif not isinstance(action, str) or action not in ACTIONS:
            raise ValueError(
                f"invalid ExceptionPolicy action {action!r}; expected one of "
                f"{', '.join(map(repr, ACTIONS))}, or handler=a callable (workflow, error)"
            )
        else:
            # A StrEnum member is stored as its plain string, so comparisons and reprs
            # look the same however the action was spelled.
            action = str(action)
        if action != "reattempt" and handler is None:
            if max_reattempts is not UNSET:
                raise ValueError(
                    f"max_reattempts applies only to the 'reattempt' action, not {action!r}"
                )
            if terminal_action is not None:
                raise ValueError(
                    f"terminal_action applies only to the 'reattempt' action, not {action!r}"
                )
            if wait is not None:
                raise ValueError(
                    f"wait applies only to the 'reattempt' action, not {action!r}; a step's "
                    "own delay is @step(wait=...)"
                )
        if max_reattempts is UNSET:
            max_reattempts = DEFAULT_MAX_REATTEMPTS if action == "reattempt" else None
        elif max_reattempts is not None and (
            isinstance(max_reattempts, bool)
            or not isinstance(max_reattempts, int)
            or max_reattempts < 1
        ):
            raise ValueError(
                f"max_reattempts must be a positive integer or None (unlimited), "
                f"got {max_reattempts!r}"
            )
        if terminal_action is None:
            terminal_action = "pause"
        elif not isinstance(terminal_action, str) or terminal_action not in TERMINAL_ACTIONS:
            raise ValueError(
                f"invalid terminal_action {terminal_action!r}; expected 'pause' or 'cancel'"
            )
        terminal_action = str(terminal_action)
        # backoff imports MAX_WAIT and to_wait from this module: imported here, when a
        # policy is made, it finds them defined.
        from .backoff import checked

        checked_wait = checked(wait)
        if isinstance(exceptions, type | str):
            exceptions = (exceptions,)
        try:
            specs = tuple(exceptions)
        except TypeError:
            raise ValueError(
                f"exceptions must be exception classes or names, got {exceptions!r}"
            ) from None
        for spec in specs:
            if not (
                (isinstance(spec, str) and spec)
                or (isinstance(spec, type) and issubclass(spec, BaseException))
            ):
                raise ValueError(
                    f"exceptions must be exception classes or their names, got {spec!r}"
                )
        self.action = action
        self.exceptions: tuple[ExceptionSpec, ...] = specs
        #: The reattempt's wait: a timedelta, a strategy name, or a callable of ``n``.
        self.wait: timedelta | str | Callable[[int], Any] = checked_wait
        self.max_reattempts: int | None = max_reattempts
        self.terminal_action = terminal_action
        self.handler = handler

    @property
    def is_blanket(self) -> bool:
        """True when the policy names no exception classes (it applies to any error)."""
        return not self.exceptions

    def delay(self, attempt: int) -> timedelta:
        """Return the wait before reattempt number ``attempt`` (1 for the first).

        :raises ValueError: a callable ``wait`` returned a wait :func:`to_wait` refuses.
        :raises TypeError: a callable ``wait`` returned something that is not a wait.
        :raises Exception: what a callable ``wait`` raised.
        """
        from .backoff import delay

        return delay(self.wait, attempt)

    def matches(self, error: BaseException) -> bool:
        """Return whether this policy applies to ``error``."""
        if not self.exceptions:
            return True
        names = {f"{k.__module__}.{k.__qualname__}" for k in type(error).__mro__}
        names |= {k.__qualname__ for k in type(error).__mro__}
        for spec in self.exceptions:
            if isinstance(spec, str):
                if spec in names:
                    return True
            elif isinstance(error, spec):
                return True
        return False

    def __repr__(self) -> str:
        if self.handler is not None:
            return f"ExceptionPolicy(handler={self.handler!r})"
        parts = [repr(self.action)]
        if self.exceptions:
            parts.append(f"exceptions={self.exceptions!r}")
        if self.action == "reattempt":
            parts += [
                f"wait={self.wait!r}",
                f"max_reattempts={self.max_reattempts!r}",
                f"terminal_action={self.terminal_action!r}",
            ]
        return f"ExceptionPolicy({', '.join(parts)})"


def to_wait(value: timedelta | int | float | None) -> timedelta:
    """Check a wait and return it as a timedelta: the one check every wait goes through.

    ``@step(wait=)``, ``ExceptionPolicy(wait=)`` and ``self.reattempt(wait=)`` all call
    it, so a wait that no due time could hold fails where it is written (at import, or
    inside the step body) and never in the transaction that schedules the next run. What
    a policy's callable ``wait`` returns goes through it too, when the step fails.

    :param value: a :class:`~datetime.timedelta`, a number of seconds, or None (no wait).
    :raises TypeError: the value is not a timedelta, a number or None.
    :raises ValueError: the wait is negative, infinite or NaN, or longer than
        :data:`MAX_WAIT` (100 years).
    """
    if value is None:
        return timedelta(0)
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise TypeError(
            f"invalid wait value {value!r}: expected a timedelta or a number of seconds"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"invalid wait value {value!r}: it must be a finite number of seconds")
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if seconds < 0:
        raise ValueError(f"invalid wait value {value!r}: it must be non-negative")
    if seconds > MAX_WAIT.total_seconds():
        raise ValueError(
            f"invalid wait value {value!r}: a wait is at most {_MAX_WAIT_TEXT} "
            f"({MAX_WAIT.days} days), so that its due time is a date the database can store"
        )
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


#: The policy used when nothing else matches.
DEFAULT_POLICY = ExceptionPolicy("pause")


def coerce_policy(value: Any) -> ExceptionPolicy:
    """Turn an ``on_exception`` value (action name, policy or handler) into a policy.

    :raises ValueError: the value is none of those; the message lists what is accepted.
    """
    if isinstance(value, ExceptionPolicy):
        return value
    if isinstance(value, str) and value in ACTIONS:
        return ExceptionPolicy(value)
    if callable(value) and not isinstance(value, str | type):
        return ExceptionPolicy(handler=value)
    raise ValueError(
        f"invalid on_exception {value!r}; expected an action name "
        f"({', '.join(map(repr, ACTIONS))}), an ExceptionPolicy, or a callable taking "
        "(workflow, error)"
    )


def resolve(
    step_policy: ExceptionPolicy | None,
    class_policies: Sequence[ExceptionPolicy],
    error: BaseException,
) -> ExceptionPolicy:
    """Return the policy that applies to ``error`` raised by a step.

    :param step_policy: the step's own ``on_exception`` policy, if any.
    :param class_policies: the class-level policies in precedence order (see
        :func:`class_policy_order`).
    """
    if step_policy is not None and step_policy.matches(error):
        return step_policy
    for policy in class_policies:
        if not policy.is_blanket and policy.matches(error):
            return policy
    for policy in class_policies:
        if policy.is_blanket:
            return policy
    return DEFAULT_POLICY


def class_policy_order(
    per_class: Sequence[Sequence[ExceptionPolicy]],
) -> tuple[ExceptionPolicy, ...]:
    """Order class-level policies for :func:`resolve`.

    :param per_class: each class's own declared policies, base class first.
    :return: the subclass's policies before its parents', each class's in listed order.
    """
    ordered: list[ExceptionPolicy] = []
    for policies in reversed(per_class):
        ordered.extend(policies)
    return tuple(ordered)
