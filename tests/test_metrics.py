"""Metrics (SPEC 14): ``geneva.metrics()``, the admin's opt-in Prometheus endpoint, and
OpenTelemetry spans per step.

Every test runs on SQLite, PostgreSQL and MariaDB with the real executor; the text is
read back with ``prometheus_client``'s own parser, as a Prometheus server would read it,
and the spans with the OpenTelemetry SDK's in-memory exporter.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import otel_spans
import pytest
from flask import Flask
from flask import request
from flask_sqlalchemy import SQLAlchemy
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import otel
from flask_geneva import step
from flask_geneva.metrics import ACTIVE_STATES
from flask_geneva.metrics import COUNT_CAP
from flask_geneva.metrics import render_prometheus
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)

#: A pinned identity with what the text format must escape (quotes, backslashes).
HOSTILE_TYPE = 'Odd "quoted" \\ back\\slash\\n ünï'
#: A stored type no class defines any more, from rows written before identities were
#: checked: the class rules refuse a line break, the column does not.
ORPHAN_TYPE = 'Legacy\n"line"\\break'
PREFIX = "/ops/workflows"


class Declined(Exception):
    pass


class OrderWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def reserve(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass


class PaymentWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def charge(self) -> None:
        raise Declined("card declined")


class OddWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    __geneva_type__ = HOSTILE_TYPE

    @step
    def only(self) -> None:
        pass


def _fleet() -> None:
    """3 ready orders (one a step in), 1 paused by hand, 2 finished; 1 payment failed."""
    for _ in range(3):
        OrderWorkflow.create(allow_multiple=True)
    perform_next_step(OrderWorkflow.create(allow_multiple=True))  # reserve done, ship due
    OrderWorkflow.create(allow_multiple=True).pause()
    for _ in range(2):
        speedrun(OrderWorkflow.create(allow_multiple=True))
    payment = PaymentWorkflow.create(allow_multiple=True)
    with pytest.raises(Declined):
        perform_next_step(payment)
    OddWorkflow.create()


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{family: {sorted labels: value}}`` as prometheus_client parses ``text``."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            found.setdefault(family.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_counts_match_what_was_created(app: Flask) -> None:
    _fleet()
    m = geneva.metrics()
    assert m.count_cap == COUNT_CAP
    assert [c.type for c in m.classes] == sorted(["OrderWorkflow", "PaymentWorkflow", HOSTILE_TYPE])

    orders = m.get("OrderWorkflow")
    assert orders is not None
    assert orders.workflows == {
        "ready": 4,
        "performing": 0,
        "paused": 1,
        "finished": 2,
        "canceled": 0,
    }
    assert orders.ongoing == 5
    assert orders.paused_share == pytest.approx(1 / 5)
    steps = {s.step: s for s in orders.steps}
    # 3 workflows wait on reserve, 1 on ship; the paused one keeps its scheduled reserve.
    assert dict(steps["reserve"].executions) == {"scheduled": 4, "waiting": 0, "in_progress": 0}
    assert dict(steps["ship"].executions) == {"scheduled": 1, "waiting": 0, "in_progress": 0}
    assert all(s.failures_last_hour == 0 for s in orders.steps)

    payments = m.get("PaymentWorkflow")
    assert payments is not None
    assert payments.workflows["paused"] == 1
    assert payments.paused_share == 1.0
    assert [(s.step, s.failures_last_hour) for s in payments.steps] == [("charge", 1)]
    assert dict(payments.steps[0].executions) == dict.fromkeys(ACTIVE_STATES, 0)
    assert payments.queue_delay == timedelta(0)


def test_queue_delay_and_failure_window_follow_the_clock(app: Flask) -> None:
    _fleet()
    with travel(timedelta(minutes=10)):
        orders = geneva.metrics().get("OrderWorkflow")
        assert orders is not None
        # The oldest due execution was due when its workflow was created, ten minutes ago.
        assert timedelta(minutes=10) <= orders.queue_delay < timedelta(minutes=11)
        # No worker took the ready orders' due steps: overdue. The paused order's
        # reserve waits for resume: scheduled, not overdue.
        assert {s.step: s.executions["scheduled"] for s in orders.steps} == {
            "reserve": 4,
            "ship": 1,
        }
        assert {s.step: s.overdue for s in orders.steps} == {"reserve": 3, "ship": 1}
        late = _samples(render_prometheus(geneva.metrics()))["geneva_step_executions_overdue"]
        assert late[(("class", "OrderWorkflow"), ("step", "reserve"))] == 3
    with travel(timedelta(hours=2)):
        payments = geneva.metrics().get("PaymentWorkflow")
        assert payments is not None
        # An hour past the failure it is no longer counted (the step is still listed).
        assert [(s.step, s.failures_last_hour) for s in payments.steps] == [("charge", 0)]


def test_an_empty_database_reports_each_class_with_zeros(app: Flask) -> None:
    m = geneva.metrics()
    assert {c.type for c in m.classes} == {"OrderWorkflow", "PaymentWorkflow", HOSTILE_TYPE}
    for c in m.classes:
        assert sum(c.workflows.values()) == 0
        assert c.paused_share == 0.0
        assert all(s.failures_last_hour == 0 for s in c.steps)
        assert all(sum(s.executions.values()) == 0 for s in c.steps)
    orders = m.get("OrderWorkflow")
    assert orders is not None and [s.step for s in orders.steps] == ["reserve", "ship"]
    samples = _samples(render_prometheus(m))
    assert samples["geneva_workflows_paused_ratio"][(("class", "OrderWorkflow"),)] == 0.0
    # Each defined step has its series from the start, at zero.
    key = (("class", "PaymentWorkflow"), ("state", "in_progress"), ("step", "charge"))
    assert samples["geneva_step_executions"][key] == 0


def test_the_text_parses_into_the_expected_families(app: Flask) -> None:
    _fleet()
    text = render_prometheus(geneva.metrics())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {
        "geneva_workflows",
        "geneva_workflows_paused_ratio",
        "geneva_step_executions",
        "geneva_queue_delay_seconds",
        "geneva_step_failures_last_hour",
        "geneva_step_executions_overdue",
        "geneva_count_cap",
    }
    assert families["geneva_workflows"].documentation.startswith("Workflows per class")
    samples = _samples(text)
    workflows = samples["geneva_workflows"]
    assert workflows[(("class", "OrderWorkflow"), ("state", "ready"))] == 4
    assert workflows[(("class", "OrderWorkflow"), ("state", "finished"))] == 2
    assert workflows[(("class", "PaymentWorkflow"), ("state", "paused"))] == 1
    assert len(workflows) == 3 * 5  # every class, every state
    ratio = samples["geneva_workflows_paused_ratio"]
    assert ratio[(("class", "OrderWorkflow"),)] == pytest.approx(0.2)
    assert ratio[(("class", "PaymentWorkflow"),)] == 1.0
    executions = samples["geneva_step_executions"]
    key = (("class", "OrderWorkflow"), ("state", "scheduled"), ("step", "reserve"))
    assert executions[key] == 4
    failures = samples["geneva_step_failures_last_hour"]
    assert failures[(("class", "PaymentWorkflow"), ("step", "charge"))] == 1
    assert samples["geneva_count_cap"] == {(): COUNT_CAP}


def test_hostile_types_round_trip_through_the_parser(app: Flask) -> None:
    speedrun(OddWorkflow.create())
    OddWorkflow.create()
    now = clock.now()
    with geneva.engine().begin() as conn:
        conn.execute(
            geneva.tables.workflows.insert(),
            [dict(type=ORPHAN_TYPE, state="paused", created_at=now, updated_at=now)],
        )
    text = render_prometheus(geneva.metrics())
    assert HOSTILE_TYPE not in text and ORPHAN_TYPE not in text  # escaped, never raw
    samples = _samples(text)
    workflows = samples["geneva_workflows"]
    assert workflows[(("class", HOSTILE_TYPE), ("state", "finished"))] == 1
    assert workflows[(("class", HOSTILE_TYPE), ("state", "ready"))] == 1
    assert workflows[(("class", ORPHAN_TYPE), ("state", "paused"))] == 1
    assert samples["geneva_workflows_paused_ratio"][(("class", ORPHAN_TYPE),)] == 1.0
    executions = samples["geneva_step_executions"]
    assert executions[(("class", HOSTILE_TYPE), ("state", "scheduled"), ("step", "only"))] == 1


# -- the endpoint ---------------------------------------------------------------------------


def _client(app: Flask, *, enabled: bool, authorize: Any = None) -> Any:
    app.config["GENEVA_ADMIN_METRICS"] = enabled
    if authorize is not None:
        app.config["GENEVA_ADMIN_AUTHORIZE"] = authorize
    app.register_blueprint(geneva.admin_blueprint, url_prefix=PREFIX)
    return app.test_client()


def test_the_endpoint_is_a_404_unless_enabled(app: Flask) -> None:
    client = _client(app, enabled=False)
    assert client.get(f"{PREFIX}/metrics").status_code == 404
    assert client.get(f"{PREFIX}/").status_code == 200  # the admin itself is there


def _scraper_only(action: str) -> bool:
    # The scraper sends its token; everyone else is refused, here.
    return action == "view" and request.headers.get("Authorization") == "Bearer scrape"


def test_the_endpoint_asks_the_admin_hook(app: Flask) -> None:
    client = _client(app, enabled=True, authorize=_scraper_only)
    refused = client.get(f"{PREFIX}/metrics")
    assert refused.status_code == 403
    assert "geneva_workflows" not in refused.get_data(as_text=True)
    assert (
        client.get(f"{PREFIX}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
    )


def test_the_endpoint_serves_the_text_when_allowed(app: Flask) -> None:
    _fleet()
    client = _client(app, enabled=True, authorize=_scraper_only)
    response = client.get(f"{PREFIX}/metrics", headers={"Authorization": "Bearer scrape"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = _samples(response.get_data(as_text=True))
    assert samples["geneva_workflows"][(("class", "OrderWorkflow"), ("state", "paused"))] == 1
    assert samples["geneva_workflows"][(("class", HOSTILE_TYPE), ("state", "ready"))] == 1


def test_the_setting_must_be_a_bool(app: Flask) -> None:
    from flask_geneva import ConfigurationError

    app.config["GENEVA_ADMIN_METRICS"] = "yes"
    with pytest.raises(ConfigurationError, match="GENEVA_ADMIN_METRICS must be True or False"):
        app.register_blueprint(geneva.admin_blueprint, url_prefix=PREFIX)


# -- OpenTelemetry spans per step (the otel extra) ------------------------------------------


spans = otel_spans.spans


def test_each_step_body_run_is_a_span(
    app: Flask, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, _ = spans
    order = speedrun(OrderWorkflow.create())
    payment = PaymentWorkflow.create()
    with pytest.raises(Declined):
        perform_next_step(payment)
    speedrun(OddWorkflow.create())
    found = {s.name: s for s in exporter.get_finished_spans()}
    assert set(found) == {
        "OrderWorkflow.reserve",
        "OrderWorkflow.ship",
        "PaymentWorkflow.charge",
        "OddWorkflow.only",
    }
    ship = found["OrderWorkflow.ship"]
    assert ship.attributes is not None
    assert ship.attributes["geneva.workflow.id"] == order.id
    assert ship.attributes["geneva.step.name"] == "ship"
    assert ship.attributes["geneva.step.outcome"] == "completed"
    assert ship.status.status_code is StatusCode.UNSET
    assert ship.start_time is not None and ship.end_time is not None
    assert ship.start_time <= ship.end_time
    charge = found["PaymentWorkflow.charge"]
    assert charge.attributes is not None
    assert charge.attributes["geneva.step.outcome"] == "exception"
    assert charge.attributes["geneva.workflow.id"] == payment.id
    assert charge.status.status_code is StatusCode.ERROR
    assert [e.name for e in charge.events] == ["exception"]
    assert charge.events[0].attributes is not None
    assert charge.events[0].attributes["exception.message"] == "card declined"
    odd = found["OddWorkflow.only"]
    assert odd.attributes is not None and odd.attributes["geneva.workflow.type"] == HOSTILE_TYPE


def test_a_step_span_is_a_child_of_the_current_span(
    app: Flask, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, provider = spans
    workflow = OrderWorkflow.create()
    with provider.get_tracer("worker").start_as_current_span("huey task") as task:
        perform_next_step(workflow)
    step_span = next(s for s in exporter.get_finished_spans() if s.name == "OrderWorkflow.reserve")
    assert step_span.parent is not None
    assert step_span.parent.span_id == task.get_span_context().span_id
    assert step_span.context is not None
    assert step_span.context.trace_id == task.get_span_context().trace_id


def test_uninstrument_stops_the_spans(
    app: Flask, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exporter, _ = spans
    workflow = OrderWorkflow.create()
    perform_next_step(workflow)
    assert otel.is_instrumented()
    otel.uninstrument()
    assert not otel.is_instrumented()
    perform_next_step(workflow)
    assert [s.name for s in exporter.get_finished_spans()] == ["OrderWorkflow.reserve"]
