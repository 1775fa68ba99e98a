"""The trace a workflow was created in, and the links its step spans carry to it.

``Workflow.create()`` records the W3C ``traceparent`` of the current OpenTelemetry span
in the row; the step spans of ``flask_geneva.otel`` link to it. Every test runs on
SQLite, PostgreSQL and MariaDB with the OpenTelemetry SDK and its in-memory exporter;
the steps run through the executor, as a Huey task runs them (one test through a real
consumer). The last test runs the library in a process where ``opentelemetry`` cannot
be imported at all.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import otel_spans
import pytest
import sqlalchemy as sa
from flask import Flask
from flask import request
from flask_sqlalchemy import SQLAlchemy
from helpers import running_consumer
from helpers import wait_until
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)

REPO = Path(__file__).resolve().parents[2]
ATTRIBUTE = "geneva.workflow.traceparent"


class ShipmentWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def reserve(self) -> None:
        pass

    @step(after="reserve")
    def ship(self) -> None:
        pass


spans = otel_spans.spans


def traceparent_of(span_context: trace.SpanContext) -> str:
    """The W3C header for ``span_context``, written out by hand from the standard."""
    flags = int(span_context.trace_flags)
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def stored(workflow_id: int) -> Any:
    """The row's ``traceparent``, read back from the database."""
    w = geneva.Workflow.__table__
    return db.session.execute(sa.select(w.c.traceparent).where(w.c.id == workflow_id)).scalar_one()


def step_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("Shipment")}


def assert_linked(span: ReadableSpan, creating: trace.SpanContext) -> None:
    """``span`` links to ``creating`` (and only to it), and says so in an attribute."""
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
        (creating.trace_id, creating.span_id)
    ]
    assert span.attributes is not None
    assert span.attributes[ATTRIBUTE] == traceparent_of(creating)
    # A link, not a parent: the step is not part of the creating trace.
    assert span.parent is None or span.parent.span_id != creating.span_id


def test_a_workflow_created_in_a_request_links_its_step_spans_to_the_request(
    app: Flask, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, provider = spans
    tracer = provider.get_tracer("web")
    propagator = TraceContextTextMapPropagator()
    seen: dict[str, trace.SpanContext] = {}

    def create_shipment() -> dict[str, int]:
        # What a server instrumentation does: continue the caller's trace, if any.
        incoming = propagator.extract({k.lower(): v for k, v in request.headers.items()})
        with tracer.start_as_current_span("POST /shipments", context=incoming) as server:
            seen["request"] = server.get_span_context()
            workflow = ShipmentWorkflow.create(commit=False)
            db.session.commit()
            return {"id": workflow.id}

    app.add_url_rule("/shipments", view_func=create_shipment, methods=["POST"])
    upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = app.test_client().post("/shipments", headers={"traceparent": upstream})
    assert response.status_code == 200
    workflow_id = response.json["id"]  # type: ignore[index]
    request_span = seen["request"]
    assert f"{request_span.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert stored(workflow_id) == traceparent_of(request_span)

    # Later, in a worker with a span of its own (a Huey instrumentation's, say).
    workflow = db.session.get(geneva.Workflow, workflow_id)
    with tracer.start_as_current_span("huey task") as task:
        perform_next_step(workflow)
    perform_next_step(workflow)  # and one with no span current in the worker
    found = step_spans(exporter)
    assert set(found) == {"ShipmentWorkflow.reserve", "ShipmentWorkflow.ship"}
    for span in found.values():
        assert_linked(span, request_span)
    reserve = found["ShipmentWorkflow.reserve"]
    assert reserve.parent is not None
    assert reserve.parent.span_id == task.get_span_context().span_id
    assert found["ShipmentWorkflow.ship"].parent is None


def test_an_unsampled_trace_is_recorded_as_it_is(
    app: Flask, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, _ = spans
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("web")
    with unsampled.start_as_current_span("GET /sampled-out") as span:
        creating = span.get_span_context()
        workflow = ShipmentWorkflow.create()
    assert creating.is_valid and not creating.trace_flags.sampled
    assert stored(workflow.id) == traceparent_of(creating)
    assert not int(stored(workflow.id)[-2:], 16) & trace.TraceFlags.SAMPLED
    perform_next_step(workflow)
    assert_linked(step_spans(exporter)["ShipmentWorkflow.reserve"], creating)


def test_a_workflow_created_outside_any_span_has_no_trace_and_no_link(
    app: Flask, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, _ = spans
    assert not trace.get_current_span().get_span_context().is_valid
    workflow = ShipmentWorkflow.create()
    assert stored(workflow.id) is None
    speedrun(workflow)
    found = step_spans(exporter)
    assert set(found) == {"ShipmentWorkflow.reserve", "ShipmentWorkflow.ship"}
    for span in found.values():
        assert list(span.links) == []
        assert span.attributes is not None and ATTRIBUTE not in span.attributes


@pytest.mark.parametrize(
    "malformed",
    [
        "not a traceparent",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # the invalid trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # the invalid span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
        "",
    ],
)
def test_a_malformed_stored_trace_gives_no_link_and_the_step_still_runs(
    app: Flask, spans: tuple[InMemorySpanExporter, TracerProvider], malformed: str
) -> None:
    exporter, provider = spans
    with provider.get_tracer("web").start_as_current_span("POST /shipments"):
        workflow = ShipmentWorkflow.create()
    w = geneva.Workflow.__table__
    db.session.execute(sa.update(w).where(w.c.id == workflow.id).values(traceparent=malformed))
    db.session.commit()
    speedrun(workflow)
    assert workflow.state == "finished"
    found = step_spans(exporter)
    assert set(found) == {"ShipmentWorkflow.reserve", "ShipmentWorkflow.ship"}
    for span in found.values():
        assert list(span.links) == []
        assert span.attributes is not None and ATTRIBUTE not in span.attributes
        assert span.attributes["geneva.step.outcome"] == "completed"


@pytest.mark.slow
def test_a_real_consumer_links_every_step_to_the_creating_trace(
    app: Flask, huey: Any, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, provider = spans
    with running_consumer(huey, workers=2, periodic=False):
        with provider.get_tracer("web").start_as_current_span("POST /shipments") as span:
            creating = span.get_span_context()
            workflow_id = ShipmentWorkflow.create().id
        wait_until(lambda: len(step_spans(exporter)) == 2)
    found = step_spans(exporter)
    for span_ in found.values():
        assert_linked(span_, creating)
        assert span_.context is not None and span_.context.trace_id != creating.trace_id
    assert stored(workflow_id) == traceparent_of(creating)


_WITHOUT_OPENTELEMETRY = """
import sys

sys.modules["opentelemetry"] = None  # "import opentelemetry" raises ImportError

from flask import Flask
from flask import request
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva, otel, step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class Shipment(geneva.Workflow):
    @step
    def only(self):
        pass


app = Flask(__name__)
app.config.update(SQLALCHEMY_DATABASE_URI="sqlite:///{db}", GENEVA_HUEY="memory://")
db.init_app(app)
geneva.init_app(app)
with app.app_context():
    db.create_all()
    workflow = speedrun(Shipment.create())
    assert workflow.state == "finished", workflow.state
    assert workflow.traceparent is None
    assert otel.creating_traceparent() is None
    try:
        otel.instrument()
    except ImportError:
        pass
    else:
        raise AssertionError("instrument() without opentelemetry")
    assert "opentelemetry.trace" not in sys.modules
print("ok")
"""


def test_without_opentelemetry_workflows_run_and_record_no_trace(tmp_path: Path) -> None:
    script = _WITHOUT_OPENTELEMETRY.format(db=tmp_path / "plain.db")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
