"""Tracing, metrics and structured logs of praefect's processes.

The parts, one concern each:

- :mod:`~praefect.core.telemetry.tracing`: the process's tracer provider from
  settings and the standard ``OTEL_*`` variables (:func:`configure_tracing`);
- :mod:`~praefect.core.telemetry.propagation`: W3C trace context in gRPC
  metadata and in replication events;
- :mod:`~praefect.core.telemetry.calls`: a server span, count and access-log
  line per call (:class:`TelemetryInterceptor`), :func:`note_route`;
- :mod:`~praefect.core.telemetry.node_calls`: client spans and latency of the
  router's node calls;
- :mod:`~praefect.core.telemetry.replication`: publish and replay spans;
- :mod:`~praefect.core.telemetry.metrics`: Prometheus families and endpoint;
- :mod:`~praefect.core.telemetry.logs`: text/JSON logs with trace ids;
- :mod:`~praefect.core.telemetry.router`: all of it for one router.

See docs/observability.md for what each span, metric and log field means.
"""

from praefect.core.telemetry.calls import (
    CallRecord,
    CallTelemetry,
    TelemetryInterceptor,
    current_call,
    note_route,
)
from praefect.core.telemetry.logs import configure_logging
from praefect.core.telemetry.metrics import MetricsEndpoint, ReplicationMetrics, RouterMetrics
from praefect.core.telemetry.node_calls import instrument_node_callable
from praefect.core.telemetry.propagation import (
    extract_trace_context,
    inject_trace_context,
    span_context_of,
)
from praefect.core.telemetry.replication import node_call_span, publish_span, replay_span
from praefect.core.telemetry.router import TELEMETRY, RouterTelemetry, router_metrics
from praefect.core.telemetry.tracing import (
    TracingConfigError,
    configure_tracing,
    shutdown_tracing,
    tracing_active,
)

__all__ = [
    "TELEMETRY",
    "CallRecord",
    "CallTelemetry",
    "MetricsEndpoint",
    "ReplicationMetrics",
    "RouterMetrics",
    "RouterTelemetry",
    "TelemetryInterceptor",
    "TracingConfigError",
    "configure_logging",
    "configure_tracing",
    "current_call",
    "extract_trace_context",
    "inject_trace_context",
    "instrument_node_callable",
    "node_call_span",
    "note_route",
    "publish_span",
    "replay_span",
    "router_metrics",
    "shutdown_tracing",
    "span_context_of",
    "tracing_active",
]
