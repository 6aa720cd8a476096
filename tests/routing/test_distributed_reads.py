"""Distributed reads through a real router to real nodes, counted in the nodes' access logs.

Three ``praefect node serve`` processes (each logs one ``call finished
method=... relative_path=...`` line per call it served) behind an
in-process router with its default plugins and its own embedded Redis.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from praefect.core.server import RouterServer
from praefect.plugins.replication.runtime import ReplicationRuntime
from praefect.plugins.routing.reads import ACCESSOR_POLICY_HEADER, PRIMARY_ONLY
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc
from praefect.settings import Config
from tests.support.grpc_client import auth
from tests.support.replication_cluster import (
    NODE_TOKEN,
    ReplicaNode,
    eventually,
    make_bare_repo,
    runtime_of_router,
    short_tmp_dir,
    start_nodes,
)
from tests.support.replication_processes import (
    NAMES,
    Bundle,
    create_from_bundle,
    make_bundle,
    repository,
    write_ref,
)
from tests.support.router import ROUTER_TOKEN, router_settings_mapping, running_router

VS = "praefect"
READS = 60
EXISTS = "/gitaly.RepositoryService/RepositoryExists"
OPTIMIZE = "/gitaly.RepositoryService/OptimizeRepository"


@dataclass
class ReadCluster:
    nodes: dict[str, ReplicaNode]
    router: RouterServer
    channel: aio.Channel
    bundle: Bundle

    @property
    def runtime(self) -> ReplicationRuntime:
        return runtime_of_router(self.router)

    def served(self, method: str, path: str) -> Counter[str]:
        """Calls of ``method`` on ``path`` that each node logged so far."""
        line = re.compile(
            rf"call finished method={re.escape(method)} .*relative_path={re.escape(path)}$", re.M
        )
        counts: Counter[str] = Counter()
        for name, node in self.nodes.items():
            assert node.process is not None
            counts[name] = len(line.findall(node.process.log()))
        return counts

    async def read(self, path: str, count: int = READS, *, primary_only: bool = False) -> Counter[str]:
        """``count`` RepositoryExists through the router; the calls each node served for them."""
        before = self.served(EXISTS, path)
        extra = ((ACCESSOR_POLICY_HEADER, PRIMARY_ONLY),) if primary_only else ()
        stub = repository_pb2_grpc.RepositoryServiceStub(self.channel)
        for _ in range(count):
            response = await stub.RepositoryExists(
                repository_pb2.RepositoryExistsRequest(repository=repository(path)),
                metadata=auth(ROUTER_TOKEN, *extra),
                timeout=10,
            )
            assert response.exists

        def served_now() -> Counter[str]:
            return self.served(EXISTS, path) - before

        async def all_logged() -> bool:
            return served_now().total() >= count

        await eventually(all_logged, what=f"the nodes to log {count} reads of {path}")
        counts = served_now()
        assert counts.total() == count, counts
        return counts

    async def current(self, path: str, nodes: set[str]) -> bool:
        """True when this router's view has exactly ``nodes`` up to date."""
        state = self.runtime.cache.get(VS, path)
        return state is not None and set(state.up_to_date) == nodes


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ReadCluster]:
    nodes = {node.name: node for node in await start_nodes(tmp_path / "nodes", list(NAMES))}
    try:
        with short_tmp_dir("prd-") as redis_dir:
            settings = Config.from_mapping(
                router_settings_mapping(
                    {name: node.address for name, node in nodes.items()},
                    node_tokens=dict.fromkeys(NAMES, NODE_TOKEN),
                    redis={"data_dir": str(redis_dir)},
                    plugins={"blocked": []},  # the default plugins, as in production
                )
            )
            async with running_router(settings) as router:
                assert router.bound_addr
                async with aio.insecure_channel(router.bound_addr) as channel:
                    yield ReadCluster(nodes, router, channel, make_bundle(tmp_path))
    finally:
        for node in nodes.values():
            node.stop()


async def _create(cluster: ReadCluster, path: str) -> None:
    await create_from_bundle(cluster.channel, path, cluster.bundle)

    async def everywhere() -> bool:
        return await cluster.current(path, set(NAMES))

    await eventually(everywhere, what=f"every node to have {path}")


async def test_reads_spread_over_the_up_to_date_replicas(cluster: ReadCluster) -> None:
    await _create(cluster, "g/spread.git")
    counts = await cluster.read("g/spread.git")
    # Uniform over three: each gets about 20 of 60; fewer than 5 has odds below 1e-5.
    assert all(counts[name] >= 5 for name in NAMES), counts


async def test_an_outdated_replica_gets_no_reads(cluster: ReadCluster) -> None:
    await _create(cluster, "g/behind.git")
    worker = cluster.runtime.workers.worker(VS, "gitaly-3") if cluster.runtime.workers else None
    assert worker is not None
    await worker.stop()  # gitaly-3 misses the next write until its worker runs again
    await write_ref(cluster.channel, "g/behind.git", "refs/heads/new", cluster.bundle.commits[0])

    async def two_current() -> bool:
        return await cluster.current("g/behind.git", {"gitaly-1", "gitaly-2"})

    await eventually(two_current, what="gitaly-2 to get the write while gitaly-3 misses it")
    counts = await cluster.read("g/behind.git")
    assert counts["gitaly-3"] == 0, counts
    assert counts["gitaly-1"] > 0 and counts["gitaly-2"] > 0, counts

    await worker.start()

    async def caught_up() -> bool:
        return await cluster.current("g/behind.git", set(NAMES))

    await eventually(caught_up, what="gitaly-3 to catch up")
    counts = await cluster.read("g/behind.git")
    assert counts["gitaly-3"] > 0, f"a replica that caught up serves reads again: {counts}"


async def test_primary_only_reads_go_to_the_primary(cluster: ReadCluster) -> None:
    await _create(cluster, "g/mine.git")
    counts = await cluster.read("g/mine.git", 30, primary_only=True)
    assert counts == Counter({"gitaly-1": 30, "gitaly-2": 0, "gitaly-3": 0})


async def test_an_untracked_repository_is_read_from_the_configured_primary(
    cluster: ReadCluster,
) -> None:
    for node in cluster.nodes.values():  # on every disk, but never created through a router
        make_bare_repo(node.storage, "g/outside.git", 1)
    counts = await cluster.read("g/outside.git", 30)
    assert counts == Counter({"gitaly-1": 30, "gitaly-2": 0, "gitaly-3": 0})


async def test_maintenance_runs_on_every_replica(cluster: ReadCluster) -> None:
    await _create(cluster, "g/tidy.git")
    await repository_pb2_grpc.RepositoryServiceStub(cluster.channel).OptimizeRepository(
        repository_pb2.OptimizeRepositoryRequest(repository=repository("g/tidy.git")),
        metadata=auth(ROUTER_TOKEN),
        timeout=30,
    )

    async def everywhere() -> bool:
        return cluster.served(OPTIMIZE, "g/tidy.git") == Counter(dict.fromkeys(NAMES, 1))

    await eventually(everywhere, what="OptimizeRepository on each of the three nodes")
