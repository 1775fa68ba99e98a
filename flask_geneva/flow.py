"""Flow control: the signals a step body raises to stop itself and say what happens next.

The signals derive from :class:`BaseException`, not :class:`Exception`, so user code
written as ``try: ... except Exception: ...`` inside a step cannot swallow them. Huey's
``CancelExecution`` and ``RetryTask`` are the same idea: signalling by raising.
"""

from __future__ import annotations

from datetime import timedelta


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
    """``self.reattempt(wait=...)`` inside a step: run this step again after ``wait``."""

    action = "reattempt"

    def __init__(self, wait: timedelta) -> None:
        super().__init__(wait)
        self.wait = wait
