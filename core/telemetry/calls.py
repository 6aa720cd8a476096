"""One observation per incoming call: server span, metrics, access-log line.

:class:`TelemetryInterceptor` is a ``grpc.aio`` server interceptor that
wraps the behaviour of every method handler, whatever produced it
(registered servicers, the proxy's generic handler, another interceptor's
rejecting handler). The wrapper keeps the handler's style, which is what
``grpc.aio`` dispatches on: a coroutine stays a coroutine (also streaming
handlers written with ``context.read()``/``context.write()``), an async
generator stays an async generator. It never touches the request or
response stream, so streaming and cancellation behave as without it.

Per call it starts a server span continuing the caller's ``traceparent``
(when a tracer provider is installed), makes it current for the handler,
keeps a :class:`CallRecord` in a context variable for the code below
(:func:`note_route`, the node-call instrumentation, the log filter), and
at the end sets the status, counts the call and writes one access-log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from praefect.core import __version__
from praefect.core.telemetry.logs import ACCESS_LOGGER
from praefect.core.telemetry.propagation import context_from_metadata, trace_id_from_metadata
from praefect.core.telemetry.tracing import tracing_active

if TYPE_CHECKING:
    from praefect.core.call import Call
    from praefect.core.routing_types import NodeRef, RouteDecision

__all__ = [
    "CORRELATION_ID_KEY",
    "UNOBSERVED_METHODS",
    "CallMetrics",
    "CallRecord",
    "CallTelemetry",
    "TelemetryInterceptor",
    "current_call",
    "note_route",
    "span_status_for",
]

#: GitLab sends its request's correlation id in this metadata key
CORRELATION_ID_KEY = "x-gitlab-correlation-id"
#: load balancers probe these every few seconds: no span, no log line, no count
UNOBSERVED_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
#: server-side codes that mark a server span as failed (OpenTelemetry's gRPC conventions)
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_MAX_CACHED_HANDLERS = 4096

Behaviour = Callable[..., Any]


class CallMetrics(Protocol):
    """What the call observation counts (the router's metrics implement it)."""

    def observe_call(self, method: str, code: grpc.StatusCode) -> None: ...

    def observe_node_call(self, node: NodeRef, seconds: float) -> None: ...

    def observe_read(self, node: NodeRef) -> None: ...


class CallRecord:
    """What is known about the call being served; see :func:`current_call`."""

    __slots__ = (
        "_otel_token",
        "_record_token",
        "caller_trace_id",
        "correlation_id",
        "method",
        "node",
        "operation",
        "relative_path",
        "span",
        "started",
        "storage",
        "telemetry",
        "virtual_storage",
    )

    def __init__(self, telemetry: CallTelemetry, method: str, metadata: Sequence[tuple[str, Any]]) -> None:
        self.telemetry = telemetry
        self.method = method
        self.started = time.perf_counter()
        self.span: trace.Span | None = None
        #: the node the router chose (router), empty on a node
        self.node = ""
        self.virtual_storage = ""
        #: the storage the request names (node)
        self.storage = ""
        self.relative_path = ""
        self.operation = ""
        self.correlation_id = ""
        self.caller_trace_id = ""
        for key, value in metadata:
            if key == CORRELATION_ID_KEY and isinstance(value, str):
                self.correlation_id = value
        self._otel_token: Token[Any] | None = None
        self._record_token: Token[CallRecord | None] | None = None


_CURRENT: ContextVar[CallRecord | None] = ContextVar("praefect_call", default=None)


def current_call() -> CallRecord | None:
    """The record of the call the current task serves, or None."""
    return _CURRENT.get()


class CallTelemetry:
    """The observation of one server's calls: its tracer, metrics and access log.

    ``role`` names the tracer (``praefect.router``, ``praefect.node``);
    ``describe_request`` may copy fields of a unary request into the record
    (the node reads the repository from it).
    """

    def __init__(
        self,
        role: str,
        *,
        metrics: CallMetrics | None = None,
        describe_request: Callable[[CallRecord, Any], None] | None = None,
    ) -> None:
        self.role = role
        self.tracer = trace.get_tracer(f"praefect.{role}", __version__)
        self.metrics = metrics
        self.describe_request = describe_request
        self.access_log = logging.getLogger(ACCESS_LOGGER)

    def begin(self, method: str, context: aio.ServicerContext) -> CallRecord:
        metadata = context.invocation_metadata() or ()
        record = CallRecord(self, method, metadata)
        if tracing_active():
            service, _, name = method.lstrip("/").partition("/")
            parent = context_from_metadata(metadata)
            span = self.tracer.start_span(
                method.lstrip("/"),
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )
            if record.correlation_id and span.is_recording():
                span.set_attribute("praefect.correlation_id", record.correlation_id)
            record.span = span
            record._otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        else:
            record.caller_trace_id = trace_id_from_metadata(metadata)
        record._record_token = _CURRENT.set(record)
        return record

    def finish(self, record: CallRecord, code: grpc.StatusCode) -> None:
        seconds = time.perf_counter() - record.started
        span = record.span
        try:
            if self.metrics is not None:
                self.metrics.observe_call(record.method, code)
            self._log(record, code, seconds)
            if span is not None:
                if span.is_recording():
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in SERVER_ERROR_CODES:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                span.end()
        finally:
            _reset(record)

    def _log(self, record: CallRecord, code: grpc.StatusCode, seconds: float) -> None:
        level = logging.WARNING if code in SERVER_ERROR_CODES else logging.INFO
        if not self.access_log.isEnabledFor(level):
            return
        fields = {
            "method": record.method,
            "code": code.name,
            "duration_ms": round(seconds * 1000, 3),
            "node": record.node,
            "virtual_storage": record.virtual_storage,
            "storage": record.storage,
            "relative_path": record.relative_path,
        }
        self.access_log.log(level, "call finished", extra={"fields": fields})


def _reset(record: CallRecord) -> None:
    # A generator finished in another context cannot reset its tokens; the
    # context dies with the call's task anyway.
    if record._otel_token is not None:
        with contextlib.suppress(ValueError, RuntimeError):
            otel_context.detach(record._otel_token)
        record._otel_token = None
    if record._record_token is not None:
        with contextlib.suppress(ValueError, RuntimeError):
            _CURRENT.reset(record._record_token)
        record._record_token = None


def note_route(call: Call, decision: RouteDecision) -> None:
    """Record the routing decision on the current call (span attributes, reads).

    The proxy calls it once ``route`` chose; it costs a few attribute
    stores when nothing observes the call.
    """
    record = _CURRENT.get()
    if record is None:
        return
    record.node = decision.node.name
    record.virtual_storage = call.virtual_storage or ""
    record.relative_path = call.relative_path or ""
    record.operation = call.method.operation.name.lower()
    span = record.span
    if span is not None and span.is_recording():
        span.set_attributes(
            {
                "praefect.virtual_storage": record.virtual_storage,
                "praefect.relative_path": record.relative_path,
                "praefect.operation": record.operation,
                "praefect.node": record.node,
                "praefect.route.reason": decision.reason,
                "praefect.replicas": [node.name for node in decision.replicas],
                "praefect.fan_out": [node.name for node in decision.fan_out],
            }
        )
    metrics = record.telemetry.metrics
    if metrics is not None and call.method.is_accessor:
        metrics.observe_read(decision.node)


def _code_of(context: aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def span_status_for(code: grpc.StatusCode) -> Status:
    """The status of a client span that ended with ``code``."""
    if code is grpc.StatusCode.OK:
        return Status(StatusCode.UNSET)
    return Status(StatusCode.ERROR, code.name)


# -- wrapping handlers -------------------------------------------------------------


def _observe_coroutine(telemetry: CallTelemetry, method: str, behaviour: Behaviour, unary: bool) -> Behaviour:
    describe = telemetry.describe_request if unary else None

    async def observed(request: Any, context: aio.ServicerContext) -> Any:
        record = telemetry.begin(method, context)
        error: BaseException | None = None
        try:
            if describe is not None:
                describe(record, request)
            return await behaviour(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            telemetry.finish(record, _code_of(context, error))

    return observed


def _observe_generator(telemetry: CallTelemetry, method: str, behaviour: Behaviour, unary: bool) -> Behaviour:
    describe = telemetry.describe_request if unary else None

    async def observed(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        record = telemetry.begin(method, context)
        error: BaseException | None = None
        try:
            if describe is not None:
                describe(record, request)
            # aclosing: a cancelled call closes the inner generator at once,
            # so that its cleanup (killing git) runs before the span ends.
            async with contextlib.aclosing(behaviour(request, context)) as responses:
                async for response in responses:
                    yield response
        except BaseException as raised:
            error = raised
            raise
        finally:
            telemetry.finish(record, _code_of(context, error))

    return observed


def _observe(telemetry: CallTelemetry, method: str, behaviour: Behaviour, unary: bool) -> Behaviour | None:
    if inspect.isasyncgenfunction(behaviour):
        return _observe_generator(telemetry, method, behaviour, unary)
    if inspect.iscoroutinefunction(behaviour):
        return _observe_coroutine(telemetry, method, behaviour, unary)
    return None  # a synchronous handler runs in grpc's executor: left alone


def observe_handler(
    telemetry: CallTelemetry, method: str, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour observed by ``telemetry``."""
    for kind, unary in (
        ("unary_unary", True),
        ("unary_stream", True),
        ("stream_unary", False),
        ("stream_stream", False),
    ):
        behaviour = getattr(handler, kind, None)
        if behaviour is not None:
            observed = _observe(telemetry, method, behaviour, unary)
            return handler if observed is None else handler._replace(**{kind: observed})
    return handler


class TelemetryInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Observes every call of a ``grpc.aio`` server; put it first in the list."""

    def __init__(self, telemetry: CallTelemetry) -> None:
        self.telemetry = telemetry
        # method -> (handler as found, observed handler): handlers are
        # mostly built once per method, so the wrapping is too.
        self._observed: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method in UNOBSERVED_METHODS:
            return handler
        cached = self._observed.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        observed = observe_handler(self.telemetry, method, handler)
        if cached is not None or len(self._observed) < _MAX_CACHED_HANDLERS:
            self._observed[method] = (handler, observed)
        return observed
