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
  ``reattempt`` or ``exception``;
* ``geneva.workflow.traceparent``: the trace the workflow was created in (below), when
  it was created inside one.

``Workflow.create()`` records the W3C ``traceparent`` of the span current at that
moment (a request's, say) in the workflow's row (:func:`creating_traceparent`), and
every step span carries a link to it: the step runs later, in another process, so it
is linked to the creating trace rather than its child.

A body that raised records the exception on its span, whose status is then ``ERROR``.
Only ``opentelemetry-api`` is needed here; the app configures the SDK and its exporter.
This module imports it only when it is used: importing ``flask_geneva`` without the
extra works, and costs nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING
from typing import Any

from . import signals
from .models import TRACEPARENT_LENGTH

if TYPE_CHECKING:
    from opentelemetry import trace

#: The instrumentation scope the spans are reported under.
SCOPE = "flask_geneva"
#: The step span's attribute holding the creating trace's ``traceparent``.
TRACEPARENT_ATTRIBUTE = "geneva.workflow.traceparent"

_state: dict[str, Any] = {}


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Send a span for every step body run in this process (again: replaces the provider).

    :param tracer_provider: where the spans go; None for the global one
        (``opentelemetry.trace.set_tracer_provider``).
    """
    from opentelemetry import trace

    _state["tracer"] = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
    signals.step_performed.connect(_on_step_performed, weak=False)


def uninstrument() -> None:
    """Stop sending spans."""
    signals.step_performed.disconnect(_on_step_performed)
    _state.clear()


def is_instrumented() -> bool:
    """Return whether :func:`instrument` is in effect."""
    return "tracer" in _state


def creating_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span current here, or None if there is none.

    What a new workflow's row records (sampled or not: what the span context says).
    A process that never imported ``opentelemetry.trace`` can have no current span, so
    without the extra this is one dictionary lookup (and imports nothing); with it and
    no span current, one read of the context (about a microsecond).
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    value = carrier.get("traceparent")
    # A later version of the format could be longer than the column: record nothing.
    return value if value is not None and len(value) <= TRACEPARENT_LENGTH else None


def _creating_context(traceparent: Any) -> trace.SpanContext | None:
    """The span context a stored ``traceparent`` names; None if missing or malformed."""
    if not isinstance(traceparent, str) or not traceparent:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    found = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    context = trace.get_current_span(found).get_span_context()
    return context if context.is_valid else None


def _on_step_performed(
    sender: Any,
    *,
    workflow_id: int,
    execution_id: int,
    step_name: str,
    outcome: str,
    exception: BaseException | None,
    duration: float,
    traceparent: str | None = None,
    **_: Any,
) -> None:
    tracer: trace.Tracer | None = _state.get("tracer")
    if tracer is None:
        return
    from opentelemetry import trace

    end = time.time_ns()
    start = end - int(duration * 1_000_000_000)
    name = getattr(sender, "__name__", "Workflow")
    attributes: dict[str, str | int] = {
        "geneva.workflow.type": str(getattr(sender, "__geneva_identity__", name)),
        "geneva.workflow.id": int(workflow_id),
        "geneva.execution.id": int(execution_id),
        "geneva.step.name": step_name,
        "geneva.step.outcome": outcome,
    }
    creating = _creating_context(traceparent)
    links = []
    if creating is not None:
        assert traceparent is not None
        attributes[TRACEPARENT_ATTRIBUTE] = traceparent
        links.append(trace.Link(creating))
    span = tracer.start_span(
        f"{name}.{step_name}",
        kind=trace.SpanKind.INTERNAL,
        start_time=start,
        attributes=attributes,
        links=links,
    )
    if exception is not None:
        span.record_exception(exception)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exception).__name__))
    span.end(end_time=end)
