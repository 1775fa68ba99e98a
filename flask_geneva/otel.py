"""OpenTelemetry spans per step (the optional extra ``pip install flask-geneva[otel]``).

::

    from flask_geneva import otel

    otel.instrument()  # once, at startup, in the worker processes

Each run of a step body becomes one span, named ``<class>.<step>`` (the workflow
class's name and the step's), built from the :data:`~flask_geneva.signals.step_performed`
signal: the executor is not touched, and without :func:`instrument` nothing changes.
The span starts when the body started and ends when it returned or raised (the signal
carries the duration), as a child of whatever span is current in the worker (a Huey
instrumentation's, say). Its attributes:

* ``geneva.workflow.type``, ``geneva.workflow.id``, ``geneva.execution.id``,
  ``geneva.step.name``;
* ``geneva.step.outcome``: ``completed``, ``finish``, ``cancel``, ``pause``, ``skip``,
  ``reattempt`` or ``exception``.

A body that raised records the exception on its span, whose status is then ``ERROR``.
Only ``opentelemetry-api`` is needed here; the app configures the SDK and its exporter.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace

from . import signals

#: The instrumentation scope the spans are reported under.
SCOPE = "flask_geneva"

_state: dict[str, Any] = {}


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Send a span for every step body run in this process (again: replaces the provider).

    :param tracer_provider: where the spans go; None for the global one
        (``opentelemetry.trace.set_tracer_provider``).
    """
    _state["tracer"] = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
    signals.step_performed.connect(_on_step_performed, weak=False)


def uninstrument() -> None:
    """Stop sending spans."""
    signals.step_performed.disconnect(_on_step_performed)
    _state.clear()


def is_instrumented() -> bool:
    """Return whether :func:`instrument` is in effect."""
    return "tracer" in _state


def _on_step_performed(
    sender: Any,
    *,
    workflow_id: int,
    execution_id: int,
    step_name: str,
    outcome: str,
    exception: BaseException | None,
    duration: float,
    **_: Any,
) -> None:
    tracer: trace.Tracer | None = _state.get("tracer")
    if tracer is None:
        return
    end = time.time_ns()
    start = end - int(duration * 1_000_000_000)
    name = getattr(sender, "__name__", "Workflow")
    span = tracer.start_span(
        f"{name}.{step_name}",
        kind=trace.SpanKind.INTERNAL,
        start_time=start,
        attributes={
            "geneva.workflow.type": str(getattr(sender, "__geneva_identity__", name)),
            "geneva.workflow.id": int(workflow_id),
            "geneva.execution.id": int(execution_id),
            "geneva.step.name": step_name,
            "geneva.step.outcome": outcome,
        },
    )
    if exception is not None:
        span.record_exception(exception)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exception).__name__))
    span.end(end_time=end)
