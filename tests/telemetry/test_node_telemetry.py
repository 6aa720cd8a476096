"""The node continues the caller's trace: a server span per call, a span per git process."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from praefect.core.telemetry import inject_trace_context
from praefect.node.git import run_git
from praefect.node.telemetry import _subcommand
from praefect.protos.gitaly import (
    commit_pb2,
    commit_pb2_grpc,
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
)
from tests.support.grpc_client import auth
from tests.support.router import NODE_TOKEN, wait_until
from tests.support.telemetry import Spans
from tests.telemetry.conftest import NODE, Backend, channel_to

tracer = trace.get_tracer("tests.router")


def on_node(relative_path: str = "group/project.git") -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=NODE, relative_path=relative_path)


async def test_node_span_continues_the_callers_trace_with_git_children(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    async with channel_to(backend.node) as channel:
        with tracer.start_as_current_span("router client span") as caller:
            await commit_pb2_grpc.CommitServiceStub(channel).FindCommit(
                commit_pb2.FindCommitRequest(repository=on_node(), revision=b"main"),
                metadata=auth(NODE_TOKEN, *inject_trace_context().items()),
            )
    spans = Spans.from_exporter(tracing)
    server = spans.one("gitaly.CommitService/FindCommit")
    context = caller.get_span_context()
    assert server.trace_id == format(context.trace_id, "032x")
    assert server.parent_span_id == format(context.span_id, "016x")
    assert server.kind == "SERVER"
    assert server.attributes["praefect.storage"] == NODE
    git_spans = spans.children(server)
    assert [span.name for span in git_spans] == ["git cat-file"]
    assert git_spans[0].attributes["process.exit_code"] == 0


async def test_git_spans_hide_absolute_paths(tracing: InMemorySpanExporter, backend: Backend) -> None:
    async with channel_to(backend.node) as channel:
        with tracer.start_as_current_span("caller"):
            await repository_pb2_grpc.RepositoryServiceStub(channel).CreateRepository(
                repository_pb2.CreateRepositoryRequest(repository=on_node("group/fresh.git")),
                metadata=auth(NODE_TOKEN, *inject_trace_context().items()),
            )
    spans = Spans.from_exporter(tracing)
    git_spans = [span for span in spans.all if span.name.startswith("git ")]
    assert git_spans, spans.describe()
    root = str(backend.root)
    for span in spans.all:
        for value in span.attributes.values():
            assert root not in str(value), f"{span.name} shows the storage path: {span.attributes}"


async def test_rejected_calls_are_observed_and_health_is_not(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    async with channel_to(backend.node) as channel:
        with pytest.raises(aio.AioRpcError) as raised:
            await commit_pb2_grpc.CommitServiceStub(channel).FindCommit(
                commit_pb2.FindCommitRequest(repository=on_node(), revision=b"main"),
                metadata=(("authorization", "Bearer wrong"),),
            )
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    spans = Spans.from_exporter(tracing)
    rejected = spans.one("gitaly.CommitService/FindCommit")
    assert rejected.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert spans.children(rejected) == []  # git never ran
    assert not [span for span in spans.all if "Health" in span.name]


async def test_git_outside_a_traced_call_starts_no_trace(tracing: InMemorySpanExporter) -> None:
    await run_git(["version"])
    with tracer.start_as_current_span("traced work"):
        await run_git(["version"])
    await wait_until(lambda: len(tracing.get_finished_spans()) >= 2, "two spans")
    spans = Spans.from_exporter(tracing)
    (git_span,) = spans.named("git version")
    assert git_span.parent_span_id == spans.one("traced work").span_id


def test_subcommand_skips_global_options() -> None:
    assert _subcommand(["-c", "uploadpack.allowFilter=true", "upload-pack", "--stateless-rpc", "."]) == "upload-pack"
    assert _subcommand(["--git-dir", "/x", "cat-file", "--batch"]) == "cat-file"
    assert _subcommand(["--version"]) == ""
