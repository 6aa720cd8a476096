"""Structured logs: one access line per call, trace ids on every line."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest
from grpc import aio
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from praefect.core.telemetry import configure_logging
from praefect.core.telemetry.logs import ACCESS_LOGGER, log_handler
from praefect.protos.gitaly import commit_pb2, commit_pb2_grpc, shared_pb2
from tests.support.grpc_client import auth
from tests.support.router import ROUTER_TOKEN, VIRTUAL_STORAGE
from tests.support.telemetry import Spans
from tests.telemetry.conftest import NODE, Backend, captured_log, channel_to, router_for

FIND_COMMIT = "/gitaly.CommitService/FindCommit"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def find_commit(channel: aio.Channel, *extra: tuple[str, str], relative_path: str = "group/project.git") -> None:
    await commit_pb2_grpc.CommitServiceStub(channel).FindCommit(
        commit_pb2.FindCommitRequest(
            repository=shared_pb2.Repository(storage_name=VIRTUAL_STORAGE, relative_path=relative_path),
            revision=b"main",
        ),
        metadata=auth(ROUTER_TOKEN, *extra),
    )


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_one_json_access_line_per_call_with_trace_ids(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    stream = io.StringIO()
    with captured_log(ACCESS_LOGGER, log_handler("json", stream)):
        async with router_for(backend) as router, channel_to(router) as channel:
            await find_commit(channel, ("x-gitlab-correlation-id", "corr-123"))
            with pytest.raises(aio.AioRpcError):
                await find_commit(channel, relative_path="group/missing.git")

    lines = [line for line in json_lines(stream) if line["method"] == FIND_COMMIT]
    router_lines = [line for line in lines if line["node"] == NODE]
    node_lines = [line for line in lines if line["storage"] == NODE]
    assert len(router_lines) == 2 and len(node_lines) == 2, lines
    ok, not_found = router_lines
    assert ok["code"] == "OK" and not_found["code"] == "NOT_FOUND"
    assert ok["msg"] == "call finished" and ok["level"] == "info" and ok["logger"] == ACCESS_LOGGER
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] > 0
    assert ok["virtual_storage"] == VIRTUAL_STORAGE and ok["relative_path"] == "group/project.git"
    assert ok["correlation_id"] == "corr-123"
    assert node_lines[0]["correlation_id"] == "corr-123"  # the router forwards it

    spans = Spans.from_exporter(tracing)
    router_span = next(
        span for span in spans.named(FIND_COMMIT.lstrip("/")) if span.kind == "SERVER" and "praefect.node" in span.attributes
    )
    first_trace = [line for line in lines if line["trace_id"] == router_span.trace_id]
    assert {line["span_id"] for line in first_trace} >= {router_span.span_id}
    assert len(first_trace) == 2  # the router's line and the node's line of the same trace


async def test_text_lines_carry_the_callers_trace_id_when_not_tracing(backend: Backend) -> None:
    stream = io.StringIO()
    with captured_log(ACCESS_LOGGER, log_handler("text", stream)):
        async with router_for(backend) as router, channel_to(router) as channel:
            await find_commit(channel, ("traceparent", TRACEPARENT))
    lines = [line for line in stream.getvalue().splitlines() if f"node={NODE}" in line]
    assert len(lines) == 1, stream.getvalue()
    line = lines[0]
    assert f" INFO {ACCESS_LOGGER}: call finished method={FIND_COMMIT} code=OK duration_ms=" in line
    assert "trace_id=0af7651916cd43dd8448eb211c80319c" in line
    assert "span_id=" not in line  # nothing of this process to point at


async def test_server_failures_are_warnings(backend: Backend) -> None:
    stream = io.StringIO()
    with captured_log(ACCESS_LOGGER, log_handler("json", stream)):
        async with router_for(backend) as router, channel_to(router) as channel:
            with pytest.raises(aio.AioRpcError) as raised:
                await channel.unary_unary("/gitaly.NoSuchService/Nothing")(b"", metadata=auth(ROUTER_TOKEN))
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    (line,) = json_lines(stream)
    assert line["code"] == "UNIMPLEMENTED" and line["level"] == "warning"


def test_any_log_line_inside_a_span_carries_its_ids(tracing: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    with captured_log("praefect.test", log_handler("json", stream)):
        logging.getLogger("praefect.test").info("outside")
        with trace.get_tracer("test").start_as_current_span("work") as span:
            logging.getLogger("praefect.test").warning("inside %s", "a span")
    outside, inside = json_lines(stream)
    assert outside["trace_id"] == "" and outside["span_id"] == ""
    context = span.get_span_context()
    assert inside["msg"] == "inside a span"
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")


def test_configure_logging_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        handler = configure_logging("json", "warning", stream=stream)
        assert root.handlers == [handler] and root.level == logging.WARNING
        logging.getLogger("praefect.somewhere").warning("disk %s", "full", exc_info=ValueError("boom"))
        logging.getLogger("praefect.somewhere").info("dropped")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    (line,) = json_lines(stream)
    assert line["msg"] == "disk full" and line["level"] == "warning"
    assert "ValueError: boom" in str(line["error"])
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        log_handler("xml")
