"""Publish and replay spans, and W3C trace context in metadata and events."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from praefect.core.mutation import ChangeType
from praefect.core.telemetry import (
    extract_trace_context,
    inject_trace_context,
    node_call_span,
    publish_span,
    replay_span,
    span_context_of,
)
from praefect.core.telemetry.propagation import (
    context_from_metadata,
    metadata_with_trace_context,
    trace_id_from_metadata,
)
from tests.support.telemetry import Spans

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
tracer = trace.get_tracer("tests.replication")


@dataclass(frozen=True)
class Event:
    trace_context: dict[str, str]
    virtual_storage: str = "praefect"
    relative_path: str = "group/project.git"
    source: str = "gitaly-1"
    target: str = "gitaly-2"
    created_at: float = field(default_factory=time.time)
    attempt: int = 1
    change: ChangeType = ChangeType.CREATE


def test_replay_is_a_new_trace_linked_to_the_published_write(tracing: InMemorySpanExporter) -> None:
    with (
        tracer.start_as_current_span("router call") as call_span,
        publish_span("praefect", "group/project.git", ChangeType.CREATE, ["gitaly-2"]) as stored,
    ):
        pass
    assert set(stored) == {"traceparent"}

    # whatever is current, the replay is a root
    with tracer.start_as_current_span("worker loop"), replay_span(Event(trace_context=stored)) as replay:
        in_replay = inject_trace_context()

    spans = Spans.from_exporter(tracing)
    publish = spans.one("publish replication events")
    call = format(call_span.get_span_context().trace_id, "032x")
    assert publish.kind == "PRODUCER" and publish.trace_id == call
    assert publish.attributes["praefect.targets"] == ("gitaly-2",)
    assert span_context_of(stored).span_id == int(publish.span_id, 16)

    replayed = spans.one("replicate create")
    assert replayed.kind == "CONSUMER"
    assert replayed.parent_span_id == ""
    assert replayed.trace_id != call
    assert replayed.links == ((publish.trace_id, publish.span_id),)
    assert replayed.attributes["praefect.target"] == "gitaly-2"
    assert replayed.attributes["praefect.attempt"] == 1
    # node calls made in the replay continue the replay's trace
    assert span_context_of(in_replay).span_id == replay.get_span_context().span_id


def test_a_failed_replay_is_marked_and_reraised(tracing: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError, match="target refused"), replay_span(Event(trace_context={})):
        raise RuntimeError("target refused")
    replayed = Spans.from_exporter(tracing).one("replicate create")
    assert replayed.status == "ERROR"
    assert replayed.links == ()  # nothing to link to


def test_node_call_spans_carry_their_context_and_the_call_s_outcome(tracing: InMemorySpanExporter) -> None:
    method = "/gitaly.RepositoryService/RemoveRepository"
    with replay_span(Event(trace_context={})) as replay, node_call_span(method, "praefect", "gitaly-2") as call:
        sent = inject_trace_context()
    with pytest.raises(asyncio.CancelledError), node_call_span(method, "praefect", "gitaly-2"):
        raise asyncio.CancelledError
    with pytest.raises(ValueError), node_call_span(method, "praefect", "gitaly-2"):
        raise ValueError("not a gRPC error")

    ok, cancelled, failed = Spans.from_exporter(tracing).named("gitaly.RepositoryService/RemoveRepository")
    assert ok.kind == "CLIENT"
    assert ok.parent_span_id == format(replay.get_span_context().span_id, "016x")
    assert span_context_of(sent).span_id == call.get_span_context().span_id
    assert ok.attributes["rpc.service"] == "gitaly.RepositoryService"
    assert ok.attributes["rpc.method"] == "RemoveRepository"
    assert ok.attributes["praefect.node"] == "gitaly-2"
    assert (ok.attributes["rpc.grpc.status_code"], ok.status) == (0, "UNSET")
    assert (cancelled.attributes["rpc.grpc.status_code"], cancelled.status) == (1, "ERROR")
    assert (failed.attributes["rpc.grpc.status_code"], failed.status) == (2, "ERROR")


def test_without_tracing_publish_yields_nothing_to_store() -> None:
    with publish_span("praefect", "p.git", ChangeType.UPDATE, ["gitaly-2"]) as stored:
        assert stored == {}
    with replay_span(Event(trace_context={"traceparent": TRACEPARENT})):
        assert inject_trace_context() == {}


def test_inject_and_extract_round_trip(tracing: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("span") as span:
        headers = inject_trace_context()
    remote = trace.get_current_span(extract_trace_context(headers)).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
    assert remote.is_remote
    assert not span_context_of({"traceparent": "garbage"}).is_valid
    assert not span_context_of({}).is_valid


def test_metadata_trace_context_is_replaced_not_duplicated(tracing: InMemorySpanExporter) -> None:
    client = (("authorization", "Bearer x"), ("traceparent", TRACEPARENT), ("tracestate", "k=v"), ("x", "y"))
    parent = context_from_metadata(client)
    with tracer.start_as_current_span("router", context=parent) as span:
        outgoing = metadata_with_trace_context(client, span)
    keys = [key for key, _ in outgoing]
    assert keys.count("traceparent") == 1 and ("x", "y") in outgoing and ("authorization", "Bearer x") in outgoing
    sent = dict(outgoing)["traceparent"]
    assert sent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"  # same trace
    assert sent.split("-")[2] == format(span.get_span_context().span_id, "016x")  # our span


@pytest.mark.parametrize(
    ("metadata", "trace_id"),
    [
        ((("traceparent", TRACEPARENT),), "0af7651916cd43dd8448eb211c80319c"),
        ((("traceparent", "00-" + "0" * 32 + "-b7ad6b7169203331-01"),), ""),
        ((("traceparent", "nonsense"),), ""),
        ((("traceparent", b"bytes"),), ""),
        ((), ""),
    ],
)
def test_trace_id_from_metadata(metadata: tuple[tuple[str, object], ...], trace_id: str) -> None:
    assert trace_id_from_metadata(metadata) == trace_id
