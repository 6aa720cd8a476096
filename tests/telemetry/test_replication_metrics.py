"""A real router's /metrics with the replication plugin running, scraped over HTTP.

Three `praefect node serve` processes, a router with its embedded Redis and
replay workers: writes, distributed reads, a replica that goes down and
comes back, and a replay whose source is gone all show in the families the
router serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from grpc import aio

from praefect.core.server import RouterServer
from praefect.core.telemetry import TELEMETRY, router_metrics
from praefect.plugins.replication.runtime import ReplicationRuntime
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc, shared_pb2
from praefect.settings import Config
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.processes import start_node
from tests.support.replication_cluster import (
    NODE_TOKEN,
    ReplicaNode,
    eventually,
    runtime_of_router,
    short_tmp_dir,
    start_nodes,
    unreachable_node,
)
from tests.support.router import ROUTER_TOKEN, router_settings_mapping, running_router
from tests.support.telemetry import Scrape, bucket_count, scrape

NAMES = ["gitaly-1", "gitaly-2", "gitaly-3"]
PRIMARY = "gitaly-1"
VS = "praefect"
PATH = "group/metrics.git"
CREATE = "/gitaly.RepositoryService/CreateRepositoryFromBundle"
DELAY, LATENCY = "praefect_replication_delay_seconds", "praefect_replication_latency_seconds"
PENDING = "praefect_replication_pending_events"
DEAD_LETTERED, DEAD_LETTERS = "praefect_replication_dead_lettered_total", "praefect_replication_dead_letter_events"


def node(name: str) -> dict[str, str]:
    return {"virtual_storage": VS, "node": name}


def target(name: str) -> dict[str, str]:
    return {"virtual_storage": VS, "target": name}


@dataclass
class Cluster:
    nodes: dict[str, ReplicaNode]
    router: RouterServer
    channel: aio.Channel

    @property
    def runtime(self) -> ReplicationRuntime:
        return runtime_of_router(self.router)

    @property
    def metrics_addr(self) -> str:
        assert self.router.router is not None
        address: str | None = self.router.router.stash[TELEMETRY].metrics_addr
        assert address is not None, "the router serves no metrics endpoint"
        return address

    async def scrape(self) -> Scrape:
        return await scrape(self.metrics_addr)

    async def is_current(self, name: str) -> bool:
        metadata = await self.runtime.store.get(VS, PATH)
        return metadata is not None and metadata.is_up_to_date(name)

    async def stop(self, name: str) -> None:
        await asyncio.to_thread(self.nodes[name].stop)

    async def restart(self, name: str) -> None:
        """The node again, on the address the router knows."""
        replica = self.nodes[name]
        replica.process = await asyncio.to_thread(
            start_node, {name: replica.storage}, NODE_TOKEN, replica.address.removeprefix("tcp://")
        )

    async def write_ref(self, ref: bytes) -> None:
        await repository_pb2_grpc.RepositoryServiceStub(self.channel).WriteRef(
            repository_pb2.WriteRefRequest(repository=repository(), ref=ref, revision=b"HEAD"),
            metadata=auth(ROUTER_TOKEN),
        )


def repository() -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=VS, relative_path=PATH)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    nodes = {replica.name: replica for replica in await start_nodes(tmp_path / "nodes", NAMES)}
    try:
        with short_tmp_dir() as redis_dir:
            settings = Config.from_mapping(
                router_settings_mapping(
                    {name: replica.address for name, replica in nodes.items()},
                    primary=PRIMARY,
                    node_tokens=dict.fromkeys(NAMES, NODE_TOKEN),
                    redis={"data_dir": str(redis_dir)},
                    plugins={"blocked": ["praefect.plugins.failover"]},
                    prometheus_listen_addr="127.0.0.1:0",
                    # the first failed replay is dead-lettered
                    replication={"max_attempts": 1},
                )
            )
            async with running_router(settings) as router:
                assert router.bound_addr
                async with aio.insecure_channel(router.bound_addr) as channel:
                    yield Cluster(nodes, router, channel)
    finally:
        await asyncio.gather(*(asyncio.to_thread(replica.stop) for replica in nodes.values()))


async def create_repository(cluster: Cluster, tmp_path: Path) -> None:
    work = make_work_repo(tmp_path / "work", 2)
    git(["bundle", "create", str(tmp_path / "repo.bundle"), "--all"], cwd=work)
    data = (tmp_path / "repo.bundle").read_bytes()

    async def requests() -> AsyncIterator[repository_pb2.CreateRepositoryFromBundleRequest]:
        yield repository_pb2.CreateRepositoryFromBundleRequest(repository=repository())
        for start in range(0, len(data), 16 * 1024):
            yield repository_pb2.CreateRepositoryFromBundleRequest(data=data[start : start + 16 * 1024])

    await repository_pb2_grpc.RepositoryServiceStub(cluster.channel).CreateRepositoryFromBundle(
        requests(), metadata=auth(ROUTER_TOKEN)
    )


async def scraped(cluster: Cluster, check: Callable[[Scrape], bool], what: str) -> Scrape:
    """Scrape until ``check(scrape)`` holds; the last scrape."""
    last: list[Scrape] = []

    async def holds() -> bool:
        last[:] = [await cluster.scrape()]
        return check(last[0])

    await eventually(holds, what=what)
    return last[0]


@pytest.mark.slow
@pytest.mark.timeout(180)  # three node processes, two restarts
async def test_replication_families_move_with_writes_reads_and_a_node_down(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = await cluster.scrape()
    for name in NAMES:
        # the scrape hook reports every node, also before anything happened
        assert before.has(PENDING, **target(name)) and before.value(PENDING, **target(name)) == 0
        assert before.has(DEAD_LETTERS, **target(name)) and before.value(DEAD_LETTERS, **target(name)) == 0
        assert before.has("praefect_primaries", **node(name)) and before.value("praefect_primaries", **node(name)) == 0

    # a write, replicated by the router's workers
    await create_repository(cluster, tmp_path)
    for name in NAMES[1:]:
        await eventually(partial(cluster.is_current, name), what=f"{name} to get the repository")
    written = await scraped(
        cluster,
        lambda s: all(bucket_count(s, LATENCY, **target(name)) >= 1 for name in NAMES[1:]),
        "both replays to be timed",
    )
    assert written.value("praefect_calls_total", method=CREATE, code="OK") == 1
    assert bucket_count(written, "praefect_node_call_duration_seconds", **node(PRIMARY)) >= 1
    for name in NAMES[1:]:
        assert bucket_count(written, DELAY, **target(name)) >= 1
        assert written.value(f"{DELAY}_sum", **target(name)) > 0
        assert written.value(PENDING, **target(name)) == 0
    assert bucket_count(written, DELAY, **target(PRIMARY)) == 0, "the primary replays nothing"
    assert [written.value("praefect_primaries", **node(name)) for name in NAMES] == [1, 0, 0]

    # distributed reads: every up-to-date replica serves some
    stub = repository_pb2_grpc.RepositoryServiceStub(cluster.channel)
    reads = 0

    def reads_by_node(result: Scrape) -> list[float]:
        return [result.value("praefect_read_distribution_total", **node(name)) for name in NAMES]

    while reads < 300:
        for _ in range(10):
            await stub.RepositoryExists(
                repository_pb2.RepositoryExistsRequest(repository=repository()), metadata=auth(ROUTER_TOKEN)
            )
        reads += 10
        if all(reads_by_node(await cluster.scrape())):
            break
    distribution = reads_by_node(await cluster.scrape())
    assert all(distribution), f"some node served none of {reads} reads: {distribution}"
    assert sum(distribution) == reads

    # a replica down: its event waits (pending), the other replica's does not
    await cluster.stop("gitaly-3")
    await cluster.write_ref(b"refs/heads/while-down")
    down = await scraped(
        cluster,
        lambda s: s.value(PENDING, **target("gitaly-2")) == 0,
        "gitaly-2's replay of the write",
    )
    assert down.value(PENDING, **target("gitaly-3")) == 1
    assert down.value(DEAD_LETTERED, **target("gitaly-3")) == 0, "a node that is down uses up no attempt"

    # back: the event is replayed, nothing is pending
    replays = bucket_count(down, LATENCY, **target("gitaly-3"))
    await cluster.restart("gitaly-3")
    await eventually(lambda: cluster.is_current("gitaly-3"), what="gitaly-3 to catch up once back")
    back = await scraped(cluster, lambda s: s.value(PENDING, **target("gitaly-3")) == 0, "gitaly-3's queue to empty")
    assert bucket_count(back, LATENCY, **target("gitaly-3")) > replays
    assert back.value(DEAD_LETTERS, **target("gitaly-3")) == 0

    # a replay that fails while the target answers: with max_attempts 1, dead-lettered
    await cluster.stop("gitaly-3")
    await cluster.write_ref(b"refs/heads/source-gone")
    await eventually(lambda: cluster.is_current("gitaly-2"), what="gitaly-2 to get the second write")
    await cluster.stop(PRIMARY)  # the source the replay tries first
    await cluster.restart("gitaly-3")
    dead = await scraped(
        cluster, lambda s: s.value(DEAD_LETTERS, **target("gitaly-3")) == 1, "the failed replay to be dead-lettered"
    )
    assert dead.value(DEAD_LETTERED, **target("gitaly-3")) == 1
    assert dead.value(PENDING, **target("gitaly-3")) == 0
    assert dead.value(DEAD_LETTERED, **target("gitaly-2")) == 0


async def test_the_scrape_hook_goes_with_the_plugin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nodes = {name: unreachable_node(tmp_path, name).address for name in NAMES}
    with short_tmp_dir() as redis_dir:
        settings = Config.from_mapping(
            router_settings_mapping(
                nodes,
                redis={"data_dir": str(redis_dir)},
                plugins={"blocked": ["praefect.plugins.failover"]},
                prometheus_listen_addr="127.0.0.1:0",
            )
        )
        async with running_router(settings) as router:
            assert router.router is not None
            metrics = router_metrics(router.router)
            assert metrics is not None
            address = router.router.stash[TELEMETRY].metrics_addr
            assert address is not None
            result = await scrape(address)
            assert all(result.has(PENDING, **target(name)) for name in NAMES)
    # The router stopped: a hook left behind would fail on the stopped runtime.
    caplog.set_level(logging.ERROR, logger="praefect.telemetry")
    await metrics.refresh()
    assert [record.getMessage() for record in caplog.records] == []
