"""Refuse steps, conditions and handlers that calling would not run: async and generators.

The engine calls a step's body, its ``skip_if``, the class's ``cancel_if`` and an
exception handler synchronously, in a worker thread. Calling an ``async def`` function
or a generator function runs none of its body: it only makes a coroutine or a
generator, which nothing would drive. An async step would be recorded as succeeded
without running, and a coroutine is always true, so an async ``skip_if`` would always
skip. These checks run when the class is created, so such a definition fails at import.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING
from typing import Any

from .errors import DefinitionError

if TYPE_CHECKING:
    from .policy import ExceptionPolicy


def why_call_does_not_run(func: Any) -> tuple[str, str] | None:
    """Say why calling ``func`` would not run its body, or None if it would.

    Calling an ``async def`` function, a generator function or an async generator
    function runs none of its body: it only makes a coroutine or a generator, which the
    engine (calling steps, conditions and handlers synchronously) would never drive.
    Decorators are seen through ``__wrapped__`` (``functools.wraps``), partials through
    their function and callable objects through ``__call__``.

    :return: ``(what it is, what calling it makes)``, e.g.
        ``("an async function (async def)", "a coroutine")``.
    """
    if func is None or isinstance(func, bool | str) or not callable(func):
        return None
    targets = [func]
    try:
        unwrapped = inspect.unwrap(func)
    except ValueError:  # a __wrapped__ cycle: look at func alone
        unwrapped = func
    if unwrapped is not func:
        targets.append(unwrapped)
    for target in list(targets):
        if isinstance(target, staticmethod | classmethod):
            targets.append(target.__func__)
        elif not (inspect.isroutine(target) or isinstance(target, functools.partial | type)):
            targets.append(type(target).__call__)  # a callable object
    for target in targets:
        wrapped = " behind a decorator (seen through __wrapped__)" if target is not func else ""
        if inspect.isasyncgenfunction(target):
            return f"an async generator function{wrapped}", "an async generator"
        if inspect.iscoroutinefunction(target):
            return f"an async function (async def){wrapped}", "a coroutine"
        if inspect.isgeneratorfunction(target):
            return f"a generator function (it contains yield){wrapped}", "a generator"
    return None


def check_step_runs(func: Any, where: str) -> None:
    """Refuse a step body that calling would not run (``async def``, a generator).

    :param where: ``Class.step``, the start of the message.
    """
    problem = why_call_does_not_run(func)
    if problem is None:
        return
    kind, makes = problem
    fix = (
        "make it a plain def that returns instead of yielding"
        if makes == "a generator"
        else "make it a plain def (run async code inside it with asyncio.run(...))"
    )
    raise DefinitionError(
        f"{where}: the step is {kind}; steps are called synchronously, so calling it "
        f"would only make {makes} and its body would never run; {fix}"
    )


def check_condition_runs(target: Any, condition: Any, where: str) -> None:
    """Refuse a condition that calling would not evaluate (``async def``, a generator).

    :param target: what the condition calls (for a name, :func:`attribute_target`).
    :param condition: the condition as written, named in the message.
    """
    problem = why_call_does_not_run(target)
    if problem is None:
        return
    kind, makes = problem
    raise DefinitionError(
        f"{where}: {condition!r} is {kind}; conditions are called synchronously and "
        f"{makes} is always true, so the condition would hold on every run whatever it "
        "checks; make it a plain def returning a bool"
    )


def check_handler_runs(policy: ExceptionPolicy | None, where: str) -> None:
    """Refuse an exception handler that calling would not run (``async def``, a generator)."""
    if policy is None or policy.handler is None:
        return
    problem = why_call_does_not_run(policy.handler)
    if problem is None:
        return
    kind, makes = problem
    raise DefinitionError(
        f"{where}: the on_exception handler {policy.handler!r} is {kind}; handlers are "
        f"called synchronously, so calling it would only make {makes}, none of its "
        "flow-control calls would happen and every error would pause the workflow; "
        "make it a plain def"
    )
