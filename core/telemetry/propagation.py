"""W3C trace context (``traceparent``, ``tracestate``) in gRPC metadata and events.

Always W3C, whatever ``OTEL_PROPAGATORS`` says: the router, the nodes and
the replication events must agree on one format. gRPC metadata keys are
lower case, which is what W3C uses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACE_CONTEXT_KEYS",
    "context_from_metadata",
    "extract_trace_context",
    "inject_trace_context",
    "metadata_with_trace_context",
    "span_context_of",
    "trace_id_from_metadata",
]

TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")

_PROPAGATOR = TraceContextTextMapPropagator()


class _MetadataGetter(Getter[Sequence[tuple[str, Any]]]):
    """Reads gRPC metadata: a sequence of (key, value) pairs."""

    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


_METADATA_GETTER = _MetadataGetter()


def inject_trace_context(context: Context | None = None) -> dict[str, str]:
    """The trace context of the current span (or of ``context``) as W3C headers.

    Empty when there is no valid span: tracing is off, or nothing is being
    traced. Store it with a replication event, send it as gRPC metadata.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def extract_trace_context(carrier: Mapping[str, str]) -> Context:
    """An OpenTelemetry context holding the remote span of W3C headers.

    ``trace.get_current_span(extract_trace_context(headers))`` is that span;
    invalid or missing headers give a context without one.
    """
    return _PROPAGATOR.extract(dict(carrier))


def span_context_of(carrier: Mapping[str, str]) -> trace.SpanContext:
    """The remote span context of W3C headers (``is_valid`` False when none)."""
    return trace.get_current_span(extract_trace_context(carrier)).get_span_context()


def context_from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> Context:
    """The parent context carried in incoming gRPC invocation metadata."""
    return _PROPAGATOR.extract(metadata or (), getter=_METADATA_GETTER)


def metadata_with_trace_context(
    metadata: Sequence[tuple[str, Any]], span: trace.Span
) -> tuple[tuple[str, Any], ...]:
    """``metadata`` with its trace context replaced by ``span``'s.

    The client's own ``traceparent`` is dropped: the node's span must be the
    child of the router's client span, not of the client's.
    """
    headers = inject_trace_context(trace.set_span_in_context(span))
    kept = tuple(pair for pair in metadata if pair[0] not in TRACE_CONTEXT_KEYS)
    return kept + tuple(headers.items())


def trace_id_from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The 32-hex-digit trace id of an incoming ``traceparent``, or ``""``.

    Lets logs carry the caller's trace id when this process does not trace.
    """
    for name, value in metadata or ():
        if name == "traceparent" and isinstance(value, str):
            parts = value.split("-")
            if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
                return parts[1]
            return ""
    return ""
