"""Replication with real processes: routers sharing one Redis, nodes that die and return.

    async with replicated_cluster(tmp_path) as cluster:
        router = cluster.router_process("router-a", replication={"claim_idle": 2})
        async with cluster.channel(router) as channel:
            await create_from_bundle(channel, "g/a.git", cluster.bundle)
        cluster.kill_node("gitaly-3")
        ...
        cluster.restart_node("gitaly-3")      # same address, same storage
        await cluster.wait_converged(["g/a.git"])

The Redis is an :class:`EmbeddedRedis` the test owns (every router gets its
``redis.url``), so routers can die and start without taking the state with
them, and the test can kill and restart Redis itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.state import RepositoryMetadata, RepositoryStore
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc, shared_pb2
from praefect.settings import to_toml
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.processes import ServerProcess, start_node, start_process
from tests.support.replication_cluster import (
    NODE_TOKEN,
    VS,
    ReplicaNode,
    short_tmp_dir,
    start_nodes,
)
from tests.support.router import ROUTER_TOKEN, clean_env, router_settings_mapping

NAMES = ("gitaly-1", "gitaly-2", "gitaly-3")
AUTH = auth(ROUTER_TOKEN)
#: failover settings that notice a dead node within a second or so
FAST_FAILOVER = {"health_check_interval": 0.2, "vote_window": 2.0}


@dataclass(frozen=True)
class Bundle:
    """A git bundle of a small history, and its commit ids (oldest first)."""

    data: bytes
    commits: tuple[str, ...]


def make_bundle(root: Path, commits: int = 3) -> Bundle:
    work = make_work_repo(root / "bundle-work", commits)
    git(["bundle", "create", str(root / "repo.bundle"), "--all"], cwd=work)
    ids = git(["rev-list", "--reverse", "HEAD"], cwd=work).split()
    return Bundle((root / "repo.bundle").read_bytes(), tuple(ids))


def repository(path: str) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=VS, relative_path=path)


async def create_from_bundle(
    channel: aio.Channel, path: str, bundle: Bundle, *, deadline: float = 30
) -> None:
    """CreateRepositoryFromBundle through the router."""

    async def requests() -> AsyncIterator[repository_pb2.CreateRepositoryFromBundleRequest]:
        yield repository_pb2.CreateRepositoryFromBundleRequest(repository=repository(path))
        for start in range(0, len(bundle.data), 64 * 1024):
            yield repository_pb2.CreateRepositoryFromBundleRequest(
                data=bundle.data[start : start + 64 * 1024]
            )

    await repository_pb2_grpc.RepositoryServiceStub(channel).CreateRepositoryFromBundle(
        requests(), metadata=AUTH, timeout=deadline
    )


async def write_ref(
    channel: aio.Channel, path: str, ref: str, commit: str, *, deadline: float = 30
) -> None:
    """WriteRef through the router: a cheap mutator (a ref to an existing commit)."""
    await repository_pb2_grpc.RepositoryServiceStub(channel).WriteRef(
        repository_pb2.WriteRefRequest(
            repository=repository(path), ref=ref.encode(), revision=commit.encode()
        ),
        metadata=AUTH,
        timeout=deadline,
    )


def refs_on_disk(node: ReplicaNode, path: str) -> dict[str, str]:
    """ref name -> object id, as git reads the node's copy (empty when it has none)."""
    repo = node.repo(path)
    if not repo.exists():
        return {}
    out = git(["for-each-ref", "--format=%(refname) %(objectname)"], cwd=repo, check=False)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


@dataclass
class ReplicatedCluster:
    """Three node processes, a Redis of the test's own, and router processes."""

    root: Path
    redis: EmbeddedRedis
    nodes: dict[str, ReplicaNode]
    bundle: Bundle
    routers: list[ServerProcess] = field(default_factory=list)
    _client: Any = None
    _store: RepositoryStore | None = None
    _clients: NodeClients | None = None

    # ------------------------------------------------------------ Redis

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.redis.url)
        return self._client

    @property
    def store(self) -> RepositoryStore:
        if self._store is None:
            self._store = RepositoryStore(self.client)
        return self._store

    async def reconnect(self) -> None:
        """Drop the test's Redis client (after Redis was restarted)."""
        client, self._client, self._store = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def restart_redis(self) -> None:
        """Start Redis again on the same data directory (after it was killed or stopped)."""
        await self.redis.stop()
        self.redis = EmbeddedRedis(self.redis.data_dir)
        await self.redis.start()
        await self.reconnect()

    # ------------------------------------------------------------ routers

    def settings_mapping(self, **sections: Any) -> dict[str, Any]:
        failover = {**FAST_FAILOVER, **sections.pop("failover", {})}
        sections.setdefault("plugins", {"blocked": ["praefect.plugins.failover"]})  # replication alone
        return router_settings_mapping(
            {name: node.address for name, node in self.nodes.items()},
            node_tokens=dict.fromkeys(self.nodes, NODE_TOKEN),
            redis={"url": self.redis.url},
            failover=failover,
            **sections,
        )

    def router_process(
        self, name: str, *, env: dict[str, str] | None = None, **sections: Any
    ) -> ServerProcess:
        """A ``praefect serve`` process on the cluster's Redis (stopped on exit).

        ``sections`` are settings tables, e.g. ``replication={"claim_idle": 2}``.
        """
        config = self.root / f"{name}.toml"
        config.write_text(to_toml(self.settings_mapping(**sections)))
        process = start_process(["serve", "--config", str(config)], env=env or clean_env())
        self.routers.append(process)
        return process

    @contextlib.asynccontextmanager
    async def channel(self, router: ServerProcess) -> AsyncIterator[aio.Channel]:
        async with aio.insecure_channel(router.address) as channel:
            yield channel

    # -------------------------------------------------------------- nodes

    def kill_node(self, name: str) -> None:
        node = self.nodes[name]
        assert node.process is not None, f"{name} is not running"
        node.process.kill9()

    def restart_node(self, name: str) -> None:
        """Start the node again on its old address, over its old storage."""
        node = self.nodes[name]
        listen = node.address.removeprefix("tcp://")
        node.process = start_node({name: node.storage}, NODE_TOKEN, listen=listen)

    @property
    def node_clients(self) -> NodeClients:
        if self._clients is None:
            self._clients = NodeClients(node.endpoint() for node in self.nodes.values())
        return self._clients

    async def checksums(self, path: str) -> dict[str, str | None]:
        """CalculateChecksum of ``path`` on every node, asked directly."""
        sums = await asyncio.gather(
            *(
                self.node_clients.checksum(VS, path, node=name, deadline=30)
                for name in self.nodes
            )
        )
        return dict(zip(self.nodes, sums, strict=True))

    # -------------------------------------------------------- convergence

    async def states(self, paths: Iterable[str]) -> dict[str, RepositoryMetadata | None]:
        return {path: await self.store.get(VS, path) for path in paths}

    @staticmethod
    def behind(state: RepositoryMetadata | None) -> str | None:
        """Why the repository is not converged in Redis, or None when it is."""
        if state is None:
            return "not tracked"
        if set(state.up_to_date) != set(NAMES):
            return f"generation {state.generation}, replicas {dict(state.replica_generations)}"
        return None

    async def wait_converged(self, paths: Iterable[str], *, within: float = 30.0) -> None:
        """Wait until every replica is at the generation, then check every checksum.

        Fails with the list of repositories that differ: replicas behind in
        Redis after ``within`` seconds, or a replica whose checksum differs
        from the primary's although Redis says it is up to date.
        """
        paths = sorted(set(paths))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            states = await self.states(paths)
            lagging = {path: why for path, state in states.items() if (why := self.behind(state))}
            if not lagging:
                break
            if loop.time() > deadline:
                listing = "\n".join(f"  {path}: {why}" for path, why in sorted(lagging.items()))
                raise AssertionError(
                    f"{len(lagging)} of {len(paths)} repositories did not converge within "
                    f"{within} s:\n{listing}"
                )
            await asyncio.sleep(0.1)
        differing = {}
        for path in paths:
            state = states[path]
            assert state is not None
            sums = await self.checksums(path)
            primary_sum = sums[state.primary]
            if primary_sum is None or any(value != primary_sum for value in sums.values()):
                differing[path] = f"primary {state.primary}; checksums {sums}"
        if differing:
            listing = "\n".join(f"  {path}: {why}" for path, why in sorted(differing.items()))
            raise AssertionError(
                f"{len(differing)} of {len(paths)} repositories differ from their primary:\n{listing}"
            )

    async def close(self) -> None:
        for process in reversed(self.routers):
            await asyncio.to_thread(process.stop)
        if self._clients is not None:
            await self._clients.close()
        await self.reconnect()


@contextlib.asynccontextmanager
async def replicated_cluster(tmp_path: Path) -> AsyncIterator[ReplicatedCluster]:
    """Three nodes, an embedded Redis; routers are started by the test."""
    with short_tmp_dir("prl-") as root:
        nodes = {node.name: node for node in await start_nodes(tmp_path / "nodes", list(NAMES))}
        try:
            async with EmbeddedRedis(root / "redis") as redis:
                cluster = ReplicatedCluster(root, redis, nodes, make_bundle(tmp_path))
                try:
                    yield cluster
                finally:
                    await cluster.close()
                    # the test may have restarted it: stop the one running now
                    await cluster.redis.stop()
        finally:
            for node in nodes.values():
                await asyncio.to_thread(node.stop)


def consumers_pending(info: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """XINFO CONSUMERS -> consumer name: pending events."""
    return {str(entry["name"]): int(entry["pending"]) for entry in info}
