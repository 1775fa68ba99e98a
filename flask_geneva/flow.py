"""Flow control: the signals a step body raises to stop itself and say what happens next.

The signals derive from :class:`BaseException`, not :class:`Exception`, so user code
written as ``try: ... except Exception: ...`` inside a step cannot swallow them. Huey's
``CancelExecution`` and ``RetryTask`` are the same idea: signalling by raising.
"""

from __future__ import annotations

from datetime import timedelta

from .policy import to_wait


class FlowSignal(BaseException):  # noqa: N818 - a signal, not an error
    """Base of the flow-control signals; caught only by the executor."""

    #: The action name the executor records for this signal.
    action: str = ""


class CancelSignal(FlowSignal):
    """``self.cancel()`` inside a step: cancel the workflow."""

    action = "cancel"


class PauseSignal(FlowSignal):
    """``self.pause()`` inside a step: pause the workflow; resume runs this step again."""

    action = "pause"


class SkipSignal(FlowSignal):
    """``self.skip()`` inside a step: record the step as skipped and go on."""

    action = "skip"


class FinishSignal(FlowSignal):
    """``self.finish()`` inside a step: complete the step and finish the workflow now."""

    action = "finish"


class ReattemptSignal(FlowSignal):
    """``self.reattempt(wait=...)`` inside a step: run this step again after ``wait``.

    The wait is checked here, while the body is still running: a wait no due time can
    hold (negative, NaN, infinite, over 100 years) raises :class:`ValueError` or
    :class:`TypeError` from the ``self.reattempt()`` call, an ordinary exception of the
    body that the step's exception policy handles (by default: pause), rather than a
    crash of the transaction that would schedule the next attempt.

    The backoff strategies (``"exponential"``, ``"polynomial"``, a callable of the
    attempt number) belong to ``ExceptionPolicy(wait=...)``, which counts the attempts;
    here they are a :class:`TypeError` that says so. A step that backs off computes its
    wait itself.

    :param wait: a timedelta, a number of seconds, or None (run again now).
    """

    action = "reattempt"

    def __init__(self, wait: timedelta | int | float | None = None) -> None:
        try:
            delay = to_wait(wait)
        except (TypeError, ValueError) as exc:
            hint = ""
            if isinstance(wait, str) or callable(wait):
                hint = (
                    "; backoff strategies ('exponential', 'polynomial', a callable of the "
                    "attempt number) are for ExceptionPolicy(wait=...), which counts the "
                    "attempts: inside a step, compute the wait"
                )
            raise type(exc)(f"reattempt(wait=...) was given an {exc}{hint}") from None
        super().__init__(delay)
        self.wait = delay
