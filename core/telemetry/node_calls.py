"""Client spans and latency of the router's calls to its nodes.

:func:`instrument_node_callable` wraps one raw multi-callable of a node
channel. Called inside an observed call (see
:mod:`praefect.core.telemetry.calls`) it starts a client span, child of the
router's server span, replaces the trace context in the outgoing metadata
with that span's, starts the node call, and ends the span (with the node's
status code) and records the latency from the call's done callback.

No ``grpc.aio`` client interceptor is involved: the object returned is the
channel's own call object, so cancelling it, reading, writing and
half-closing behave exactly as without tracing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from praefect.core.telemetry.calls import CallMetrics, current_call, span_status_for
from praefect.core.telemetry.propagation import metadata_with_trace_context

if TYPE_CHECKING:
    from praefect.core.routing_types import NodeRef

__all__ = ["ObservedNodeCallable", "instrument_node_callable"]

_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: spans waiting for a status that could not be read at once (kept from the GC)
_ending: set[asyncio.Future[None]] = set()


class ObservedNodeCallable:
    """A node channel's multi-callable that traces and times each call."""

    __slots__ = ("_attributes", "_inner", "_method", "node")

    def __init__(self, inner: Any, node: NodeRef, method: str) -> None:
        self._inner = inner
        self.node = node
        self._method = method.lstrip("/")
        service, _, name = self._method.partition("/")
        self._attributes = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "praefect.virtual_storage": node.virtual_storage,
            "praefect.node": node.name,
            "server.address": node.address,
        }

    def __call__(
        self,
        *args: Any,
        metadata: Sequence[tuple[str, Any]] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        record = current_call()
        if record is None:
            return self._inner(*args, metadata=metadata, timeout=timeout, **kwargs)
        span: trace.Span | None = None
        if record.span is not None:
            # Child of the current span: the server span, which the fan-out
            # tasks and the stream pump inherit through their context.
            span = record.telemetry.tracer.start_span(
                self._method, kind=SpanKind.CLIENT, attributes=self._attributes
            )
            metadata = metadata_with_trace_context(metadata or (), span)
        call = self._inner(*args, metadata=metadata, timeout=timeout, **kwargs)
        metrics = record.telemetry.metrics
        if span is not None or metrics is not None:
            started = time.perf_counter()
            call.add_done_callback(lambda done: self._done(done, span, metrics, started))
        return call

    def _done(
        self,
        call: Any,
        span: trace.Span | None,
        metrics: CallMetrics | None,
        started: float,
    ) -> None:
        if metrics is not None:
            metrics.observe_node_call(self.node, time.perf_counter() - started)
        if span is None:
            return
        code = _status_code(call)
        if code is None:  # no status to read synchronously: ask for it
            task = asyncio.ensure_future(_end_when_known(call, span))
            _ending.add(task)
            task.add_done_callback(_ending.discard)
            return
        _end(span, code)


def _status_code(call: Any) -> grpc.StatusCode | None:
    # The status is final when the done callback runs; grpc only offers it
    # through a coroutine, so read the received status directly.
    status = getattr(getattr(call, "_cython_call", None), "_status", None)
    if status is None:
        return None
    try:
        return _CODES.get(status.code())
    except Exception:
        return None


async def _end_when_known(call: Any, span: trace.Span) -> None:
    try:
        code = await call.code()
    except Exception:
        code = grpc.StatusCode.UNKNOWN
    _end(span, code)


def _end(span: trace.Span, code: grpc.StatusCode) -> None:
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_status(span_status_for(code))
    span.end()


def instrument_node_callable(inner: Any, node: NodeRef, method: str) -> ObservedNodeCallable:
    """``inner`` (a raw multi-callable to ``node`` for ``method``) observed."""
    return ObservedNodeCallable(inner, node, method)
