"""The ``spans`` fixture the OpenTelemetry tests share: step spans to an in-memory exporter.

A test module binds it by name (``spans = otel_spans.spans``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flask_geneva import otel


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    """Step spans go to an in-memory exporter while the test runs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider)
    try:
        yield exporter, provider
    finally:
        otel.uninstrument()
        provider.shutdown()
