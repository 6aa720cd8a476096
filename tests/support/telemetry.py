"""Test support for tracing, metrics and logs.

- :func:`in_memory_tracing`: make the SDK's in-memory exporter this
  process's tracing for one test, and turn tracing off again afterwards (so
  that other tests run as without tracing);
- :class:`OtlpReceiver`: a real OTLP/gRPC trace receiver on a free loopback
  port (``opentelemetry.proto`` TraceService/Export) collecting what
  processes export to it;
- :func:`scrape`: a real HTTP GET of a ``/metrics`` endpoint, parsed;
- :class:`Spans`: finding spans of one trace and their parents.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from grpc import aio
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from prometheus_client.parser import text_string_to_metric_families

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


def _set_global_provider(provider: trace.TracerProvider | None) -> None:
    # OpenTelemetry allows one provider per process; its own test utilities
    # reset these globals the same way. One provider object for the whole
    # session: tracers resolved earlier keep pointing at it.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    if provider is not None:
        trace.set_tracer_provider(provider)


@contextlib.contextmanager
def in_memory_tracing() -> Iterator[InMemorySpanExporter]:
    """Trace everything into an in-memory exporter (cleared) while in the block."""
    _EXPORTER.clear()
    with installed_provider(_PROVIDER):
        yield _EXPORTER
    _EXPORTER.clear()


@contextlib.contextmanager
def installed_provider(provider: TracerProvider) -> Iterator[TracerProvider]:
    """Make ``provider`` this process's tracer provider while in the block.

    Create routers and nodes inside the block: they take their tracer when
    they are built.
    """
    _set_global_provider(provider)
    try:
        yield provider
    finally:
        _set_global_provider(None)


# -- spans as found in a trace ------------------------------------------------------


@dataclass(frozen=True)
class FoundSpan:
    """A finished span, from the in-memory exporter or an OTLP export."""

    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: Mapping[str, Any]
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id)
    service: str = ""
    status: str = "UNSET"
    resource: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sdk(cls, span: ReadableSpan) -> FoundSpan:
        context = span.get_span_context()
        assert context is not None
        parent = span.parent
        return cls(
            name=span.name,
            kind=span.kind.name,
            trace_id=format(context.trace_id, "032x"),
            span_id=format(context.span_id, "016x"),
            parent_span_id=format(parent.span_id, "016x") if parent is not None else "",
            attributes=dict(span.attributes or {}),
            links=tuple(
                (format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"))
                for link in span.links
            ),
            service=str(span.resource.attributes.get("service.name", "")),
            status=span.status.status_code.name,
            resource=dict(span.resource.attributes),
        )


_OTLP_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_OTLP_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class Spans:
    """A set of finished spans with lookups by name, trace and parent."""

    def __init__(self, spans: Iterable[FoundSpan]) -> None:
        self.all = list(spans)

    @classmethod
    def from_exporter(cls, exporter: InMemorySpanExporter) -> Spans:
        return cls(FoundSpan.from_sdk(span) for span in exporter.get_finished_spans())

    def named(self, name: str, **attributes: Any) -> list[FoundSpan]:
        return [
            span
            for span in self.all
            if span.name == name and all(span.attributes.get(k) == v for k, v in attributes.items())
        ]

    def one(self, name: str, **attributes: Any) -> FoundSpan:
        found = self.named(name, **attributes)
        assert len(found) == 1, f"expected one span {name!r} {attributes}, found {len(found)}: {self.describe()}"
        return found[0]

    def children(self, parent: FoundSpan) -> list[FoundSpan]:
        return [
            span
            for span in self.all
            if span.trace_id == parent.trace_id and span.parent_span_id == parent.span_id
        ]

    def in_trace(self, trace_id: str) -> list[FoundSpan]:
        return [span for span in self.all if span.trace_id == trace_id]

    def describe(self) -> str:
        return "; ".join(
            f"{span.service}:{span.name}[{span.kind}] {span.trace_id[:8]}/{span.span_id[:8]}<-{span.parent_span_id[:8]}"
            for span in self.all
        )


# -- an OTLP receiver ------------------------------------------------------------------


@dataclass
class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects the spans that processes export to it over OTLP/gRPC."""

    spans: list[FoundSpan] = field(default_factory=list)
    address: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            service = resource.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        FoundSpan(
                            name=span.name,
                            kind=_OTLP_KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                            service=str(service),
                            status=_OTLP_STATUS.get(span.status.code, str(span.status.code)),
                            resource=resource,
                        )
                    )
        self._changed.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def wait_for(self, predicate: Any, what: str, within: float = 15.0) -> Spans:
        """Wait until ``predicate(Spans)`` holds; fail naming ``what``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            spans = Spans(self.spans)
            if predicate(spans):
                return spans
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {within} s waiting for {what}; received: {spans.describe()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """An OTLP/gRPC trace receiver on a free loopback port (``.address``)."""
    receiver = OtlpReceiver()
    server = aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    receiver.address = f"127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await server.stop(0)


# -- Prometheus ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One scrape: samples by name and labels, and the response's content type."""

    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]
    content_type: str

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name{labels}``; 0 when it does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(address: str, path: str = "/metrics") -> Scrape:
    """GET ``http://address/metrics`` and parse the text exposition format."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{address}{path}") as response:
        assert response.status == 200, f"GET {path} answered {response.status}"
        text = await response.text()
        content_type = response.headers.get("Content-Type", "")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, content_type)


def bucket_count(result: Scrape, name: str, **labels: str) -> float:
    """The ``_count`` of histogram ``name`` for ``labels``."""
    return result.value(f"{name}_count", **labels)


def only(items: Sequence[Any], what: str) -> Any:
    assert len(items) == 1, f"expected exactly one {what}, found {len(items)}: {items}"
    return items[0]
