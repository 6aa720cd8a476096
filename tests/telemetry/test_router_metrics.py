"""The router's Prometheus endpoint, scraped with real HTTP GETs while calls go through."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import aiohttp
import grpc
import pytest
from grpc import aio

from praefect.core.mutation import ChangeType
from praefect.core.server import RouterServer
from praefect.core.telemetry import TELEMETRY, replay_span, router_metrics
from praefect.core.telemetry.metrics import RouterMetrics
from praefect.protos.gitaly import commit_pb2, commit_pb2_grpc, shared_pb2
from tests.support.grpc_client import auth
from tests.support.router import ROUTER_TOKEN, VIRTUAL_STORAGE
from tests.support.telemetry import bucket_count, scrape
from tests.telemetry.conftest import NODE, Backend, channel_to, router_for

FIND_COMMIT = "/gitaly.CommitService/FindCommit"
LABELS = {"virtual_storage": VIRTUAL_STORAGE, "node": NODE}


def metrics_addr(router: RouterServer) -> str:
    assert router.router is not None
    address: str | None = router.router.stash[TELEMETRY].metrics_addr
    assert address is not None, "the router serves no metrics endpoint"
    return address


def metrics_of(router: RouterServer) -> RouterMetrics:
    assert router.router is not None
    metrics = router_metrics(router.router)
    assert metrics is not None
    return metrics


async def find_commit(channel: aio.Channel, relative_path: str = "group/project.git") -> None:
    await commit_pb2_grpc.CommitServiceStub(channel).FindCommit(
        commit_pb2.FindCommitRequest(
            repository=shared_pb2.Repository(storage_name=VIRTUAL_STORAGE, relative_path=relative_path),
            revision=b"main",
        ),
        metadata=auth(ROUTER_TOKEN),
    )


async def test_calls_node_latency_and_reads_move_with_calls(backend: Backend) -> None:
    async with router_for(backend, prometheus_listen_addr="127.0.0.1:0") as router, channel_to(router) as channel:
        address = metrics_addr(router)
        before = await scrape(address)
        assert before.content_type.startswith("text/plain")
        assert before.value("praefect_calls_total", method=FIND_COMMIT, code="OK") == 0

        await find_commit(channel)
        await find_commit(channel)
        with pytest.raises(aio.AioRpcError) as raised:
            await find_commit(channel, "group/missing.git")
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND

        after = await scrape(address)
        assert after.value("praefect_calls_total", method=FIND_COMMIT, code="OK") == 2
        assert after.value("praefect_calls_total", method=FIND_COMMIT, code="NOT_FOUND") == 1
        assert bucket_count(after, "praefect_node_call_duration_seconds", **LABELS) == 3
        assert after.value("praefect_node_call_duration_seconds_sum", **LABELS) > 0
        assert after.value("praefect_read_distribution_total", **LABELS) == 3


async def test_node_health_and_configured_primary_follow_the_cluster(backend: Backend) -> None:
    async with router_for(backend, prometheus_listen_addr="127.0.0.1:0") as router:
        address = metrics_addr(router)
        assert router.router is not None
        (node,) = router.router.cluster.nodes(VIRTUAL_STORAGE)
        first = await scrape(address)
        assert first.value("praefect_node_healthy", **LABELS) == 1
        assert first.value("praefect_configured_primary", **LABELS) == 1

        await router.router.set_node_health(node, False, "test")
        assert (await scrape(address)).value("praefect_node_healthy", **LABELS) == 0
        await router.router.set_node_health(node, True)
        assert (await scrape(address)).value("praefect_node_healthy", **LABELS) == 1


@dataclass
class FakeStreams:
    """Stands in for Redis stream lengths that a replication plugin would read."""

    pending: int = 0
    scrapes: list[float] = field(default_factory=list)


async def test_scrape_hooks_refresh_gauges_before_each_scrape(backend: Backend) -> None:
    async with router_for(backend, prometheus_listen_addr="127.0.0.1:0") as router:
        address = metrics_addr(router)
        metrics = metrics_of(router)
        streams = FakeStreams()

        async def count_streams() -> None:
            streams.scrapes.append(time.monotonic())
            metrics.replication.set_pending(VIRTUAL_STORAGE, NODE, streams.pending)
            metrics.replication.set_dead_letters(VIRTUAL_STORAGE, NODE, streams.pending // 2)
            metrics.set_primaries(VIRTUAL_STORAGE, {NODE: streams.pending * 10})

        def failing_hook() -> None:
            raise RuntimeError("Redis is down")

        metrics.add_scrape_hook(failing_hook)  # logged; the scrape still answers
        metrics.add_scrape_hook(count_streams)
        streams.pending = 4
        first = await scrape(address)
        streams.pending = 6
        second = await scrape(address)
        labels = {"virtual_storage": VIRTUAL_STORAGE, "target": NODE}
        assert first.value("praefect_replication_pending_events", **labels) == 4
        assert second.value("praefect_replication_pending_events", **labels) == 6
        assert second.value("praefect_replication_dead_letter_events", **labels) == 3
        assert second.value("praefect_primaries", **LABELS) == 60
        assert len(streams.scrapes) == 2


@dataclass(frozen=True)
class Event:
    virtual_storage: str = VIRTUAL_STORAGE
    relative_path: str = "group/project.git"
    source: str = "gitaly-0"
    target: str = NODE
    created_at: float = field(default_factory=lambda: time.time() - 2.0)
    trace_context: dict[str, str] = field(default_factory=dict)
    attempt: int = 0
    change: ChangeType = ChangeType.UPDATE


async def test_replays_record_delay_latency_and_dead_letters(backend: Backend) -> None:
    async with router_for(backend, prometheus_listen_addr="127.0.0.1:0") as router:
        address = metrics_addr(router)
        replication = metrics_of(router).replication
        labels = {"virtual_storage": VIRTUAL_STORAGE, "target": NODE}
        with replay_span(Event(), metrics=replication):
            pass
        with pytest.raises(RuntimeError), replay_span(Event(), metrics=replication):
            raise RuntimeError("the target refused")
        replication.count_dead_lettered(VIRTUAL_STORAGE, NODE)

        result = await scrape(address)
        assert bucket_count(result, "praefect_replication_delay_seconds", **labels) == 2
        # created two seconds ago: both delays fall in the buckets above 1 s
        assert result.value("praefect_replication_delay_seconds_bucket", le="1.0", **labels) == 0
        assert result.value("praefect_replication_delay_seconds_sum", **labels) >= 4.0
        assert bucket_count(result, "praefect_replication_latency_seconds", **labels) == 2
        assert result.value("praefect_replication_dead_lettered_total", **labels) == 1


async def test_openmetrics_is_served_when_asked_for(backend: Backend) -> None:
    async with router_for(backend, prometheus_listen_addr="127.0.0.1:0") as router:
        address = metrics_addr(router)
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with aiohttp.ClientSession() as session, session.get(f"http://{address}/metrics", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.text()).rstrip().endswith("# EOF")


async def test_no_endpoint_and_no_metrics_without_an_address(backend: Backend) -> None:
    async with router_for(backend) as router:
        assert router.router is not None
        assert router.router.stash[TELEMETRY].metrics_addr is None
        assert router_metrics(router.router) is None


async def test_a_taken_metrics_address_fails_the_start_naming_it(backend: Backend) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}.*prometheus_listen_addr"):
            async with router_for(backend, prometheus_listen_addr=f"127.0.0.1:{port}"):
                pass
