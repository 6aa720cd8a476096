"""Replication through a real router: hooks, embedded Redis, workers, real nodes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.core.server import RouterServer
from praefect.plugins.replication.runtime import ReplicationRuntime
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc, shared_pb2
from praefect.settings import Config
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.replication_cluster import (
    NODE_TOKEN,
    ReplicaNode,
    eventually,
    refs_of,
    runtime_of_router,
    short_tmp_dir,
    start_nodes,
)
from tests.support.router import ROUTER_TOKEN, router_settings_mapping, running_router

NAMES = ["gitaly-1", "gitaly-2", "gitaly-3"]
VS = "praefect"


@dataclass
class Cluster:
    nodes: dict[str, ReplicaNode]
    router: RouterServer
    channel: aio.Channel

    @property
    def runtime(self) -> ReplicationRuntime:
        return runtime_of_router(self.router)

    def repository(self, path: str) -> shared_pb2.Repository:
        return shared_pb2.Repository(storage_name=VS, relative_path=path)


@pytest.fixture
def redis_data_dir() -> Iterator[Path]:
    with short_tmp_dir() as path:
        yield path


@pytest.fixture
async def cluster(tmp_path: Path, redis_data_dir: Path) -> AsyncIterator[Cluster]:
    nodes = {node.name: node for node in await start_nodes(tmp_path / "nodes", NAMES)}
    settings = Config.from_mapping(
        router_settings_mapping(
            {name: node.address for name, node in nodes.items()},
            node_tokens=dict.fromkeys(NAMES, NODE_TOKEN),
            redis={"data_dir": str(redis_data_dir)},
            plugins={"blocked": ["praefect.plugins.failover"]},
        )
    )
    try:
        async with running_router(settings) as router:
            assert router.bound_addr
            async with aio.insecure_channel(router.bound_addr) as channel:
                yield Cluster(nodes, router, channel)
    finally:
        for node in nodes.values():
            node.stop()


def _bundle(tmp_path: Path) -> tuple[bytes, str]:
    work = make_work_repo(tmp_path / "work", 3)
    git(["bundle", "create", str(tmp_path / "repo.bundle"), "--all"], cwd=work)
    return (tmp_path / "repo.bundle").read_bytes(), git(["rev-parse", "HEAD~1"], cwd=work).strip()


async def _all_replicas_current(cluster: Cluster, path: str, generation: int) -> bool:
    metadata = await cluster.runtime.store.get(VS, path)
    return (
        metadata is not None
        and metadata.generation == generation
        and metadata.up_to_date == tuple(NAMES)
    )


async def test_writes_through_the_router_reach_every_replica(cluster: Cluster, tmp_path: Path) -> None:
    stub = repository_pb2_grpc.RepositoryServiceStub(cluster.channel)
    data, older_commit = _bundle(tmp_path)

    async def requests() -> AsyncIterator[repository_pb2.CreateRepositoryFromBundleRequest]:
        yield repository_pb2.CreateRepositoryFromBundleRequest(repository=cluster.repository("g/app.git"))
        for start in range(0, len(data), 16 * 1024):
            yield repository_pb2.CreateRepositoryFromBundleRequest(data=data[start : start + 16 * 1024])

    await stub.CreateRepositoryFromBundle(requests(), metadata=auth(ROUTER_TOKEN))

    async def created() -> bool:
        return await _all_replicas_current(cluster, "g/app.git", 0)

    await eventually(created, what="every node to have the new repository at generation 0")
    for name in NAMES[1:]:
        assert refs_of(cluster.nodes[name].repo("g/app.git")) == refs_of(cluster.nodes["gitaly-1"].repo("g/app.git"))

    await stub.WriteRef(
        repository_pb2.WriteRefRequest(
            repository=cluster.repository("g/app.git"), ref=b"refs/heads/feature", revision=older_commit.encode()
        ),
        metadata=auth(ROUTER_TOKEN),
    )
    # The generation was bumped before the client got its OK.
    metadata = await cluster.runtime.store.require(VS, "g/app.git")
    assert (metadata.generation, metadata.up_to_date[:1]) == (1, ("gitaly-1",))

    async def updated() -> bool:
        return await _all_replicas_current(cluster, "g/app.git", 1)

    await eventually(updated, what="every node to have the new branch")
    for name in NAMES[1:]:
        assert "refs/heads/feature" in refs_of(cluster.nodes[name].repo("g/app.git"))

    await stub.RemoveRepository(
        repository_pb2.RemoveRepositoryRequest(repository=cluster.repository("g/app.git")),
        metadata=auth(ROUTER_TOKEN),
    )

    async def removed() -> bool:
        return not any(cluster.nodes[name].repo("g/app.git").exists() for name in NAMES)

    await eventually(removed, what="every replica to be removed")
    assert await cluster.runtime.store.get(VS, "g/app.git") is None
    assert await cluster.runtime.intents.list(VS) == [] if cluster.runtime.intents else False


async def test_a_failed_write_leaves_no_intent_and_no_event(cluster: Cluster) -> None:
    stub = repository_pb2_grpc.RepositoryServiceStub(cluster.channel)
    with pytest.raises(aio.AioRpcError) as failed:
        await stub.WriteRef(
            repository_pb2.WriteRefRequest(
                repository=cluster.repository("missing.git"), ref=b"refs/heads/x", revision=b"0" * 40
            ),
            metadata=auth(ROUTER_TOKEN),
        )
    assert failed.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    runtime = cluster.runtime
    assert runtime.intents is not None and await runtime.intents.list(VS) == []
    assert await runtime.store.get(VS, "missing.git") is None


async def test_without_redis_a_write_gets_an_error_not_a_silent_ok(cluster: Cluster) -> None:
    runtime = cluster.runtime
    assert runtime.embedded is not None
    os.kill(runtime.embedded.pid, signal.SIGKILL)
    stub = repository_pb2_grpc.RepositoryServiceStub(cluster.channel)
    started = time.monotonic()
    with pytest.raises(aio.AioRpcError) as failed:
        await stub.CreateRepository(
            repository_pb2.CreateRepositoryRequest(repository=cluster.repository("new.git")),
            metadata=auth(ROUTER_TOKEN),
        )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Redis" in (failed.value.details() or "")
    assert "the write was not sent to any node" in (failed.value.details() or "")
    assert time.monotonic() - started < 15
    assert not cluster.nodes["gitaly-1"].repo("new.git").exists(), "nothing was forwarded"


async def test_a_second_router_on_the_same_redis_data_dir_refuses_to_start(
    cluster: Cluster, redis_data_dir: Path
) -> None:
    settings = Config.from_mapping(
        router_settings_mapping(
            {name: node.address for name, node in cluster.nodes.items()},
            redis={"data_dir": str(redis_data_dir)},
            plugins={"blocked": ["praefect.plugins.failover"]},
        )
    )
    with pytest.raises(Exception, match="is in use by process"):
        async with running_router(settings):
            pass
