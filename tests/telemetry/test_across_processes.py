"""Traces across processes, as a collector receives them over OTLP.

Two `praefect node serve` processes configured only through OTEL_*
variables, and a router exporting over OTLP from its settings with the
replication plugin running (its embedded Redis, its replay workers). One
write through the router: the receiver gets one trace from the client's
call to git on the primary, and, for the replica, a second trace linked to
the first, from the real worker's replay to git on the replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio
from opentelemetry.sdk.trace import TracerProvider

from praefect.core.server import RouterServer
from praefect.core.telemetry import inject_trace_context
from praefect.core.telemetry.tracing import build_tracer_provider, plan_tracing
from praefect.plugins.replication.plugin import replication_runtime
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc, shared_pb2
from praefect.settings import Config, TracingConfig
from tests.support.gitenv import git, git_env, make_work_repo
from tests.support.grpc_client import auth
from tests.support.processes import ServerProcess, start_process
from tests.support.replication_cluster import eventually, short_tmp_dir
from tests.support.router import (
    NODE_TOKEN,
    ROUTER_TOKEN,
    VIRTUAL_STORAGE,
    router_settings_mapping,
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
RELATIVE_PATH = "group/traced.git"
CREATE = "gitaly.RepositoryService/CreateRepositoryFromBundle"
REPLICATE = "gitaly.RepositoryService/ReplicateRepository"
UPLOAD_PACK = "gitaly.SSHService/SSHUploadPack"
ROUTER, NODE = "praefect-router", "praefect-node"


@dataclass
class Cluster:
    receiver: OtlpReceiver
    nodes: dict[str, ServerProcess]
    provider: TracerProvider
    redis_dir: Path


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
            started = await asyncio.gather(
                *(asyncio.to_thread(start_traced_node, name, tmp_path / name, receiver) for name in (PRIMARY, REPLICA)),
                return_exceptions=True,
            )
            for name, result in zip((PRIMARY, REPLICA), started, strict=True):
                if isinstance(result, ServerProcess):
                    nodes[name] = result
            for result in started:
                if isinstance(result, BaseException):
                    raise result
            settings = TracingConfig(
                exporter="otlp", endpoint=f"http://{receiver.address}", protocol="grpc", service_name="praefect"
            )
            provider = build_tracer_provider(plan_tracing("router", settings))
            assert provider is not None
            with installed_provider(provider), short_tmp_dir() as redis_dir:
                yield Cluster(receiver, nodes, provider, redis_dir)
                await asyncio.to_thread(provider.shutdown)
        finally:
            # in a thread: a stopping node flushes its spans to the receiver,
            # which this event loop serves
            await asyncio.gather(*(asyncio.to_thread(process.stop) for process in nodes.values()))


def replicating_router_settings(cluster: Cluster) -> Config:
    """Replication on (its embedded Redis in the cluster's directory); failover off."""
    return Config.from_mapping(
        router_settings_mapping(
            {name: f"tcp://{process.address}" for name, process in cluster.nodes.items()},
            primary=PRIMARY,
            redis={"data_dir": str(cluster.redis_dir)},
            plugins={"blocked": ["praefect.plugins.failover"]},
        )
    )


def bundle_requests(work: Path, repository: shared_pb2.Repository) -> Iterator[repository_pb2.CreateRepositoryFromBundleRequest]:
    bundle = work.parent / "repo.bundle"
    git(["bundle", "create", str(bundle), "--all"], cwd=work)
    data = bundle.read_bytes()
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    yield repository_pb2.CreateRepositoryFromBundleRequest(repository=repository, data=chunks[0])
    for chunk in chunks[1:]:
        yield repository_pb2.CreateRepositoryFromBundleRequest(data=chunk)


def under(spans: Spans, parent: FoundSpan, name: str, service: str) -> FoundSpan:
    found = [span for span in spans.children(parent) if span.name == name and span.service == service]
    assert len(found) == 1, f"no single {service}:{name} under {parent.name}: {spans.describe()}"
    return found[0]


async def replica_is_current(router: RouterServer) -> bool:
    assert router.router is not None
    runtime = replication_runtime(router.router)
    assert runtime is not None, "the replication plugin did not start"
    metadata = await runtime.store.get(VIRTUAL_STORAGE, RELATIVE_PATH)
    return metadata is not None and metadata.is_up_to_date(REPLICA)


async def test_write_and_real_replay_traces_reach_the_collector(cluster: Cluster, tmp_path: Path) -> None:
    repository = shared_pb2.Repository(storage_name=VIRTUAL_STORAGE, relative_path=RELATIVE_PATH)
    work = make_work_repo(tmp_path / "work", commits=2)
    client = cluster.provider.get_tracer("tests.client")

    async with running_router(replicating_router_settings(cluster)) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            with client.start_as_current_span("client write"):
                await repository_pb2_grpc.RepositoryServiceStub(channel).CreateRepositoryFromBundle(
                    bundle_requests(work, repository), metadata=auth(ROUTER_TOKEN, *inject_trace_context().items())
                )
        await eventually(lambda: replica_is_current(router), what=f"the router's worker to replicate to {REPLICA}")

    def complete(spans: Spans) -> bool:
        node_spans = [s for s in spans.all if s.service == NODE]
        return (
            bool(spans.named("client write"))
            and bool(spans.named("replicate create"))
            and any(s.name == CREATE for s in node_spans)
            and any(s.name == REPLICATE for s in node_spans)
            and any(s.name == "git fetch" for s in node_spans)
            and any(s.name == UPLOAD_PACK for s in node_spans)
        )

    spans = await cluster.receiver.wait_for(complete, "the write's and the replay's spans")

    # one trace: client -> router -> router's node call -> primary node -> git
    client_span = spans.one("client write")
    router_server = under(spans, client_span, CREATE, ROUTER)
    assert router_server.kind == "SERVER"
    assert router_server.attributes["praefect.node"] == PRIMARY
    assert router_server.attributes["praefect.operation"] == "mutator"
    assert router_server.attributes["praefect.replicas"] == (REPLICA,)
    router_client = under(spans, router_server, CREATE, ROUTER)
    assert router_client.kind == "CLIENT"
    primary_server = under(spans, router_client, CREATE, NODE)
    assert primary_server.resource["praefect.node"] == PRIMARY  # from OTEL_RESOURCE_ATTRIBUTES
    git_on_primary = [s for s in spans.children(primary_server) if s.name.startswith("git ")]
    assert git_on_primary, spans.describe()
    assert all(s.service == NODE for s in git_on_primary)
    # ... and the events' publication, inside the router's call
    publish = under(spans, router_server, "publish replication events", ROUTER)
    assert publish.kind == "PRODUCER"
    assert publish.attributes["praefect.targets"] == (REPLICA,)

    # a second trace, started by the router's replay worker, linked to the
    # publication: replay -> ReplicateRepository call -> replica node -> git fetch
    replay = spans.one("replicate create")
    assert replay.service == ROUTER
    assert replay.kind == "CONSUMER"
    assert replay.trace_id != client_span.trace_id
    assert replay.parent_span_id == ""
    assert replay.links == ((publish.trace_id, publish.span_id),)
    assert replay.attributes["praefect.source"] == PRIMARY
    assert replay.attributes["praefect.target"] == REPLICA
    assert str(replay.attributes["praefect.outcome"]).startswith(f"replicated from {PRIMARY}")
    replicate_call = under(spans, replay, REPLICATE, ROUTER)
    assert replicate_call.kind == "CLIENT"
    assert replicate_call.attributes["praefect.node"] == REPLICA
    assert replicate_call.attributes["rpc.grpc.status_code"] == 0
    replica_server = under(spans, replicate_call, REPLICATE, NODE)
    assert replica_server.kind == "SERVER"
    assert replica_server.attributes["praefect.storage"] == REPLICA
    assert replica_server.resource["praefect.node"] == REPLICA
    under(spans, replica_server, "git fetch", NODE)
    # ... and the source's side of that fetch: the replica's call to the
    # primary carries the replay's trace context.
    upload_pack = under(spans, replica_server, UPLOAD_PACK, NODE)
    assert upload_pack.resource["praefect.node"] == PRIMARY
    assert any(s.name.startswith("git ") for s in spans.children(upload_pack)), spans.describe()
    router_traces = {s.trace_id for s in spans.all if s.service == ROUTER}
    assert router_traces == {client_span.trace_id, replay.trace_id}, spans.describe()
