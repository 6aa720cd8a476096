"""The real replay worker's spans and metrics, in process (in-memory exporter).

A ReplicationWorker on an embedded Redis replays onto a real in-process node:
one ``replicate <change>`` consumer span per replay, linked to the published
write, with a ReplicateRepository client span whose context the target node
continues; delay, duration and dead letters in ReplicationMetrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from praefect.core.mutation import ChangeType
from praefect.core.telemetry import ReplicationMetrics, publish_span
from praefect.node.server import NodeServer, NodeServerConfig
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.nodes import NodeClients, NodeEndpoint
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.worker import ReplicationWorker, WorkerSettings
from tests.support.replication_cluster import (
    eventually,
    make_bare_repo,
    short_tmp_dir,
    unreachable_node,
)
from tests.support.telemetry import Spans

VS = "praefect"
SOURCE, TARGET = "gitaly-1", "gitaly-2"
TOKEN = "replay-node-token"
REPLICATE = "gitaly.RepositoryService/ReplicateRepository"
FAST = WorkerSettings(block=0.2, claim_idle=2.0, trim_interval=0.2, call_timeout=30, max_attempts=1)


@pytest.fixture
async def store() -> AsyncIterator[RepositoryStore]:
    with short_tmp_dir() as redis_dir:
        async with EmbeddedRedis(redis_dir) as server:
            client: aioredis.Redis = connect(server.url)
            try:
                yield RepositoryStore(client)
            finally:
                await client.aclose()


@contextlib.asynccontextmanager
async def node(name: str, storage: Path) -> AsyncIterator[NodeEndpoint]:
    """An in-process node serving storage ``name`` (built inside the test's tracing)."""
    config = NodeServerConfig(listen_addr="127.0.0.1:0", storages={name: storage}, token=TOKEN)
    async with NodeServer(config) as server:
        yield NodeEndpoint(VS, name, f"tcp://{server.bound_addr}", TOKEN)


@contextlib.asynccontextmanager
async def running_worker(
    store: RepositoryStore, endpoints: list[NodeEndpoint], metrics: ReplicationMetrics
) -> AsyncIterator[ReplicationWorker]:
    clients = NodeClients(endpoints)
    worker = ReplicationWorker(
        store.client, store, clients, VS, TARGET, consumer="router-a", settings=FAST, metrics=metrics
    )
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
        await clients.close()


def published_write(path: str) -> dict[str, str]:
    """The trace context a router's on_mutation stores: its publish span's."""
    with (
        trace.get_tracer("tests").start_as_current_span("router call"),
        publish_span(VS, path, ChangeType.CREATE, [TARGET]) as stored,
    ):
        return dict(stored)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"virtual_storage": VS, "target": TARGET, **labels}) or 0.0


async def test_a_replay_is_a_linked_trace_down_to_git_on_the_target_and_is_timed(
    tracing: InMemorySpanExporter, store: RepositoryStore, tmp_path: Path
) -> None:
    make_bare_repo(tmp_path / SOURCE, "group/replayed.git")
    registry = CollectorRegistry()
    metrics = ReplicationMetrics(registry)
    stored = published_write("group/replayed.git")
    async with node(SOURCE, tmp_path / SOURCE) as source, node(TARGET, tmp_path / TARGET) as target:
        await store.track_repository(
            VS, "group/replayed.git", primary=SOURCE, assigned=[SOURCE, TARGET], trace_context=stored
        )
        async with running_worker(store, [source, target], metrics) as worker:

            async def replicated() -> bool:
                metadata = await store.require(VS, "group/replayed.git")
                return metadata.is_up_to_date(TARGET) and bool(worker.stats.events_acked == 1)

            await eventually(replicated, what="the worker to replicate the repository")

    spans = Spans.from_exporter(tracing)
    publish = spans.one("publish replication events")
    replay = spans.one("replicate create")
    assert (replay.kind, replay.parent_span_id) == ("CONSUMER", "")
    assert replay.trace_id != publish.trace_id
    assert replay.links == ((publish.trace_id, publish.span_id),)
    assert replay.attributes["praefect.source"] == SOURCE
    assert replay.attributes["praefect.target"] == TARGET
    assert replay.attributes["praefect.coalesced"] == 1
    assert str(replay.attributes["praefect.outcome"]).startswith(f"replicated from {SOURCE}")
    assert replay.status == "UNSET"
    (call,) = spans.children(replay)
    assert (call.name, call.kind) == (REPLICATE, "CLIENT")
    assert call.attributes["praefect.node"] == TARGET
    assert call.attributes["praefect.source"] == SOURCE
    assert call.attributes["rpc.grpc.status_code"] == 0
    (on_target,) = spans.children(call)
    assert (on_target.name, on_target.kind) == (REPLICATE, "SERVER")
    assert on_target.attributes["praefect.storage"] == TARGET
    assert "git fetch" in [span.name for span in spans.children(on_target)]

    assert sample(registry, "praefect_replication_delay_seconds_count") == 1
    assert sample(registry, "praefect_replication_latency_seconds_count") == 1
    assert sample(registry, "praefect_replication_latency_seconds_sum") > 0
    assert sample(registry, "praefect_replication_dead_lettered_total") == 0


async def test_a_failed_replay_is_an_error_span_and_counts_as_dead_lettered(
    tracing: InMemorySpanExporter, store: RepositoryStore, tmp_path: Path
) -> None:
    # The target answers; the source it must fetch from does not.
    gone = unreachable_node(tmp_path, SOURCE).endpoint(token=TOKEN)
    registry = CollectorRegistry()
    metrics = ReplicationMetrics(registry)
    async with node(TARGET, tmp_path / TARGET) as target:
        await store.track_repository(VS, "orphan.git", primary=SOURCE, assigned=[SOURCE, TARGET])
        async with running_worker(store, [gone, target], metrics) as worker:

            async def dead_lettered() -> bool:
                return bool(worker.stats.dead_lettered == 1)

            await eventually(dead_lettered, what="the event to be dead-lettered (max_attempts 1)")

    spans = Spans.from_exporter(tracing)
    replay = spans.one("replicate create")
    assert replay.status == "ERROR"
    assert replay.attributes["praefect.outcome"] == "dead-lettered after 1 attempts"
    assert replay.links == ()  # the repository was tracked outside any trace
    (call,) = spans.children(replay)
    assert (call.name, call.status) == (REPLICATE, "ERROR")
    assert call.attributes["rpc.grpc.status_code"] != 0
    (on_target,) = spans.children(call)
    assert on_target.kind == "SERVER"
    assert sample(registry, "praefect_replication_dead_lettered_total") == 1
    assert sample(registry, "praefect_replication_latency_seconds_count") == 1
