"""Trace trees through a real router and a real in-process node.

client span -> router server span -> router client span -> node server span
-> git span, one trace id, with the routing decision as attributes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc
import pytest
from grpc import aio
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from praefect.core import hookimpl
from praefect.core.mutation import Mutation
from praefect.core.telemetry import inject_trace_context
from praefect.protos.gitaly import (
    blob_pb2,
    blob_pb2_grpc,
    commit_pb2,
    commit_pb2_grpc,
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
)
from tests.support.grpc_client import auth
from tests.support.repos import git_in
from tests.support.router import ROUTER_TOKEN, VIRTUAL_STORAGE, wait_until
from tests.support.telemetry import FoundSpan, Spans
from tests.telemetry.conftest import NODE, Backend, channel_to, router_for

FIND_COMMIT = "gitaly.CommitService/FindCommit"
GET_BLOB = "gitaly.BlobService/GetBlob"
client_tracer = trace.get_tracer("tests.client")


def repository(relative_path: str = "group/project.git") -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=VIRTUAL_STORAGE, relative_path=relative_path)


def big_blob(backend: Backend) -> str:
    """The object id of the seeded repository's 100 KiB blob."""
    return git_in(backend.repository.path, "rev-parse", "main:big.bin").strip()


def traced_metadata(*extra: tuple[str, str]) -> Sequence[tuple[str, str]]:
    """Router auth plus the current (client) span's traceparent."""
    return auth(ROUTER_TOKEN, *extra, *inject_trace_context().items())


def chain(spans: Spans, root: FoundSpan, names: Sequence[str]) -> list[FoundSpan]:
    """The spans named ``names``, each the only child of that name of the one before."""
    found = [root]
    for name in names:
        children = [span for span in spans.children(found[-1]) if span.name == name]
        assert len(children) == 1, (
            f"expected one child {name!r} of {found[-1].name!r}, found {len(children)}: {spans.describe()}"
        )
        found.append(children[0])
    return found


async def finished(exporter: InMemorySpanExporter, predicate: object, what: str) -> Spans:
    """Spans once ``predicate(Spans)`` holds (spans end in done callbacks)."""
    await wait_until(lambda: predicate(Spans.from_exporter(exporter)), what)  # type: ignore[operator]
    return Spans.from_exporter(exporter)


async def test_unary_call_is_one_trace_from_client_to_git(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    async with router_for(backend) as router, channel_to(router) as channel:
        stub = commit_pb2_grpc.CommitServiceStub(channel)
        with client_tracer.start_as_current_span("client call") as client_span:
            response = await stub.FindCommit(
                commit_pb2.FindCommitRequest(repository=repository(), revision=b"main"),
                metadata=traced_metadata(),
            )
        assert response.commit.id == backend.repository.oid("c5")

    spans = await finished(tracing, lambda s: s.named(FIND_COMMIT) and s.named("client call"), "the spans")
    root = spans.one("client call")
    client_context = client_span.get_span_context()
    assert root.trace_id == format(client_context.trace_id, "032x")
    _, router_server, router_client, node_server, git_span = chain(
        spans, root, [FIND_COMMIT, FIND_COMMIT, FIND_COMMIT, "git cat-file"]
    )
    assert {span.trace_id for span in spans.all} == {root.trace_id}

    assert router_server.kind == "SERVER"
    assert router_server.attributes["rpc.system"] == "grpc"
    assert router_server.attributes["rpc.service"] == "gitaly.CommitService"
    assert router_server.attributes["rpc.method"] == "FindCommit"
    assert router_server.attributes["praefect.virtual_storage"] == VIRTUAL_STORAGE
    assert router_server.attributes["praefect.relative_path"] == "group/project.git"
    assert router_server.attributes["praefect.operation"] == "accessor"
    assert router_server.attributes["praefect.node"] == NODE
    assert router_server.attributes["rpc.grpc.status_code"] == 0

    assert router_client.kind == "CLIENT"
    assert router_client.attributes["praefect.node"] == NODE
    assert router_client.attributes["server.address"] == backend.address
    assert router_client.attributes["rpc.grpc.status_code"] == 0

    assert node_server.kind == "SERVER"
    assert node_server.attributes["praefect.storage"] == NODE  # the rewritten storage name
    assert node_server.attributes["praefect.relative_path"] == "group/project.git"
    assert node_server.attributes["rpc.grpc.status_code"] == 0

    assert git_span.attributes["git.subcommand"] == "cat-file"
    assert git_span.attributes["process.exit_code"] == 0
    assert isinstance(git_span.attributes["process.pid"], int)


async def test_a_call_without_trace_context_starts_the_trace_at_the_router(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    async with router_for(backend) as router, channel_to(router) as channel:
        stub = commit_pb2_grpc.CommitServiceStub(channel)
        await stub.FindCommit(
            commit_pb2.FindCommitRequest(repository=repository(), revision=b"main"), metadata=auth(ROUTER_TOKEN)
        )
    spans = await finished(tracing, lambda s: len(s.named(FIND_COMMIT)) == 3, "three FindCommit spans")
    roots = [span for span in spans.named(FIND_COMMIT) if not span.parent_span_id]
    assert len(roots) == 1 and roots[0].kind == "SERVER"
    chain(spans, roots[0], [FIND_COMMIT, FIND_COMMIT])
    assert {span.trace_id for span in spans.all} == {roots[0].trace_id}


async def test_server_streaming_call_is_traced_to_git_and_streams_whole(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    blob_oid = big_blob(backend)
    async with router_for(backend) as router, channel_to(router) as channel:
        stub = blob_pb2_grpc.BlobServiceStub(channel)
        with client_tracer.start_as_current_span("client call"):
            data = b""
            async for message in stub.GetBlob(
                blob_pb2.GetBlobRequest(repository=repository(), oid=blob_oid, limit=-1),
                metadata=traced_metadata(),
            ):
                data += message.data
    assert len(data) == 102400

    spans = await finished(tracing, lambda s: len(s.named(GET_BLOB)) == 3, "three GetBlob spans")
    _, router_server, _, node_server = chain(spans, spans.one("client call"), [GET_BLOB, GET_BLOB, GET_BLOB])
    assert router_server.attributes["rpc.grpc.status_code"] == 0
    git_spans = [span for span in spans.children(node_server) if span.name.startswith("git ")]
    assert git_spans, f"no git span under the node's GetBlob: {spans.describe()}"


async def test_failed_call_records_its_status(tracing: InMemorySpanExporter, backend: Backend) -> None:
    async with router_for(backend) as router, channel_to(router) as channel:
        stub = commit_pb2_grpc.CommitServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as raised:
            await stub.FindCommit(
                commit_pb2.FindCommitRequest(repository=repository("group/missing.git"), revision=b"main"),
                metadata=traced_metadata(),
            )
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(aio.AioRpcError) as raised:
            await stub.FindCommit(
                commit_pb2.FindCommitRequest(repository=repository(), revision=b"main"),
                metadata=(("authorization", "Bearer nonsense"),),
            )
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED

    spans = await finished(tracing, lambda s: len(s.named(FIND_COMMIT)) == 4, "four FindCommit spans")
    servers = [span for span in spans.named(FIND_COMMIT) if span.kind == "SERVER"]
    by_code = {span.attributes["rpc.grpc.status_code"]: span for span in servers if "praefect.storage" not in span.attributes}
    not_found = by_code[grpc.StatusCode.NOT_FOUND.value[0]]
    assert not_found.attributes["praefect.node"] == NODE
    assert not_found.status == "UNSET"  # a client's mistake is not the server's failure
    client = only_child(spans, not_found)
    assert client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert client.status == "ERROR"
    rejected = by_code[grpc.StatusCode.UNAUTHENTICATED.value[0]]
    assert "praefect.node" not in rejected.attributes  # never routed
    assert spans.children(rejected) == []


def only_child(spans: Spans, parent: FoundSpan) -> FoundSpan:
    children = spans.children(parent)
    assert len(children) == 1, spans.describe()
    return children[0]


async def test_cancelled_stream_ends_every_span_and_kills_git(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    """The aio pitfall: a cancelled stream must still end its spans and kill git."""
    # far more than gRPC's flow-control windows: the node is still sending
    huge = git_in(backend.repository.path, "hash-object", "-w", "--stdin", stdin=os.urandom(32 * 1024 * 1024))
    async with router_for(backend) as router, channel_to(router) as channel:
        stub = blob_pb2_grpc.BlobServiceStub(channel)
        with client_tracer.start_as_current_span("client call"):
            call = stub.GetBlob(
                blob_pb2.GetBlobRequest(repository=repository(), oid=huge.strip(), limit=-1),
                metadata=traced_metadata(),
            )
            first = await call.read()
            assert first.size == 32 * 1024 * 1024
            call.cancel()
        spans = await finished(
            tracing,
            lambda s: len(s.named(GET_BLOB)) == 3 and any(x.name.startswith("git ") for x in s.all),
            "the cancelled call's spans",
        )
        _, router_server, router_client, node_server = chain(
            spans, spans.one("client call"), [GET_BLOB, GET_BLOB, GET_BLOB]
        )
        cancelled = grpc.StatusCode.CANCELLED.value[0]
        assert router_server.attributes["rpc.grpc.status_code"] == cancelled
        assert router_client.attributes["rpc.grpc.status_code"] == cancelled
        assert node_server.attributes["rpc.grpc.status_code"] == cancelled
        exit_codes = [span.attributes.get("process.exit_code") for span in spans.children(node_server)]
        assert -9 in exit_codes, f"git was not killed: {exit_codes}"  # SIGKILL, not finished
        # the router still serves: cancellation did not wedge anything
        await commit_pb2_grpc.CommitServiceStub(channel).FindCommit(
            commit_pb2.FindCommitRequest(repository=repository(), revision=b"main"), metadata=auth(ROUTER_TOKEN)
        )


class MutationRecorder:
    def __init__(self) -> None:
        self.mutations: list[Mutation] = []

    @hookimpl  # type: ignore[untyped-decorator, unused-ignore]
    def on_mutation(self, mutation: Mutation) -> None:
        self.mutations.append(mutation)


async def test_mutation_carries_the_router_span_as_trace_context(
    tracing: InMemorySpanExporter, backend: Backend
) -> None:
    recorder = MutationRecorder()
    async with router_for(backend, extra_plugins=[("recorder", recorder)]) as router, channel_to(router) as channel:
        stub = repository_pb2_grpc.RepositoryServiceStub(channel)
        with client_tracer.start_as_current_span("client call"):
            await stub.CreateRepository(
                repository_pb2.CreateRepositoryRequest(repository=repository("group/new.git")),
                metadata=traced_metadata(),
            )
    create = "gitaly.RepositoryService/CreateRepository"
    spans = await finished(tracing, lambda s: len(s.named(create)) == 3, "three CreateRepository spans")
    _, router_server = chain(spans, spans.one("client call"), [create])
    assert router_server.attributes["praefect.operation"] == "mutator"
    (mutation,) = recorder.mutations
    _, trace_id, span_id, flags = mutation.trace_context["traceparent"].split("-")
    assert (trace_id, span_id) == (router_server.trace_id, router_server.span_id)
    assert int(flags, 16) & 1  # sampled


async def test_without_tracing_the_callers_trace_context_is_forwarded(backend: Backend) -> None:
    """Tracing off: no spans, and the node still gets the client's traceparent."""
    recorder = MutationRecorder()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with router_for(backend, extra_plugins=[("recorder", recorder)]) as router, channel_to(router) as channel:
        stub = repository_pb2_grpc.RepositoryServiceStub(channel)
        await stub.CreateRepository(
            repository_pb2.CreateRepositoryRequest(repository=repository("group/untraced.git")),
            metadata=auth(ROUTER_TOKEN, ("traceparent", traceparent)),
        )
    (mutation,) = recorder.mutations
    assert mutation.trace_context == {"traceparent": traceparent}
