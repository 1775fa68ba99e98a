"""How a step ended, turned into a :class:`~flask_geneva.transitions.StepResult`.

A body returns, raises a flow-control signal, or raises an exception; a precondition
decides; a stored reference is missing. Exceptions go through the exception policies
(:func:`~flask_geneva.policy.resolve`), including the reattempt limit and an
imperative handler, which runs here as if inside the step so its flow-control calls
raise signals.

A reattempt policy's wait may depend on the attempt (:mod:`~flask_geneva.backoff`): the
reattempt being scheduled is number ``consecutive_reattempts + 1``, where
``consecutive_reattempts`` is the count carried by the execution that just failed (0 on
the step's first run; each automatic reattempt's execution carries one more; a
``self.reattempt()`` carries it unchanged; a success or an operator's resume starts
again at 0). A callable wait that raises, or returns no valid wait, pauses the workflow
with an error that says so, like a handler that raises: never a crash of the worker.
"""

from __future__ import annotations

import traceback
from typing import Any

from .flow import FlowSignal
from .flow import ReattemptSignal
from .policy import resolve
from .records import ErrorInfo
from .records import StepResult
from .steps import StepDefinition


def from_exception(
    workflow: Any,
    step: StepDefinition,
    consecutive_reattempts: int,
    error: BaseException,
    reason: str,
    log: Any,
) -> StepResult:
    """Turn an exception into a result through the exception policies."""
    info = ErrorInfo.from_exception(error, traceback.format_exc())
    policy = resolve(step.policy, workflow.__geneva_definition__.policies, error)
    if policy.handler is not None:
        workflow._geneva_context = log
        try:
            policy.handler(workflow, error)
        except FlowSignal as signal:
            return from_signal(signal, info, "exception_policy")
        except KeyboardInterrupt:
            raise
        except BaseException as handler_error:
            log.exception("exception handler raised %r; workflow paused", handler_error)
        finally:
            workflow._geneva_context = None
        return StepResult("failed", error=info, then="pause")
    if policy.action == "reattempt":
        limit = policy.max_reattempts
        if limit is not None and consecutive_reattempts >= limit:
            log.info("reattempt limit (%d) reached; %s", limit, policy.terminal_action)
            return StepResult("failed", error=info, then=policy.terminal_action)
        attempt = consecutive_reattempts + 1
        try:
            wait = policy.delay(attempt)
        except KeyboardInterrupt:
            raise
        except BaseException as wait_error:
            log.exception("reattempt wait raised %r; workflow paused", wait_error)
            return StepResult("failed", error=_wait_failed(info, attempt, wait_error), then="pause")
        return StepResult("reattempt", wait=wait, error=info, reason=reason)
    if policy.action == "skip":
        return StepResult("skip", error=info)
    return StepResult("failed", error=info, then=policy.action or "pause")


def _wait_failed(info: ErrorInfo, attempt: int, error: BaseException) -> ErrorInfo:
    """The error kept when a policy's callable wait failed: its own, then the step's."""
    failed = ErrorInfo.from_exception(error, "")
    message = (
        f"the reattempt policy's wait failed for reattempt {attempt}: {failed.message}; "
        f"workflow paused instead of reattempting. The step's error was "
        f"{info.error_class}: {info.message}"
    )
    trace = "".join(traceback.format_exception(error, chain=False))
    return ErrorInfo(
        failed.error_class,
        message,
        f"{info.traceback}\nWhile choosing the reattempt's wait:\n\n{trace}",
    )


def from_signal(signal: FlowSignal, error: ErrorInfo | None, reason: str) -> StepResult:
    if isinstance(signal, ReattemptSignal):
        return StepResult("reattempt", wait=signal.wait, error=error, reason=reason)
    if signal.action == "continue":
        # A resumable step's checkpoint (flask_geneva.resumable.ContinueSignal).
        cursor, iterations = getattr(signal, "cursor", None), getattr(signal, "iterations", 0)
        return StepResult("continue", cursor=cursor, iterations=iterations)
    if signal.action == "pause" and error is not None:
        return StepResult("failed", error=error, then="pause")
    if signal.action == "cancel" and error is not None:
        return StepResult("failed", error=error, then="cancel")
    return StepResult(signal.action, error=error)


def failed(error: Exception) -> StepResult:
    """Pause on ``error`` (a missing reference); it is raised to test helpers after commit."""
    return StepResult(
        "failed", error=ErrorInfo.from_exception(error, ""), then="pause", exception=error
    )
