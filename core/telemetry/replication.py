"""Spans of replication: publishing events after a write, replaying them later.

A mutation's events are published inside the router's call (a producer span,
child of the call's server span); their replay happens later, in a worker,
as the root of a trace of its own (a consumer span) *linked* to the
published context: one write, one trace; each replica's replay, one linked
trace. The replay's ``ReplicateRepository`` call is a client span
(:func:`node_call_span`) inside the replay, and carries that span's context
(``inject_trace_context()`` inside it), so the target node's spans continue
the replay's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from praefect.core import __version__
from praefect.core.telemetry.calls import span_status_for
from praefect.core.telemetry.metrics import ReplicationMetrics
from praefect.core.telemetry.propagation import inject_trace_context, span_context_of

__all__ = ["ReplayedEvent", "node_call_span", "publish_span", "replay_span"]


def _tracer() -> trace.Tracer:
    # Looked up per use: replays are rare next to calls, and a tracer taken
    # at import would stay bound to whichever provider was current then.
    return trace.get_tracer("praefect.replication", __version__)


class ReplayedEvent(Protocol):
    """What :func:`replay_span` reads of an event (``ReplicationEvent`` has it)."""

    @property
    def virtual_storage(self) -> str: ...

    @property
    def relative_path(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def created_at(self) -> float: ...

    @property
    def trace_context(self) -> Mapping[str, str]: ...

    @property
    def attempt(self) -> int: ...

    @property
    def change(self) -> object: ...


@contextlib.contextmanager
def publish_span(
    virtual_storage: str, relative_path: str, change: object, targets: Sequence[str]
) -> Iterator[dict[str, str]]:
    """A producer span around queueing a mutation's events.

    Yields the trace context to store with the events (``{}`` when tracing
    is off: store the mutation's own ``trace_context`` then).
    """
    with _tracer().start_as_current_span(
        "publish replication events",
        kind=SpanKind.PRODUCER,
        attributes={
            "praefect.virtual_storage": virtual_storage,
            "praefect.relative_path": relative_path,
            "praefect.change": str(getattr(change, "value", change)),
            "praefect.targets": list(targets),
        },
    ):
        yield inject_trace_context()


@contextlib.contextmanager
def replay_span(
    event: ReplayedEvent, *, metrics: ReplicationMetrics | None = None
) -> Iterator[trace.Span]:
    """The span of one replay: a new trace linked to the write's span context.

    Current inside the block, so node calls made there (with
    ``inject_trace_context()`` in their metadata) continue its trace. With
    ``metrics`` it records the replication delay (event creation to now) at
    the start and the replay's duration at the end. An exception escaping the
    block marks the span failed and propagates.
    """
    linked = span_context_of(event.trace_context)
    links = [trace.Link(linked, {"praefect.link": "mutation"})] if linked.is_valid else []
    change = str(getattr(event.change, "value", event.change))
    if metrics is not None:
        metrics.observe_delay(event.virtual_storage, event.target, time.time() - event.created_at)
    started = time.perf_counter()
    try:
        with _tracer().start_as_current_span(
            f"replicate {change}",
            context=Context(),  # a root: the replay is its own trace
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "praefect.virtual_storage": event.virtual_storage,
                "praefect.relative_path": event.relative_path,
                "praefect.change": change,
                "praefect.source": event.source,
                "praefect.target": event.target,
                "praefect.attempt": event.attempt,
            },
        ) as span:
            yield span
    finally:
        if metrics is not None:
            metrics.observe_latency(event.virtual_storage, event.target, time.perf_counter() - started)


@contextlib.contextmanager
def node_call_span(method: str, virtual_storage: str, node: str) -> Iterator[trace.Span]:
    """A client span around one call replication makes to a node.

    ``method`` is the full gRPC method (``/gitaly.RepositoryService/...``).
    Current inside the block: send ``inject_trace_context()`` with the call
    so the node's server span is its child. The span gets the call's status
    code: from the ``grpc.aio.AioRpcError`` escaping the block, ``CANCELLED``
    for a cancellation, ``OK`` when the block ends normally.
    """
    name = method.lstrip("/")
    service, _, short = name.partition("/")
    with _tracer().start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": short,
            "praefect.virtual_storage": virtual_storage,
            "praefect.node": node,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        code = grpc.StatusCode.OK
        try:
            yield span
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            if span.is_recording():
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                span.set_status(span_status_for(code))
