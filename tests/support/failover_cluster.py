"""Failover test support: Redis, three real nodes, routers in-process or as processes.

    async with failover_cluster(tmp_path) as cluster:
        async with cluster.router() as router:          # in-process RouterServer
            ...
        process = cluster.router_process()               # `praefect serve`
        ...

The routers share one embedded Redis that the test owns (``redis.url`` points
at its socket). While the replication plugin is not one of the default
plugins, in-process routers get it as an extra plugin and router processes
through an entry point (a throw-away ``.dist-info`` on ``PYTHONPATH``):
the same mechanism a third-party plugin uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from grpc import aio

from praefect.core.server import RouterServer
from praefect.plugins.failover.plugin import failover_runtime
from praefect.plugins.failover.runtime import FailoverRuntime
from praefect.plugins.failover.votes import HealthVotes
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.state import RepositoryMetadata, RepositoryStore
from praefect.protos.gitaly import (
    operations_pb2,
    operations_pb2_grpc,
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
)
from praefect.settings import Config, to_toml
from tests.support.gitenv import git
from tests.support.grpc_client import auth
from tests.support.processes import ServerProcess, start_process
from tests.support.replication_cluster import NODE_TOKEN, ReplicaNode, short_tmp_dir, start_nodes
from tests.support.router import ROUTER_TOKEN, clean_env, router_settings_mapping, running_router

VS = "praefect"
NAMES = ("gitaly-1", "gitaly-2", "gitaly-3")
AUTH = auth(ROUTER_TOKEN)
USER = shared_pb2.User(gl_id="user-1", name=b"Failover Test", email=b"ft@example.com", gl_username="ft")
#: fast health checks for tests; the defaults are what bench/failover.py measures
FAST_FAILOVER = {"health_check_interval": 0.2, "vote_window": 2.0}


def sees_healthy(server: RouterServer, name: str) -> bool:
    """Whether the router ``server`` takes node ``name`` of VS as healthy now."""
    assert server.router is not None, "the router is not started"
    cluster = server.router.cluster
    healthy: bool = cluster.is_healthy(cluster.virtual_storage(VS).node(name))
    return healthy


def replication_is_default() -> bool:
    """True once ``praefect.plugins.replication`` exports its hooks (a default plugin)."""
    return hasattr(importlib.import_module("praefect.plugins.replication"), "startup")


def replication_plugins() -> list[tuple[str, object]]:
    """The replication plugin as an extra plugin of an in-process router, if needed."""
    if replication_is_default():
        return []
    from praefect.plugins.replication import plugin

    return [("praefect.plugins.replication.plugin", plugin)]


def router_env(root: Path) -> dict[str, str]:
    """Environment of a router process: the replication plugin as an entry point, if needed."""
    env = clean_env()
    if replication_is_default():
        return env
    site = root / "entry-points"
    dist = site / "praefect_test_replication-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: praefect-test-replication\nVersion: 0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[praefect]\nreplication = praefect.plugins.replication.plugin\n"
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return env


@dataclass
class FailoverCluster:
    root: Path
    redis: EmbeddedRedis
    client: aioredis.Redis
    nodes: dict[str, ReplicaNode]
    primary: str = NAMES[0]
    store: RepositoryStore = field(init=False)
    votes: HealthVotes = field(init=False)
    processes: list[ServerProcess] = field(default_factory=list)
    #: node name -> the address routers and commands use instead of the node's own
    #: (a proxy in front of it)
    addresses: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = RepositoryStore(self.client)
        self.votes = HealthVotes(self.client, window=2.0)

    # ------------------------------------------------------------ settings

    def settings_mapping(self, **failover: Any) -> dict[str, Any]:
        return router_settings_mapping(
            {name: self.addresses.get(name, node.address) for name, node in self.nodes.items()},
            primary=self.primary,
            node_tokens=dict.fromkeys(self.nodes, NODE_TOKEN),
            redis={"url": self.redis.url},
            failover={**FAST_FAILOVER, **failover},
            plugins={"blocked": []},  # failover on (tests.support.router blocks it by default)
        )

    def settings(self, **failover: Any) -> Config:
        return Config.from_mapping(self.settings_mapping(**failover))

    # ------------------------------------------------------------- routers

    @contextlib.asynccontextmanager
    async def router(
        self, *plugins: tuple[str, object], **failover: Any
    ) -> AsyncIterator[RouterServer]:
        """An in-process router with replication, failover and ``plugins`` (name, plugin)."""
        extra = [*replication_plugins(), *plugins]
        async with running_router(self.settings(**failover), extra_plugins=extra) as server:
            yield server

    def router_process(self, name: str = "router", **failover: Any) -> ServerProcess:
        """A `praefect serve` process (stopped by the cluster on exit)."""
        config = self.root / f"{name}.toml"
        config.write_text(to_toml(self.settings_mapping(**failover)))
        process = start_process(["serve", "--config", str(config)], env=router_env(self.root))
        self.processes.append(process)
        return process

    # ---------------------------------------------------------- assertions

    async def metadata(self, path: str) -> RepositoryMetadata:
        return await self.store.require(VS, path)

    async def primary_of(self, path: str) -> str:
        return str((await self.metadata(path)).primary)

    def repo(self, node: str, path: str) -> Path:
        return self.nodes[node].repo(path)

    def has_commit(self, node: str, path: str, commit: str) -> bool:
        out = git(["--git-dir", str(self.repo(node, path)), "cat-file", "-t", commit], check=False)
        return out.strip() == "commit"


def runtime_of(server: RouterServer) -> FailoverRuntime:
    assert server.router is not None
    runtime = failover_runtime(server.router)
    assert runtime is not None, "the failover plugin did not start"
    return runtime


@contextlib.asynccontextmanager
async def failover_cluster(
    tmp_path: Path, names: Sequence[str] = NAMES
) -> AsyncIterator[FailoverCluster]:
    with short_tmp_dir("pfo-") as root:
        nodes = {node.name: node for node in await start_nodes(tmp_path / "nodes", list(names))}
        try:
            async with EmbeddedRedis(root / "redis") as redis:
                client = connect(redis.url)
                cluster = FailoverCluster(root, redis, client, nodes)
                try:
                    yield cluster
                finally:
                    for process in cluster.processes:
                        await asyncio.to_thread(process.stop)
                    await client.aclose()
        finally:
            for node in nodes.values():
                await asyncio.to_thread(node.stop)


# ------------------------------------------------------------------ writes


def repository(path: str) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=VS, relative_path=path)


async def create_repository(channel: aio.Channel, path: str) -> None:
    await repository_pb2_grpc.RepositoryServiceStub(channel).CreateRepository(
        repository_pb2.CreateRepositoryRequest(repository=repository(path)), metadata=AUTH, timeout=30
    )


async def commit_file(
    channel: aio.Channel, path: str, branch: str, name: str, *, deadline: float = 10
) -> str:
    """UserCommitFiles: add file ``name`` on ``branch``; returns the new commit id."""
    header = operations_pb2.UserCommitFilesRequest(
        header=operations_pb2.UserCommitFilesRequestHeader(
            repository=repository(path),
            user=USER,
            branch_name=branch.encode(),
            commit_message=f"add {name}".encode(),
        )
    )
    action = operations_pb2.UserCommitFilesRequest(
        action=operations_pb2.UserCommitFilesAction(
            header=operations_pb2.UserCommitFilesActionHeader(
                action=operations_pb2.UserCommitFilesActionHeader.CREATE, file_path=name.encode()
            )
        )
    )
    content = operations_pb2.UserCommitFilesRequest(
        action=operations_pb2.UserCommitFilesAction(content=f"{name}\n".encode())
    )
    response = await operations_pb2_grpc.OperationServiceStub(channel).UserCommitFiles(
        iter([header, action, content]), metadata=AUTH, timeout=deadline
    )
    commit_id: str = response.branch_update.commit_id
    return commit_id


async def exists(channel: aio.Channel, path: str) -> bool:
    response = await repository_pb2_grpc.RepositoryServiceStub(channel).RepositoryExists(
        repository_pb2.RepositoryExistsRequest(repository=repository(path)), metadata=AUTH, timeout=10
    )
    return bool(response.exists)


@contextlib.contextmanager
def broken_storage(node: ReplicaNode) -> Iterator[None]:
    """Make the node's write probe fail, also for root: ``+praefect`` becomes a file.

    Tests run as root, for whom permission bits do not stop writes, and a
    read-only bind mount needs privileges a test may not have. A regular file
    where the node's own directory ``<storage>/+praefect`` should be makes
    every write under it fail (ENOTDIR/EEXIST) for any user, as a broken
    filesystem would, while repositories stay readable.
    """
    internal = node.storage / "+praefect"
    aside = node.storage.parent / f"{node.name}-praefect-aside"
    if internal.exists():
        internal.rename(aside)
    internal.write_text("not a directory\n")
    try:
        yield
    finally:
        internal.unlink()
        if aside.exists():
            aside.rename(internal)


async def eventually(check: Any, *, within: float = 15.0, what: str = "condition") -> Any:
    """Poll ``check()`` (sync or async) until truthy; fail naming ``what`` after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)
