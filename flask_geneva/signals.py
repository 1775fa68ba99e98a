"""Blinker signals sent around each phase of running a step.

Connect with ``flask_geneva.signals.step_performed.connect(receiver)``. The sender is
the workflow class; keyword arguments: ``workflow_id``, ``execution_id``,
``step_name``, ``outcome``, ``exception`` (or None) and ``duration`` (seconds).
:data:`step_performed` also gets ``traceparent``: the W3C trace context the workflow
was created in, or None (read from the claimed row, no query of its own). Receivers
should take ``**kwargs``: later versions may send more keyword arguments.
"""

from __future__ import annotations

from typing import Any

from blinker import Namespace
from blinker import Signal

_signals = Namespace()

#: After ``cancel_if`` / ``skip_if`` were evaluated. ``outcome``: ``passed``,
#: ``skipped``, ``canceled`` or ``exception``.
precondition_evaluated = _signals.signal("precondition-evaluated")
#: After the step body returned or raised. ``outcome``: ``completed``, ``finish``,
#: ``cancel``, ``pause``, ``skip``, ``reattempt`` or ``exception``; also ``traceparent``
#: (the trace the workflow was created in, or None).
step_performed = _signals.signal("step-performed")
#: After the finalize transaction committed. ``outcome``: the execution's outcome;
#: also ``workflow_state`` and ``step_state``.
step_finalized = _signals.signal("step-finalized")
#: After a signal was stored (with ``commit=False``: joined to the caller's transaction),
#: or found stored before. Keyword arguments: ``workflow_id``, ``name``, ``duplicate``.
signal_received = _signals.signal("signal-received")


def send(signal: Signal, sender: Any, log: Any, **kwargs: Any) -> None:
    """Send ``signal``; a receiver that raises is logged, never the step's problem.

    A receiver runs inside the worker between the body and its finalize: its error must
    not leave the execution half done (``KeyboardInterrupt`` still goes up: shutdown).
    """
    if not signal.receivers or signal.is_muted:
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException:
            name = getattr(signal, "name", "a")
            log.exception("a receiver of the %s signal raised; ignored", name)
