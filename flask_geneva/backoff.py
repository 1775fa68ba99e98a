"""Reattempt backoff: how long a reattempt policy waits before attempt ``n``.

``ExceptionPolicy("reattempt", wait=...)`` takes a constant (a timedelta or seconds),
a strategy name, or a callable:

- ``"exponential"``: ``2 ** n`` seconds plus jitter, at most one hour
  (:data:`EXPONENTIAL_CAP`): 2 s, 4 s, 8 s, ... about 34 min at ``n = 11``, then 1 h.
- ``"polynomial"``: ``n ** 4 + 2`` seconds plus jitter (ActiveJob's
  ``:polynomially_longer``): 3 s, 18 s, 83 s, ... about 1.9 days at ``n = 20``; at most
  :data:`~flask_geneva.policy.MAX_WAIT`, the longest wait any due time may hold.
- a callable taking the attempt number ``n`` and returning a timedelta or seconds; its
  result goes through :func:`~flask_geneva.policy.to_wait` (and None is refused), and
  no jitter is added.

**Jitter**: a strategy adds a random 0 to 15 % (:data:`JITTER`) of its nominal delay,
as ActiveJob does by default, so that workflows failing together (an outage) do not
all come back at the same second. The delay is never shorter than the nominal one.
``exponential`` is capped after the jitter: from ``n = 12`` (``2 ** 12`` s is over an
hour) every reattempt waits exactly one hour; the jitter of the earlier attempts has
already spread the workflows apart by then.

``n`` is the number of the reattempt being scheduled: 1 for the reattempt after the
step's first failure, 2 when that reattempt fails too, and so on. The executor passes
the execution's ``consecutive_reattempts + 1`` (see :mod:`~flask_geneva.results`).

The strategies are pure functions of ``n`` (and a random draw): no app, no database.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .policy import MAX_WAIT
from .policy import to_wait
from .synchronous import why_call_does_not_run

#: The most ``"exponential"`` waits: one hour.
EXPONENTIAL_CAP = timedelta(hours=1)
#: The largest share of the nominal delay a strategy adds at random (15 %).
JITTER = 0.15

#: What ``wait=`` holds once checked: a constant, a strategy name, or a callable.
Wait = timedelta | str | Callable[[int], Any]
#: A source of random numbers in ``[0, 1)``, like :func:`random.random`.
Random = Callable[[], float]

# Past these, 2 ** n and n ** 4 exceed their caps; keeping n below them keeps the
# floats finite for any n (a policy with max_reattempts=None counts without end).
_EXPONENT_LIMIT = 32
_POLYNOMIAL_LIMIT = 10_000


def _jittered(nominal: float, rand: Random) -> float:
    return nominal * (1.0 + JITTER * rand())


def exponential(attempt: int, rand: Random = random.random) -> timedelta:
    """Return the delay before reattempt ``attempt``: ``2 ** attempt`` s plus jitter, at most 1 h.

    :param attempt: the reattempt's number, 1 or more.
    :param rand: the random draw in ``[0, 1)`` that sets the jitter.
    :return: between ``2 ** attempt`` and ``1.15 * 2 ** attempt`` seconds, and never
        more than :data:`EXPONENTIAL_CAP`.
    """
    nominal = float(2 ** min(attempt, _EXPONENT_LIMIT))
    seconds = min(_jittered(nominal, rand), EXPONENTIAL_CAP.total_seconds())
    return timedelta(seconds=seconds)


def polynomial(attempt: int, rand: Random = random.random) -> timedelta:
    """Return the delay before reattempt ``attempt``: ``attempt ** 4 + 2`` s plus jitter.

    :param attempt: the reattempt's number, 1 or more.
    :param rand: the random draw in ``[0, 1)`` that sets the jitter.
    :return: between ``attempt ** 4 + 2`` and ``1.15 * attempt ** 4 + 2`` seconds, and
        never more than :data:`~flask_geneva.policy.MAX_WAIT` (reached between ``n`` =
        229 and 238).
    """
    nominal = float(min(attempt, _POLYNOMIAL_LIMIT) ** 4)
    seconds = min(_jittered(nominal, rand) + 2.0, MAX_WAIT.total_seconds())
    return timedelta(seconds=seconds)


#: The strategies ``wait=`` may name.
STRATEGIES: dict[str, Callable[[int], timedelta]] = {
    "exponential": exponential,
    "polynomial": polynomial,
}


def checked(value: Any) -> Wait:
    """Check a policy's ``wait=`` when the policy is made, and return what to keep.

    :param value: a timedelta, seconds or None (a constant, returned as a timedelta), a
        strategy name (returned as the plain string), or a callable taking the attempt
        number (returned as it is).
    :raises ValueError: an unknown name (the message lists the known ones), a callable
        that calling with one argument would not run (``async def``, a generator, a
        signature that takes no attempt number), or a constant :func:`to_wait` refuses.
    """
    if isinstance(value, str):
        if value not in STRATEGIES:
            known = ", ".join(map(repr, STRATEGIES))
            raise ValueError(
                f"invalid wait value {value!r}: a backoff strategy is one of {known}; otherwise "
                "give a timedelta, a number of seconds, or a callable taking the attempt number"
            )
        return str(value)
    if callable(value):
        func: Callable[[int], Any] = value
        _check_callable(func)
        return func
    try:
        return to_wait(value)
    except TypeError as exc:
        raise ValueError(
            f"{exc}, a backoff strategy ({', '.join(map(repr, STRATEGIES))}) or a callable "
            "taking the attempt number"
        ) from None


def _check_callable(func: Callable[..., Any]) -> None:
    problem = why_call_does_not_run(func)
    if problem is not None:
        kind, makes = problem
        raise ValueError(
            f"invalid wait value {func!r}: it is {kind}; it is called synchronously, so calling "
            f"it would only make {makes}, not a wait; make it a plain def returning a "
            "timedelta or seconds"
        )
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: call it and see
        return
    try:
        signature.bind(1)
    except TypeError as exc:
        raise ValueError(
            f"invalid wait value {func!r}: it is called with the attempt number (1, 2, ...), "
            f"and cannot take it: {exc}"
        ) from None


def delay(wait: Wait, attempt: int) -> timedelta:
    """Return the delay before reattempt ``attempt`` for a checked ``wait``.

    :param wait: what :func:`checked` returned.
    :param attempt: the reattempt's number, 1 or more.
    :raises ValueError: a callable returned a wait :func:`to_wait` refuses (negative,
        NaN, infinite, over 100 years); the message names the callable and the value.
    :raises TypeError: a callable returned something that is not a wait, None included
        (a function that forgot to ``return`` would otherwise reattempt at once).
    :raises Exception: whatever a callable raised, as it raised it.
    """
    if isinstance(wait, timedelta):
        return wait
    if isinstance(wait, str):
        return STRATEGIES[wait](attempt)
    returned = wait(attempt)
    try:
        if returned is None:  # a function that forgot to return: no "run again now"
            raise TypeError("invalid wait value None: expected a timedelta or a number of seconds")
        return to_wait(returned)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"wait={describe(wait)} returned an {exc} (attempt {attempt})") from None


def describe(wait: Wait) -> str:
    """Name a checked ``wait`` for messages: the strategy's name or the callable's."""
    if isinstance(wait, str | timedelta):
        return repr(wait)
    name = getattr(wait, "__qualname__", None)
    return name if isinstance(name, str) else repr(wait)
