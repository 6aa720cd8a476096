"""Traces across processes, as a collector receives them over OTLP.

Two `praefect node serve` processes configured only through OTEL_*
variables, a router exporting over OTLP from its settings, one write through
the router and the replay of that write onto the replica: the receiver gets
one trace from the client's call to git on the primary, and a second trace,
linked to the first, from the replay to git on the replica.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio
from opentelemetry.sdk.trace import TracerProvider

from praefect.core import hookimpl
from praefect.core.mutation import ChangeType, Mutation
from praefect.core.telemetry import inject_trace_context, replay_span
from praefect.core.telemetry.tracing import build_tracer_provider, plan_tracing
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc, shared_pb2
from praefect.settings import TracingConfig
from tests.support.gitenv import git, git_env, make_work_repo
from tests.support.grpc_client import auth
from tests.support.processes import ServerProcess, start_process
from tests.support.router import (
    NODE_TOKEN,
    ROUTER_TOKEN,
    VIRTUAL_STORAGE,
    router_settings,
    running_router,
)
from tests.support.telemetry import (
    FoundSpan,
    OtlpReceiver,
    Spans,
    installed_provider,
    otlp_receiver,
)

PRIMARY, REPLICA = "gitaly-1", "gitaly-2"
CREATE = "gitaly.RepositoryService/CreateRepositoryFromBundle"
REPLICATE = "gitaly.RepositoryService/ReplicateRepository"


@dataclass
class Cluster:
    receiver: OtlpReceiver
    nodes: dict[str, ServerProcess]
    provider: TracerProvider


def start_traced_node(name: str, root: Path, receiver: OtlpReceiver) -> ServerProcess:
    env = git_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.address}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_RESOURCE_ATTRIBUTES": f"praefect.node={name}",
            # export promptly instead of every 5 s
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
    )
    env = {key: value for key, value in env.items() if not key.startswith("PRAEFECT_")}
    args = ["node", "serve", "--listen", "127.0.0.1:0", "--token", NODE_TOKEN, "--storage", f"{name}={root}"]
    return start_process(args, env=env)


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # the router's spans too
    async with otlp_receiver() as receiver:
        nodes: dict[str, ServerProcess] = {}
        try:
            for name in (PRIMARY, REPLICA):
                nodes[name] = start_traced_node(name, tmp_path / name, receiver)
            settings = TracingConfig(
                exporter="otlp", endpoint=f"http://{receiver.address}", protocol="grpc", service_name="praefect"
            )
            provider = build_tracer_provider(plan_tracing("router", settings))
            assert provider is not None
            with installed_provider(provider):
                yield Cluster(receiver, nodes, provider)
                await asyncio.to_thread(provider.shutdown)
        finally:
            # in a thread: a stopping node flushes its spans to the receiver,
            # which this event loop serves
            for process in nodes.values():
                await asyncio.to_thread(process.stop)


class MutationRecorder:
    def __init__(self) -> None:
        self.mutations: list[Mutation] = []

    @hookimpl  # type: ignore[untyped-decorator, unused-ignore]
    def on_mutation(self, mutation: Mutation) -> None:
        self.mutations.append(mutation)


def bundle_requests(work: Path, repository: shared_pb2.Repository) -> Iterator[repository_pb2.CreateRepositoryFromBundleRequest]:
    bundle = work.parent / "repo.bundle"
    git(["bundle", "create", str(bundle), "--all"], cwd=work)
    data = bundle.read_bytes()
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    yield repository_pb2.CreateRepositoryFromBundleRequest(repository=repository, data=chunks[0])
    for chunk in chunks[1:]:
        yield repository_pb2.CreateRepositoryFromBundleRequest(data=chunk)


def gitaly_servers(name: str, process: ServerProcess) -> tuple[str, str]:
    payload = {name: {"address": f"tcp://{process.address}", "token": NODE_TOKEN}}
    return ("gitaly-servers", base64.b64encode(json.dumps(payload).encode()).decode())


@dataclass(frozen=True)
class Event:
    trace_context: dict[str, str]
    virtual_storage: str = VIRTUAL_STORAGE
    relative_path: str = "group/traced.git"
    source: str = PRIMARY
    target: str = REPLICA
    created_at: float = 0.0
    attempt: int = 0
    change: ChangeType = ChangeType.CREATE


def under(spans: Spans, parent: FoundSpan, name: str, service: str) -> FoundSpan:
    found = [span for span in spans.children(parent) if span.name == name and span.service == service]
    assert len(found) == 1, f"no single {service}:{name} under {parent.name}: {spans.describe()}"
    return found[0]


async def test_write_and_replay_traces_reach_the_collector(cluster: Cluster, tmp_path: Path) -> None:
    recorder = MutationRecorder()
    addresses = {name: f"tcp://{process.address}" for name, process in cluster.nodes.items()}
    settings = router_settings(addresses, primary=PRIMARY, plugins={"blocked": ["praefect.plugins.replication"]})
    repository = shared_pb2.Repository(storage_name=VIRTUAL_STORAGE, relative_path="group/traced.git")
    work = make_work_repo(tmp_path / "work", commits=2)
    client = cluster.provider.get_tracer("tests.client")

    async with running_router(settings, extra_plugins=[("recorder", recorder)]) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            with client.start_as_current_span("client write"):
                await repository_pb2_grpc.RepositoryServiceStub(channel).CreateRepositoryFromBundle(
                    bundle_requests(work, repository), metadata=auth(ROUTER_TOKEN, *inject_trace_context().items())
                )
    (mutation,) = recorder.mutations
    assert [node.name for node in mutation.replicas] == [REPLICA]

    # the replay, as a replication worker does it
    async with aio.insecure_channel(cluster.nodes[REPLICA].address) as channel:
        with replay_span(Event(trace_context=dict(mutation.trace_context))):
            await repository_pb2_grpc.RepositoryServiceStub(channel).ReplicateRepository(
                repository_pb2.ReplicateRepositoryRequest(
                    repository=shared_pb2.Repository(storage_name=REPLICA, relative_path="group/traced.git"),
                    source=shared_pb2.Repository(storage_name=PRIMARY, relative_path="group/traced.git"),
                ),
                metadata=auth(
                    NODE_TOKEN, gitaly_servers(PRIMARY, cluster.nodes[PRIMARY]), *inject_trace_context().items()
                ),
            )

    def complete(spans: Spans) -> bool:
        node_spans = [s for s in spans.all if s.service == "praefect-node"]
        return (
            bool(spans.named("client write"))
            and bool(spans.named("replicate create"))
            and any(s.name == CREATE for s in node_spans)
            and any(s.name == REPLICATE for s in node_spans)
            and sum(1 for s in node_spans if s.name.startswith("git ")) >= 2
        )

    spans = await cluster.receiver.wait_for(complete, "the write's and the replay's spans")

    # one trace: client -> router -> router's node call -> primary node -> git
    client_span = spans.one("client write")
    router_server = under(spans, client_span, CREATE, "praefect-router")
    assert router_server.kind == "SERVER"
    assert router_server.attributes["praefect.node"] == PRIMARY
    assert router_server.attributes["praefect.operation"] == "mutator"
    router_client = under(spans, router_server, CREATE, "praefect-router")
    assert router_client.kind == "CLIENT"
    primary_server = under(spans, router_client, CREATE, "praefect-node")
    assert primary_server.resource["praefect.node"] == PRIMARY  # from OTEL_RESOURCE_ATTRIBUTES
    git_on_primary = [s for s in spans.children(primary_server) if s.name.startswith("git ")]
    assert git_on_primary, spans.describe()
    assert all(s.service == "praefect-node" for s in git_on_primary)

    # a second trace: the replay, linked to the write, down to git on the replica
    replay = spans.one("replicate create")
    assert replay.trace_id != client_span.trace_id
    assert replay.parent_span_id == ""
    assert replay.links == ((router_server.trace_id, router_server.span_id),)
    replica_server = under(spans, replay, REPLICATE, "praefect-node")
    assert replica_server.attributes["praefect.storage"] == REPLICA
    assert replica_server.resource["praefect.node"] == REPLICA
    git_on_replica = [s.name for s in spans.children(replica_server) if s.name.startswith("git ")]
    assert "git fetch" in git_on_replica, spans.describe()
