"""What the demo asks the cluster: through the router, of each node, and of Redis.

- through the router (as any Gitaly client would): create a project with a
  README (CreateRepository, then UserCommitFiles);
- of each node directly, with its own token: health and CalculateChecksum;
- of Redis (the router's embedded one): repository state, replication
  queues and the routers' shared view of node health.

Channels to the nodes reconnect quickly (at most a second apart), so a node
that comes back shows as up at once rather than after gRPC's usual backoff.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import grpc
import redis.asyncio as aioredis
from grpc import aio

from praefect.core.node_probe import probe_node
from praefect.core.tokens import bearer_metadata
from praefect.plugins.failover.votes import HealthVotes
from praefect.plugins.replication.embedded_redis import connect
from praefect.plugins.replication.runtime import redis_url_for
from praefect.plugins.replication.state import RepositoryMetadata, RepositoryStore
from praefect.plugins.replication.streams import QueueStatus, queue_status
from praefect.protos.gitaly import (
    operations_pb2,
    operations_pb2_grpc,
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
)
from praefect.settings import Config

__all__ = ["Checksum", "ClusterClients", "NodeHealth", "checksums_agree"]

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_README = """# {title}

Created by `praefect demo` through the router: CreateRepository, then
UserCommitFiles (the "initialize repository with a README" flow).

Every replica of this repository lives on its own storage node; the router
replicates each write to the others and tracks their generations.
"""


@dataclass(frozen=True, slots=True)
class Checksum:
    """One node's CalculateChecksum: ``value`` (40 hex), or why there is none."""

    node: str
    value: str = ""
    problem: str = ""

    def __str__(self) -> str:
        return self.value or self.problem


def checksums_agree(checksums: list[Checksum]) -> bool:
    """True when every node answered with the same real checksum."""
    values = {checksum.value for checksum in checksums}
    return (
        bool(checksums)
        and all(_HEX40.match(checksum.value) for checksum in checksums)
        and len(values) == 1
    )


@dataclass(frozen=True, slots=True)
class NodeHealth:
    node: str
    up: bool
    problem: str = ""


class ClusterClients:
    """gRPC channels and a Redis client for one cluster's settings."""

    def __init__(self, settings: Config, router_address: str, virtual_storage: str) -> None:
        self.settings = settings
        self.router_address = router_address
        self.virtual_storage = virtual_storage
        self.nodes = settings.virtual_storage(virtual_storage).nodes
        self._router: aio.Channel | None = None
        self._node_channels: dict[str, aio.Channel] = {}
        self._redis: aioredis.Redis | None = None
        self._store: RepositoryStore | None = None

    async def __aenter__(self) -> ClusterClients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        channels = [self._router, *self._node_channels.values()]
        self._router, self._node_channels = None, {}
        for channel in channels:
            if channel is not None:
                await channel.close()
        if self._redis is not None:
            redis_client, self._redis, self._store = self._redis, None, None
            await redis_client.aclose()

    # ------------------------------------------------------------ router

    @property
    def router(self) -> aio.Channel:
        if self._router is None:
            self._router = aio.insecure_channel(self.router_address, options=_CHANNEL_OPTIONS)
        return self._router

    def _router_metadata(self) -> tuple[tuple[str, str], ...]:
        return (bearer_metadata(self.settings.auth.token),)

    def _repository(self, relative_path: str) -> shared_pb2.Repository:
        return shared_pb2.Repository(storage_name=self.virtual_storage, relative_path=relative_path)

    async def create_project(self, relative_path: str, title: str, time_limit: float = 30.0) -> str:
        """CreateRepository, then UserCommitFiles adding README.md on main; the commit id.

        Raises ``grpc.aio.AioRpcError`` as the router answers.
        """
        repositories = repository_pb2_grpc.RepositoryServiceStub(self.router)
        await repositories.CreateRepository(
            repository_pb2.CreateRepositoryRequest(
                repository=self._repository(relative_path), default_branch=b"main"
            ),
            metadata=self._router_metadata(),
            timeout=time_limit,
        )
        user = shared_pb2.User(
            gl_id="user-1", name=b"Praefect Demo", email=b"demo@praefect.invalid",
            gl_username="demo", timezone="UTC",
        )
        Action = operations_pb2.UserCommitFilesActionHeader

        async def requests() -> AsyncIterator[operations_pb2.UserCommitFilesRequest]:
            yield operations_pb2.UserCommitFilesRequest(
                header=operations_pb2.UserCommitFilesRequestHeader(
                    repository=self._repository(relative_path),
                    user=user,
                    branch_name=b"main",
                    commit_message=b"Initial commit",
                    commit_author_name=b"Praefect Demo",
                    commit_author_email=b"demo@praefect.invalid",
                )
            )
            yield operations_pb2.UserCommitFilesRequest(
                action=operations_pb2.UserCommitFilesAction(
                    header=Action(action=Action.CREATE, file_path=b"README.md")
                )
            )
            yield operations_pb2.UserCommitFilesRequest(
                action=operations_pb2.UserCommitFilesAction(
                    content=_README.format(title=title).encode()
                )
            )

        operations = operations_pb2_grpc.OperationServiceStub(self.router)
        response = await operations.UserCommitFiles(
            requests(), metadata=self._router_metadata(), timeout=time_limit
        )
        problem = response.index_error or response.pre_receive_error
        if problem or not response.branch_update.commit_id:
            raise RuntimeError(f"UserCommitFiles did not commit the README: {problem or 'no commit id'}")
        return str(response.branch_update.commit_id)

    # ------------------------------------------------------------- nodes

    def _node_channel(self, name: str) -> aio.Channel:
        channel = self._node_channels.get(name)
        if channel is None:
            node = self.settings.virtual_storage(self.virtual_storage).node(name)
            channel = self._node_channels[name] = aio.insecure_channel(
                node.grpc_target, options=_CHANNEL_OPTIONS
            )
        return channel

    async def checksum(self, node: str, relative_path: str, time_limit: float = 10.0) -> Checksum:
        token = self.settings.virtual_storage(self.virtual_storage).node(node).token
        stub = repository_pb2_grpc.RepositoryServiceStub(self._node_channel(node))
        try:
            response = await stub.CalculateChecksum(
                repository_pb2.CalculateChecksumRequest(
                    repository=shared_pb2.Repository(storage_name=node, relative_path=relative_path)
                ),
                metadata=(bearer_metadata(token),),
                timeout=time_limit,
            )
        except aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return Checksum(node, problem="no replica")
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return Checksum(node, problem="unreachable")
            return Checksum(node, problem=f"{error.code().name}: {error.details()}")
        return Checksum(node, value=str(response.checksum))

    async def checksums(self, relative_path: str, time_limit: float = 10.0) -> list[Checksum]:
        """CalculateChecksum of ``relative_path`` on every node, in configuration order."""
        return list(
            await asyncio.gather(*(self.checksum(node.name, relative_path, time_limit) for node in self.nodes))
        )

    async def health(self, time_limit: float = 1.0) -> list[NodeHealth]:
        """Every node's ServerInfo and gRPC health, with its own token."""

        async def one(name: str, token: str) -> NodeHealth:
            report = await probe_node(self._node_channel(name), token, name, time_limit)
            return NodeHealth(name, report.ok, report.error)

        return list(await asyncio.gather(*(one(node.name, node.token) for node in self.nodes)))

    # ------------------------------------------------------------- Redis

    @property
    def store(self) -> RepositoryStore:
        if self._store is None:
            self._redis = connect(redis_url_for(self.settings), socket_timeout=5, timeout=5)
            self._store = RepositoryStore(self._redis)
        return self._store

    async def repository(self, relative_path: str) -> RepositoryMetadata | None:
        """What Redis records for ``relative_path``; None when it is not tracked."""
        return await self.store.get(self.virtual_storage, relative_path)

    async def repositories(self) -> list[RepositoryMetadata]:
        return await self.store.list_repositories(self.virtual_storage)

    async def routers_view(self) -> dict[str, bool]:
        """Node -> up, as the routers' health votes in Redis decide (what failover acts on)."""
        votes = HealthVotes(self.store.client, window=self.settings.failover.vote_window)
        view = await votes.view(self.virtual_storage)
        return {node.name: view[node.name].healthy if node.name in view else True for node in self.nodes}

    async def queues(self) -> list[QueueStatus]:
        """The replication queue of every node."""
        store = self.store
        return [await queue_status(store.client, self.virtual_storage, node.name) for node in self.nodes]
